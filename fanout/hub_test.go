package fanout

import (
	"errors"
	"sync"
	"testing"

	"github.com/arqonbus/arqonbus/engine"
)

var general = Key{Room: "science", Channel: "general"}

func TestBootstrapAndAutoCreate(t *testing.T) {
	h := NewHub(Options{Bootstrap: []Key{general}, AutoCreate: true})
	if ch := h.Channel(general); ch == nil || !ch.Bootstrap {
		t.Fatal("bootstrap channel missing")
	}
	c := &engine.Conn{}
	k := Key{Room: "research", Channel: "coordination"}
	ch, joined, err := h.Join(k, c, nil, nil)
	if err != nil || !joined || ch.Members() != 1 || h.ChannelCount() != 2 {
		t.Fatalf("join: %v %v %d", joined, err, h.ChannelCount())
	}
	if _, joined, _ = h.Join(k, c, nil, nil); joined {
		t.Fatal("second join counted twice")
	}
	if err := h.Delete(general); !errors.Is(err, ErrBootstrap) {
		t.Fatalf("bootstrap channel delete: %v", err)
	}
	if err := h.Delete(k); !errors.Is(err, ErrHasMembers) {
		t.Fatalf("delete with members: %v", err)
	}
	h.Leave(ch, c)
	if err := h.Delete(k); err != nil || h.Channel(k) != nil {
		t.Fatalf("delete: %v", err)
	}
	if err := h.Delete(k); !errors.Is(err, ErrChannelNotFound) {
		t.Fatalf("delete twice: %v", err)
	}

	strict := NewHub(Options{AutoCreate: false})
	if _, _, err := strict.Join(k, c, nil, nil); !errors.Is(err, ErrChannelNotFound) {
		t.Fatalf("no auto-create: %v", err)
	}
	if _, err := strict.Create(k); err != nil {
		t.Fatal(err)
	}
	if _, err := strict.Create(k); !errors.Is(err, ErrChannelExists) {
		t.Fatalf("create twice: %v", err)
	}
}

func TestMembershipSnapshotsStayIntact(t *testing.T) {
	h := NewHub(Options{Bootstrap: []Key{general}})
	ch := h.Channel(general)
	a, b, c := &engine.Conn{}, &engine.Conn{}, &engine.Conn{}
	for _, m := range []*engine.Conn{a, b, c} {
		h.Join(general, m, nil, nil)
	}
	before := ch.snapshot()
	h.Leave(ch, b)
	if before.count != 3 || len(before.groups[0].conns) != 3 || before.groups[0].conns[1] != b {
		t.Fatal("a leave changed an existing snapshot")
	}
	if ch.Members() != 2 || ch.IsMember(b) || !ch.IsMember(a) || !ch.IsMember(c) {
		t.Fatal("leave went wrong")
	}
	if h.Leave(ch, b) {
		t.Fatal("left twice")
	}
	var seen []*engine.Conn
	ch.ForEachMember(func(m *engine.Conn) { seen = append(seen, m) })
	if len(seen) != 2 || seen[0] != a || seen[1] != c {
		t.Fatal("members out of join order")
	}
}

func TestClientRegistry(t *testing.T) {
	h := NewHub(Options{})
	a, b := &engine.Conn{}, &engine.Conn{}
	if err := h.Register("agent", a); err != nil {
		t.Fatal(err)
	}
	if err := h.Register("agent", b); !errors.Is(err, ErrClientIDTaken) {
		t.Fatalf("duplicate: %v", err)
	}
	h.Unregister("agent", b) // not the holder: no effect
	if h.Client("agent") != a || h.ClientCount() != 1 {
		t.Fatal("unregister by a non-holder took effect")
	}
	if old := h.Replace("agent", b); old != a || h.Client("agent") != b || h.ClientCount() != 1 {
		t.Fatal("replace")
	}
	h.Unregister("agent", b)
	if h.Client("agent") != nil || h.ClientCount() != 0 {
		t.Fatal("unregister")
	}
}

// Joins and leaves from many goroutines while readers take snapshots: run
// with -race.
func TestConcurrentMembership(t *testing.T) {
	h := NewHub(Options{AutoCreate: true})
	keys := []Key{{"r", "a"}, {"r", "b"}, {"s", "a"}}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conns := make([]*engine.Conn, 50)
			for i := range conns {
				conns[i] = &engine.Conn{}
				ch, _, _ := h.Join(keys[(g+i)%len(keys)], conns[i], nil, nil)
				_ = ch.Members()
			}
			for i, c := range conns {
				if i%2 == 0 {
					h.Leave(h.Channel(keys[(g+i)%len(keys)]), c)
				}
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for range 200 {
			for _, ch := range h.Channels() {
				n := 0
				ch.ForEachMember(func(*engine.Conn) { n++ })
				_ = n
			}
		}
	}()
	wg.Wait()
	total := 0
	for _, ch := range h.Channels() {
		total += ch.Members()
	}
	if total != 8*25 {
		t.Fatalf("members %d, want %d", total, 8*25)
	}
}

func BenchmarkChannelLookup(b *testing.B) {
	h := NewHub(Options{AutoCreate: true})
	for i := range 10000 {
		h.Create(Key{Room: "room", Channel: "ch" + string(rune('a'+i%26)) + string(rune('a'+i/26%26)) + string(rune('a'+i/676))})
	}
	b.ReportAllocs()
	for b.Loop() {
		if h.Channel(general) != nil {
			b.Fatal("found")
		}
	}
}
