package fanout

import (
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/arqonbus/arqonbus/engine"
)

// A long random run of joins, rejoins with and without filters, leaves and
// snapshots (enough to compact lists and rebuild the index) keeps the roster
// equal to a plain model: the members, their join order per loop, filtered
// members apart, and snapshots already handed out unchanged.
func TestRosterMatchesModel(t *testing.T) {
	h := NewHub(Options{AutoCreate: true})
	loops := []*engine.Loop{engine.NewDetachedLoop(), engine.NewDetachedLoop(), engine.NewDetachedLoop()}
	pool := make([]*engine.Conn, 600)
	for i := range pool {
		pool[i] = loops[i%len(loops)].NewConn("")
	}
	rng := rand.New(rand.NewPCG(1, 2))
	type member struct {
		c        *engine.Conn
		filtered bool
	}
	var model []member // join order
	index := func(c *engine.Conn) int {
		return slices.IndexFunc(model, func(m member) bool { return m.c == c })
	}
	var ch *Channel
	type held struct {
		set  *memberSet
		want []*engine.Conn
	}
	var kept []held
	flatten := func(set *memberSet) []*engine.Conn {
		var out []*engine.Conn
		for _, g := range set.groups {
			out = append(out, g.conns...)
		}
		for _, f := range set.filtered {
			out = append(out, f.conn)
		}
		return out
	}
	for step := range 20000 {
		c := pool[rng.IntN(len(pool))]
		switch op := rng.IntN(10); {
		case op < 5 || ch == nil: // join, sometimes with a filter
			var f Filter
			if rng.IntN(4) == 0 {
				f = NewFilter(map[string]string{"k": "1"})
			}
			var joined bool
			ch, joined, _ = h.Join(general, c, f, nil)
			i := index(c)
			if joined != (i < 0) {
				t.Fatalf("step %d: joined %v, member before %v", step, joined, i >= 0)
			}
			if i >= 0 {
				model = slices.Delete(model, i, i+1)
			}
			model = append(model, member{c, f != nil})
		case op < 9: // leave
			i := index(c)
			if left := h.Leave(ch, c); left != (i >= 0) {
				t.Fatalf("step %d: left %v, member %v", step, left, i >= 0)
			}
			if i >= 0 {
				model = slices.Delete(model, i, i+1)
			}
		default: // a publish's snapshot, checked now and again later
			set := ch.snapshot()
			kept = append(kept, held{set, slices.Clone(flatten(set))})
		}
		if step%997 == 0 || step == 19999 {
			var want []*engine.Conn
			for _, l := range loops {
				for _, m := range model {
					if !m.filtered && m.c.Loop() == l {
						want = append(want, m.c)
					}
				}
			}
			// Groups come in the order their loops first had members: compare per loop.
			got := flatten(ch.snapshot())
			var gotPlain, gotFiltered []*engine.Conn
			for _, l := range loops {
				for _, c := range got[:len(got)-len(ch.snapshot().filtered)] {
					if c.Loop() == l {
						gotPlain = append(gotPlain, c)
					}
				}
			}
			gotFiltered = got[len(got)-len(ch.snapshot().filtered):]
			var wantFiltered []*engine.Conn
			for _, m := range model {
				if m.filtered {
					wantFiltered = append(wantFiltered, m.c)
				}
			}
			if !slices.Equal(gotPlain, want) || !slices.Equal(gotFiltered, wantFiltered) || ch.Members() != len(model) {
				t.Fatalf("step %d: roster differs from the model (%d members, model %d)", step, ch.Members(), len(model))
			}
			for _, m := range model[:min(len(model), 20)] {
				if !ch.IsMember(m.c) {
					t.Fatalf("step %d: IsMember false for a member", step)
				}
			}
		}
	}
	for i, k := range kept {
		if !slices.Equal(flatten(k.set), k.want) {
			t.Fatalf("snapshot %d changed after it was handed out", i)
		}
	}
	// Everyone leaves: the lists and the index give their memory back.
	for _, m := range model {
		h.Leave(ch, m.c)
	}
	r := &ch.roster
	for _, l := range append(r.groups, &r.filtered) {
		if l.conns != nil || l.live != 0 {
			t.Fatalf("an empty list keeps %d slots", len(l.conns))
		}
	}
	if ch.Members() != 0 || len(ch.snapshot().groups) != 0 {
		t.Fatal("members left")
	}
}

// A handler that leaves stops handling; one that rejoins keeps handling.
func TestHandlerFlagFollowsMembership(t *testing.T) {
	h := NewHub(Options{AutoCreate: true})
	l := engine.NewDetachedLoop()
	a, b := l.NewConn(""), l.NewConn("")
	ch, _, _ := h.Join(general, a, nil, nil)
	h.Join(general, b, nil, nil)
	ch.SetHandles(a, []string{"x"})
	ch.SetHandles(b, []string{"x"})
	h.Join(general, a, NewFilter(map[string]string{"k": "1"}), nil) // rejoin with a filter
	if ch.Handlers()["x"] != 2 {
		t.Fatal("a rejoin dropped the handler")
	}
	h.Leave(ch, a)
	if ch.Handlers()["x"] != 1 || ch.PickHandler("x") != b {
		t.Fatalf("handlers after leave: %v", ch.Handlers())
	}
	ch.SetHandles(b, nil)
	h.Leave(ch, b)
	if len(ch.Handlers()) != 0 {
		t.Fatal("handlers left over")
	}
}

// Storm-sized membership: joins and leaves of 20,000 members rebuild the
// index once it is far below its peak.
func TestRosterIndexShrinks(t *testing.T) {
	_, ch, _ := bigChannel(t, 20000)
	var all []*engine.Conn
	ch.ForEachMember(func(c *engine.Conn) { all = append(all, c) })
	for _, c := range all[:19990] {
		ch.remove(c)
	}
	if r := &ch.roster; r.peak > 2500 || ch.Members() != 10 {
		t.Fatalf("index peak %d after the storm left (members %d)", r.peak, ch.Members())
	}
	for _, l := range ch.roster.groups {
		if cap(l.conns) > 100 {
			t.Fatalf("a list of %d keeps %d slots", l.live, cap(l.conns))
		}
	}
}
