package e2e

// Commands that collide or ask for a lot (issue 9): two services that use
// the same command id, one handler.

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/arqonbus/arqonbus/client"
	"github.com/arqonbus/arqonbus/internal/redistest"
)

// quickstartCommand is the quickstart's Scenario 4 command (id arq_cmd_001) from from.
func quickstartCommand(room, channel, from string) []byte {
	return []byte(`{"version":"1.0","id":"arq_cmd_001","type":"command","room":"` + room + `","channel":"` + channel +
		`","from":"` + from + `","timestamp":"2025-01-01T12:00:00.000Z","payload":{"command":"status","parameters":{"check":"connection_pool"}}}`)
}

// slowAnswers makes h answer every command it receives after delay, with the
// command's sender and id in the result, and records what it received.
func slowAnswers(t *testing.T, h *handler, delay time.Duration) (received func() []client.Envelope) {
	t.Helper()
	var mu sync.Mutex
	var got []client.Envelope
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() { stop(); <-done })
	go func() {
		defer close(done)
		for {
			select {
			case <-ctx.Done():
				return
			case cmd := <-h.commands:
				mu.Lock()
				got = append(got, cmd)
				mu.Unlock()
				select {
				case <-time.After(delay):
				case <-ctx.Done():
					return
				}
				_ = h.reply(cmd, map[string]any{"requester": cmd.From, "id": cmd.ID})
			}
		}
	}()
	return func() []client.Envelope {
		mu.Lock()
		defer mu.Unlock()
		return append([]client.Envelope(nil), got...)
	}
}

// sameIDRequesters has every requester send the quickstart's arq_cmd_001 to
// room:channel at once and checks that each gets its own answer, and that the
// handler saw each command exactly as sent.
func sameIDRequesters(t *testing.T, reqs []*client.Conn, room, channel string, received func() []client.Envelope) {
	t.Helper()
	ctx := testCtx(t, 20*time.Second)
	sent := map[string][]byte{}
	for _, r := range reqs {
		cmd := quickstartCommand(room, channel, r.ClientID())
		sent[r.ClientID()] = cmd
		if err := r.SendRaw(cmd); err != nil {
			t.Fatal(err)
		}
	}
	for _, r := range reqs {
		env, err := r.Expect(ctx, func(e client.Envelope) bool {
			return (e.Type == "error" || e.Type == "command_response") && e.RequestID() == "arq_cmd_001"
		})
		if err != nil {
			t.Errorf("%s: no answer to arq_cmd_001: %v", r.ClientID(), err)
			continue
		}
		var p struct {
			Result struct {
				Requester string `json:"requester"`
				ID        string `json:"id"`
			} `json:"result"`
		}
		_ = json.Unmarshal(env.Payload, &p)
		if env.Type != "command_response" || p.Result.Requester != r.ClientID() || p.Result.ID != "arq_cmd_001" {
			t.Errorf("%s: got %s, want the handler's answer to its own arq_cmd_001", r.ClientID(), env.Raw)
		}
	}
	got := received()
	if len(got) != len(reqs) {
		t.Errorf("handler received %d commands, want %d", len(got), len(reqs))
	}
	for _, cmd := range got {
		if want := sent[cmd.From]; want == nil || !jsonEqual(cmd.Raw, want) {
			t.Errorf("handler got %s, want a command exactly as sent", cmd.Raw)
		}
	}
	for _, r := range reqs {
		expectNothing(t, r, 200*time.Millisecond, "requester after its answer")
	}
}

// TestCommandIDsPerRequester: two services both send the quickstart's
// arq_cmd_001 to one handler (which takes 300 ms to answer): both get their
// own answer, and the handler sees both commands as sent. The same requester
// reusing an id still in flight gets CONFLICT.
func TestCommandIDsPerRequester(t *testing.T) {
	s := startServer(t, "ARQONBUS_COMMAND_TIMEOUT=5s")
	room, ch := "services", uniqueName("database")
	h := startHandler(t, s, uniqueName("db_service"), room, ch, []string{"status"}, false)
	received := slowAnswers(t, h, 300*time.Millisecond)
	api := dial(t, s, client.WithClientID(uniqueName("api_service")), client.WithParam("client_type", "service"))
	web := dial(t, s, client.WithClientID(uniqueName("web_service")), client.WithParam("client_type", "service"))
	sameIDRequesters(t, []*client.Conn{api, web}, room, ch, received)

	// One requester, one id, twice while the first is in flight: the second is refused.
	cmd := quickstartCommand(room, ch, api.ClientID())
	_ = api.SendRaw(cmd)
	_ = api.SendRaw(cmd)
	expectErrorFor(t, api, 3*time.Second, "arq_cmd_001", "CONFLICT", "id")
	ctx := testCtx(t, 5*time.Second)
	if env, err := api.Expect(ctx, func(e client.Envelope) bool { return e.RequestID() == "arq_cmd_001" }); err != nil || env.Type != "command_response" {
		t.Errorf("the first arq_cmd_001: got %s (%v), want its answer", env.Raw, err)
	}
	busServes(t, s, nil)
}

// TestClusterCommandIDsPerRequester: the same on a bus of two nodes, with
// the handler on node 1 and requesters on both nodes (two on node 0, so that
// node 0 forwards two arq_cmd_001 to the same remote handler).
func TestClusterCommandIDsPerRequester(t *testing.T) {
	r := redistest.Run(t)
	nodes := startNodes(t, r.URL(), 2, "ARQONBUS_COMMAND_TIMEOUT=5s")
	room, ch := "services", uniqueName("database")
	h := startHandler(t, nodes[1], uniqueName("db_service"), room, ch, []string{"status"}, false)
	received := slowAnswers(t, h, 300*time.Millisecond)
	var reqs []*client.Conn
	for _, n := range []int{0, 0, 1} {
		reqs = append(reqs, dial(t, nodes[n], client.WithClientID(uniqueName("svc")), client.WithParam("client_type", "service")))
	}
	waitHandlers(t, reqs[0], room, ch, "status", 1)
	sameIDRequesters(t, reqs, room, ch, received)
}

// createChannels makes room:name for every name through admin c, many commands in flight at once.
func createChannels(t *testing.T, c *client.Conn, room string, names []string) {
	t.Helper()
	ctx := testCtx(t, 60*time.Second)
	const window = 200
	for start := 0; start < len(names); start += window {
		batch := names[start:min(start+window, len(names))]
		ids := map[string]bool{}
		for _, name := range batch {
			id, err := sendCommand(c, room, name, "create_channel", nil)
			if err != nil {
				t.Fatal(err)
			}
			ids[id] = true
		}
		for len(ids) > 0 {
			env, err := c.Next(ctx)
			if err != nil {
				t.Fatalf("creating channels: %v", err)
			}
			if !ids[env.RequestID()] {
				continue
			}
			if env.Type != "command_response" {
				t.Fatalf("create_channel: %s", env.Raw)
			}
			delete(ids, env.RequestID())
		}
	}
}

// listAll pages through room's channels with list_channels (limit per page)
// and returns every name listed, in order.
func listAll(t *testing.T, c *client.Conn, room string, limit int) []string {
	t.Helper()
	var names []string
	after := ""
	for pages := 0; pages < 10000; pages++ {
		params := map[string]any{"limit": limit}
		if after != "" {
			params["after"] = after
		}
		r := cmdOK(t, c, room, "general", "list_channels", params)
		list := r.list("channels")
		if len(list) > limit {
			t.Fatalf("list_channels: a page of %d with limit %d", len(list), limit)
		}
		for _, ch := range list {
			names = append(names, ch.str("channel"))
		}
		if after = r.str("next"); after == "" {
			return names
		}
	}
	t.Fatal("list_channels paging does not end")
	return nil
}

// checkListed checks that got holds each of want once, in order.
func checkListed(t *testing.T, got, want []string) {
	t.Helper()
	seen := map[string]int{}
	for i, n := range got {
		seen[n]++
		if i > 0 && got[i-1] >= n {
			t.Errorf("list_channels out of order: %q then %q", got[i-1], n)
			break
		}
	}
	for _, n := range want {
		if seen[n] != 1 {
			t.Errorf("channel %s listed %d times, want once", n, seen[n])
			return
		}
	}
	if len(got) != len(want) {
		t.Errorf("listed %d channels, want %d", len(got), len(want))
	}
}

// TestManyChannelsStatusAndPaging: with 2,500 channels in a room, status
// stays small (the 100 channels with the most members, and the total) and
// list_channels pages through every channel exactly once.
func TestManyChannelsStatusAndPaging(t *testing.T) {
	s := startServer(t, "ARQONBUS_COMMAND_RATE=0", "ARQONBUS_ADMIN_TOKEN=many_secret")
	admin := dial(t, s, client.WithClientID(uniqueName("admin")), client.WithParam("admin_token", "many_secret"))
	room := uniqueName("many")
	names := make([]string, 2500)
	for i := range names {
		names[i] = fmt.Sprintf("ch%04d", i)
	}
	createChannels(t, admin, room, names)
	// A channel with members comes first in status.
	member := dial(t, s, client.WithClientID(uniqueName("member")))
	cmdOK(t, member, room, "ch1234", "join_channel", nil)

	ctx := testCtx(t, 10*time.Second)
	env, err := admin.Command(ctx, "science", "general", "status", nil)
	if err != nil {
		t.Fatal(err)
	}
	var st struct {
		Result struct {
			ChannelsTotal int `json:"channels_total"`
			Channels      []struct {
				Room, Channel string
				Members       int
			} `json:"channels"`
		} `json:"result"`
	}
	_ = json.Unmarshal(env.Payload, &st)
	t.Logf("status with %d channels: %d bytes, %d channels listed", st.Result.ChannelsTotal, len(env.Raw), len(st.Result.Channels))
	if st.Result.ChannelsTotal < 2500 || len(st.Result.Channels) != 100 || len(env.Raw) > 32<<10 {
		t.Errorf("status: channels_total %d, %d channels listed, %d bytes: want at least 2500, 100 and a bounded answer",
			st.Result.ChannelsTotal, len(st.Result.Channels), len(env.Raw))
	}
	if len(st.Result.Channels) > 0 && (st.Result.Channels[0].Members == 0) {
		t.Errorf("status lists %+v first, want a channel with members", st.Result.Channels[0])
	}

	for _, limit := range []int{100, 1000} {
		checkListed(t, listAll(t, admin, room, limit), names)
	}
	r := cmdOK(t, admin, room, "general", "list_channels", nil)
	if n := len(r.list("channels")); n != 100 || r.str("next") != "ch0099" {
		t.Errorf("list_channels without limit: %d channels, next %q; want 100 and ch0099", n, r.str("next"))
	}
	cmdErr(t, admin, room, "general", "list_channels", map[string]any{"limit": 0}, "VALIDATION_ERROR", "payload.parameters.limit")
	busServes(t, s, nil)
}

// TestClusterManyChannelsPaging: list_channels pages through a room's
// channels across two nodes: those created everywhere and those joined on
// one node only, each once.
func TestClusterManyChannelsPaging(t *testing.T) {
	r := redistest.Run(t)
	nodes := startNodes(t, r.URL(), 2, "ARQONBUS_COMMAND_RATE=0", "ARQONBUS_ADMIN_TOKEN=many_secret")
	admin := dial(t, nodes[0], client.WithClientID(uniqueName("admin")), client.WithParam("admin_token", "many_secret"))
	room := uniqueName("many")
	var names []string
	for i := range 1200 {
		names = append(names, fmt.Sprintf("ch%04d", i))
	}
	createChannels(t, admin, room, names)
	// Channels that exist on node 1 only, made by joining them there.
	joiner := dial(t, nodes[1], client.WithClientID(uniqueName("joiner")))
	for i := range 60 {
		name := fmt.Sprintf("only1_%02d", i)
		cmdOK(t, joiner, room, name, "join_channel", nil)
		names = append(names, name)
	}
	slices.Sort(names)
	for _, limit := range []int{100, 1000} {
		checkListed(t, listAll(t, admin, room, limit), names)
	}
}
