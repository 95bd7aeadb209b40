package commands

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/arqonbus/arqonbus/codec"
	"github.com/arqonbus/arqonbus/engine"
	"github.com/arqonbus/arqonbus/fanout"
)

func TestBest(t *testing.T) {
	less := func(a, b int) bool { return a < b }
	for _, n := range []int{0, 1, 5, 100} {
		best := NewBest(n, less)
		vals := rand.Perm(50)
		for _, v := range vals {
			best.Offer(v)
		}
		want := make([]int, min(n, 50))
		for i := range want {
			want[i] = i
		}
		if got := best.Sorted(); !slices.Equal(got, want) {
			t.Errorf("n=%d: %v, want %v", n, got, want)
		}
	}
}

// otherNode is a Remote whose other nodes are the given hubs, each asked
// through its real LocalView.
type otherNode []*Deps

// Handlers counts the other hubs' handlers of k, as a cluster's handler tables would.
func (o otherNode) Handlers(k fanout.Key) map[string]int {
	out := map[string]int{}
	for _, d := range o {
		if ch := d.Hub.Channel(k); ch != nil {
			for name, n := range ch.Handlers() {
				out[name] += n
			}
		}
	}
	return out
}

func (o otherNode) Gather(_ context.Context, kind string, k fanout.Key, arg []byte) [][]byte {
	var out [][]byte
	for _, d := range o {
		out = append(out, LocalView(d, kind, k, arg))
	}
	return out
}

type channelsPage struct {
	Room     string           `json:"room"`
	Channels []channelSummary `json:"channels"`
	Next     string           `json:"next"`
}

func listPage(t *testing.T, d *Deps, params string) channelsPage {
	t.Helper()
	cmd := listChannelsCommand()
	out, e := cmd.Run(d, nil, &Request{Env: &codec.Envelope{Room: "big", Channel: "general"}, Name: "list_channels", Params: []byte(params)})
	if e != nil {
		t.Fatalf("list_channels %s: %v", params, e)
	}
	var p channelsPage
	if err := json.Unmarshal(out, &p); err != nil {
		t.Fatal(err)
	}
	return p
}

// pageAll pages through room big with limit and returns every channel listed, in order.
func pageAll(t *testing.T, d *Deps, limit int) []channelSummary {
	t.Helper()
	var all []channelSummary
	after := ""
	for pages := 0; ; pages++ {
		if pages > 10000 {
			t.Fatal("paging does not end")
		}
		p := listPage(t, d, fmt.Sprintf(`{"limit":%d,"after":%q}`, limit, after))
		if len(p.Channels) > limit {
			t.Fatalf("a page of %d, limit %d", len(p.Channels), limit)
		}
		all = append(all, p.Channels...)
		if p.Next == "" {
			return all
		}
		if p.Next != p.Channels[len(p.Channels)-1].Channel {
			t.Fatalf("next %q is not the page's last channel", p.Next)
		}
		after = p.Next
	}
}

func hubWith(t *testing.T, names map[string]int) *Deps {
	t.Helper()
	hub := fanout.NewHub(fanout.Options{Bootstrap: []fanout.Key{{Room: "other", Channel: "general"}}})
	for name := range names {
		if _, err := hub.Create(fanout.Key{Room: "big", Channel: name}); err != nil {
			t.Fatal(err)
		}
	}
	return &Deps{Hub: hub}
}

func TestListChannelsPages(t *testing.T) {
	names := map[string]int{}
	for i := range 2500 {
		names[fmt.Sprintf("ch%04d", i)] = 1
	}
	d := hubWith(t, names)
	want := make([]string, 0, len(names))
	for n := range names {
		want = append(want, n)
	}
	slices.Sort(want)
	for _, limit := range []int{100, 1000, 5000} {
		all := pageAll(t, d, limit)
		got := make([]string, len(all))
		for i, c := range all {
			got[i] = c.Channel
		}
		if !slices.Equal(got, want) {
			t.Errorf("limit %d: paged %d channels, want each of %d once, in order", limit, len(got), len(want))
		}
	}
	if p := listPage(t, d, `{}`); len(p.Channels) != DefaultChannelsPage || p.Next != "ch0099" {
		t.Errorf("default page: %d channels, next %q", len(p.Channels), p.Next)
	}
	for _, bad := range []string{`{"limit":0}`, `{"limit":"x"}`, `{"after":"Not A Name"}`} {
		cmd := listChannelsCommand()
		if _, e := cmd.Run(d, nil, &Request{Env: &codec.Envelope{Room: "big", Channel: "general"}, Params: []byte(bad)}); e == nil || e.Code != codec.CodeValidation {
			t.Errorf("%s: %v, want VALIDATION_ERROR", bad, e)
		}
	}
}

// Three nodes with overlapping channels: paging on one lists the union once,
// in order, with members added up.
func TestListChannelsPagesACluster(t *testing.T) {
	sets := make([]map[string]int, 3)
	union := map[string]int{}
	for i := range sets {
		sets[i] = map[string]int{}
	}
	for i := range 2500 {
		name := fmt.Sprintf("c%05d", i*7%10007)
		for n := range sets {
			if (i+n)%3 != 0 || i%5 == 0 {
				sets[n][name] = 1
				union[name]++
			}
		}
	}
	var nodes []*Deps
	for _, s := range sets {
		nodes = append(nodes, hubWith(t, s))
	}
	nodes[0].Remote = otherNode(nodes[1:])
	want := make([]string, 0, len(union))
	for n := range union {
		want = append(want, n)
	}
	slices.Sort(want)
	for _, limit := range []int{100, 1000} {
		all := pageAll(t, nodes[0], limit)
		got := make([]string, len(all))
		for i, c := range all {
			got[i] = c.Channel
			if c.Members != 0 {
				t.Fatalf("%s: %d members", c.Channel, c.Members)
			}
		}
		if !slices.Equal(got, want) {
			t.Errorf("limit %d: paged %d channels, want each of %d once, in order", limit, len(got), len(want))
		}
	}
}

type member struct{ id string }

func (m member) ID() string         { return m.id }
func (m member) ClientType() string { return "web" }

// TestChannelInfoListsBoundedMembers: a channel of 1,500 members (on this node and another) lists
// MaxListedMembers of them and counts them all.
func TestChannelInfoListsBoundedMembers(t *testing.T) {
	k := fanout.Key{Room: "big", Channel: "crowd"}
	join := func(d *Deps, n int, prefix string) {
		if _, err := d.Hub.Create(k); err != nil {
			t.Fatal(err)
		}
		loop := engine.NewDetachedLoop()
		for i := range n {
			c := loop.NewConn("127.0.0.1:1")
			c.Value = member{fmt.Sprintf("%s_%d", prefix, i)}
			if _, _, err := d.Hub.Join(k, c, fanout.Filter{}, nil); err != nil {
				t.Fatal(err)
			}
		}
	}
	here, there := hubWith(t, nil), hubWith(t, nil)
	join(here, 900, "here")
	join(there, 600, "there")
	here.Remote = otherNode{there}
	out, e := channelInfoCommand().Run(here, nil, &Request{Env: &codec.Envelope{Room: "big", Channel: "crowd"}, Name: "channel_info", Params: []byte(`{}`)})
	if e != nil {
		t.Fatal(e)
	}
	var v struct {
		MemberCount int               `json:"member_count"`
		Members     []json.RawMessage `json:"members"`
		Truncated   bool              `json:"members_truncated"`
	}
	if err := json.Unmarshal(out, &v); err != nil {
		t.Fatal(err)
	}
	if v.MemberCount != 1500 || len(v.Members) != MaxListedMembers || !v.Truncated {
		t.Fatalf("member_count %d, %d listed, truncated %v: want 1500, %d, true", v.MemberCount, len(v.Members), v.Truncated, MaxListedMembers)
	}
}
