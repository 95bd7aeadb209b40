package fanout

import (
	"testing"

	"github.com/arqonbus/arqonbus/engine"
)

type attrs map[string]string

func (a attrs) Attr(k string) (string, bool) { v, ok := a[k]; return v, ok }

func TestFilterMatch(t *testing.T) {
	f := NewFilter(map[string]string{"personality": `"analytical"`, "priority": `"high"`})
	cases := []struct {
		a    attrs
		want bool
	}{
		{attrs{"personality": `"analytical"`, "priority": `"high"`, "x": "1"}, true},
		{attrs{"personality": `"analytical"`}, false},
		{attrs{"personality": `"creative"`, "priority": `"high"`}, false},
		{attrs{}, false},
	}
	for _, c := range cases {
		if got := f.Match(c.a); got != c.want {
			t.Errorf("Match(%v) = %v", c.a, got)
		}
	}
	if NewFilter(nil) != nil || !Filter(nil).Match(attrs{}) {
		t.Error("an empty filter matches everything")
	}
}

func TestFilteredMembersKeptApart(t *testing.T) {
	h := NewHub(Options{AutoCreate: true})
	plain, picky := &engine.Conn{}, &engine.Conn{}
	ch, _, _ := h.Join(general, plain, nil, nil)
	h.Join(general, picky, NewFilter(map[string]string{"k": "1"}), nil)
	set := ch.snapshot()
	if len(set.groups) != 1 || len(set.groups[0].conns) != 1 || len(set.filtered) != 1 || set.count != 2 {
		t.Fatalf("groups %v filtered %v", set.groups, set.filtered)
	}
	// Joining again without a filter moves the member back to the groups.
	if _, joined, _ := h.Join(general, picky, nil, nil); joined {
		t.Fatal("rejoin counted as new")
	}
	set = ch.snapshot()
	if len(set.filtered) != 0 || set.count != 2 || !ch.IsMember(picky) {
		t.Fatalf("after rejoin: %+v", set)
	}
}

func TestHandlersRoundRobin(t *testing.T) {
	h := NewHub(Options{AutoCreate: true})
	hs := []*engine.Conn{{}, {}, {}}
	var ch *Channel
	for _, c := range hs {
		ch, _, _ = h.Join(general, c, nil, nil)
		ch.SetHandles(c, []string{"status"})
	}
	counts := map[*engine.Conn]int{}
	for range 9 {
		counts[ch.PickHandler("status")]++
	}
	for _, c := range hs {
		if counts[c] != 3 {
			t.Fatalf("round robin uneven: %v", counts)
		}
	}
	h.Leave(ch, hs[1])
	for range 4 {
		if ch.PickHandler("status") == hs[1] {
			t.Fatal("a member that left still handles")
		}
	}
	if ch.PickHandler("other") != nil || ch.Handlers()["status"] != 2 {
		t.Fatal("handlers bookkeeping")
	}
}
