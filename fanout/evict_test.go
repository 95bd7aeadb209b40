package fanout

import (
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/arqonbus/arqonbus/engine"
)

// Channels made by joins go once idle and empty; bootstrap and kept ones
// stay; the hook hears each removal under the locks, before the name can be
// made again.
func TestEvictIdleChannels(t *testing.T) {
	var removed []string
	var h *Hub
	h = NewHub(Options{Bootstrap: []Key{general}, AutoCreate: true, OnRemoved: func(ch *Channel, why Removal) {
		if h.chanShard(ch.Key).mu.TryLock() || ch.mu.TryLock() {
			t.Error("OnRemoved ran without the locks")
		}
		removed = append(removed, ch.Key.String()+"/"+strconv.Itoa(int(why)))
	}})
	c := &engine.Conn{}
	busy, _, _ := h.Join(Key{"r", "busy"}, c, nil, nil)
	quiet, _, _ := h.Join(Key{"r", "quiet"}, c, nil, nil)
	h.Leave(quiet, c)
	kept, _ := h.Create(Key{"r", "kept"})
	h.Join(general, c, nil, nil)
	h.Leave(h.Channel(general), c)

	if n := h.Evict(time.Now().Add(-time.Hour)); n != 0 {
		t.Fatalf("evicted %d channels active within the hour", n)
	}
	if n := h.Evict(time.Now().Add(time.Second)); n != 1 || h.Channel(Key{"r", "quiet"}) != nil {
		t.Fatalf("evicted %d, want the quiet channel", n)
	}
	if h.Channel(Key{"r", "busy"}) != busy || h.Channel(Key{"r", "kept"}) != kept || h.Channel(general) == nil || h.ChannelCount() != 3 {
		t.Fatal("evicted a channel with members, a kept or a bootstrap channel")
	}
	if len(removed) != 1 || removed[0] != "r:quiet/"+strconv.Itoa(int(Evicted)) {
		t.Fatalf("hook heard %v", removed)
	}
	// A member that held the evicted channel joins again: a new channel.
	if ch, joined, err := h.Join(Key{"r", "quiet"}, c, nil, nil); err != nil || !joined || ch == quiet || ch.Members() != 1 {
		t.Fatal("join after eviction")
	}
	if _, ok := quiet.add(c, nil, nil); ok {
		t.Fatal("an evicted channel took a member")
	}
	h.Leave(busy, c)
	if err := h.DeleteElsewhere(Key{"r", "busy"}); err != nil || removed[1] != "r:busy/"+strconv.Itoa(int(DeletedElsewhere)) {
		t.Fatalf("delete elsewhere: %v %v", err, removed)
	}
}

// MaxChannels refuses joins and creates of new channels, not of existing
// ones nor restored ones; eviction makes room again.
func TestMaxChannels(t *testing.T) {
	h := NewHub(Options{Bootstrap: []Key{general}, AutoCreate: true, MaxChannels: 3})
	c := &engine.Conn{}
	a, _, _ := h.Join(Key{"r", "a"}, c, nil, nil)
	h.Create(Key{"r", "b"})
	var le *LimitError
	if _, _, err := h.Join(Key{"r", "c"}, c, nil, nil); !errors.As(err, &le) || le.Max != 3 || err.Error() != "channel limit reached (3)" {
		t.Fatalf("join beyond the cap: %v", err)
	}
	if _, err := h.Create(Key{"r", "c"}); !errors.As(err, &le) {
		t.Fatalf("create beyond the cap: %v", err)
	}
	if _, _, err := h.Join(Key{"r", "a"}, &engine.Conn{}, nil, nil); err != nil {
		t.Fatalf("join of an existing channel at the cap: %v", err)
	}
	if _, err := h.CreateAt(Key{"r", "restored"}, time.Now()); err != nil {
		t.Fatalf("restore at the cap: %v", err)
	}
	h.Leave(a, c)
	h.Leave(a, h.firstMember(a))
	if h.Evict(time.Now().Add(time.Second)) != 1 || h.Delete(Key{"r", "b"}) != nil || h.ChannelCount() != 2 {
		t.Fatal("eviction and delete")
	}
	if _, _, err := h.Join(Key{"r", "c"}, c, nil, nil); err != nil {
		t.Fatalf("join after eviction made room: %v", err)
	}
}

func (h *Hub) firstMember(ch *Channel) (c *engine.Conn) {
	ch.ForEachMember(func(m *engine.Conn) { c = m })
	return c
}

// A churn of unique channels leaves the shard maps small again.
func TestShardMapsShrink(t *testing.T) {
	h := NewHub(Options{AutoCreate: true})
	c := &engine.Conn{}
	for i := range 20000 {
		ch, _, _ := h.Join(Key{"churn", "c" + strconv.Itoa(i)}, c, nil, nil)
		h.Leave(ch, c)
	}
	h.Evict(time.Now().Add(time.Second))
	peak := 0
	for i := range h.chans {
		peak = max(peak, h.chans[i].peak)
	}
	if h.ChannelCount() != 0 || peak >= shrinkMinPeak {
		t.Fatalf("%d channels, largest shard peak %d after eviction", h.ChannelCount(), peak)
	}
}
