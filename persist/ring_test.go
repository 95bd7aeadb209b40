package persist

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"
)

func entryAt(ms, seq uint64) Entry {
	return Entry{Position: Position{ms, seq}, Data: fmt.Appendf(nil, `{"n":"%d-%d"}`, ms, seq)}
}

func positions(es []Entry) []string {
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = e.Position.String()
		if want := fmt.Sprintf(`{"n":"%s"}`, out[i]); string(e.Data) != want {
			out[i] += "(bad data " + string(e.Data) + ")"
		}
	}
	return out
}

func TestRingRange(t *testing.T) {
	// Ring of 5 fed 1000-0, 1000-1, 1001-0, ..., 1004-1 (10 entries): holds 1002-0 .. 1004-1.
	r := NewRing(5)
	for ms := uint64(1000); ms < 1005; ms++ {
		r.Append(entryAt(ms, 0))
		r.Append(entryAt(ms, 1))
	}
	pos := func(ms, seq uint64) Bound { return AtPosition(Position{ms, seq}) }
	at := func(ms int64) Bound { return AtTime(time.UnixMilli(ms)) }
	all := []string{"1002-1", "1003-0", "1003-1", "1004-0", "1004-1"}
	tests := []struct {
		name string
		q    Query
		want []string
	}{
		{"everything after wrap-around", Query{}, all},
		{"newest limit", Query{Limit: 2}, []string{"1004-0", "1004-1"}},
		{"since is exclusive", Query{Since: pos(1003, 0)}, []string{"1003-1", "1004-0", "1004-1"}},
		{"since takes the oldest after it", Query{Since: pos(1002, 1), Limit: 2}, []string{"1003-0", "1003-1"}},
		{"since before the ring", Query{Since: pos(1, 0), Limit: 2}, []string{"1002-1", "1003-0"}},
		{"since at the newest", Query{Since: pos(1004, 1)}, nil},
		{"since between positions", Query{Since: pos(1003, 7)}, []string{"1004-0", "1004-1"}},
		{"until is inclusive", Query{Until: pos(1003, 1)}, []string{"1002-1", "1003-0", "1003-1"}},
		{"until with newest limit", Query{Until: pos(1003, 1), Limit: 2}, []string{"1003-0", "1003-1"}},
		{"since and until", Query{Since: pos(1002, 1), Until: pos(1004, 0)}, []string{"1003-0", "1003-1", "1004-0"}},
		{"since after until", Query{Since: pos(1004, 0), Until: pos(1003, 0)}, nil},
		{"since time includes its millisecond", Query{Since: at(1003)}, []string{"1003-0", "1003-1", "1004-0", "1004-1"}},
		{"until time includes its millisecond", Query{Until: at(1003)}, []string{"1002-1", "1003-0", "1003-1"}},
		{"time window", Query{Since: at(1003), Until: at(1003)}, []string{"1003-0", "1003-1"}},
		{"time with sub-millisecond part", Query{Since: AtTime(time.UnixMilli(1003).Add(400 * time.Microsecond))}, []string{"1003-0", "1003-1", "1004-0", "1004-1"}},
		{"time before 1970", Query{Since: AtTime(time.Date(1960, 1, 1, 0, 0, 0, 0, time.UTC)), Limit: 1}, []string{"1002-1"}},
		{"limit above max is clamped", Query{Limit: 5000}, all},
		{"negative limit is the default", Query{Limit: -1}, all},
	}
	for _, tt := range tests {
		got := positions(r.Range(tt.q))
		if len(got) == 0 {
			got = nil
		}
		if !slices.Equal(got, tt.want) {
			t.Errorf("%s: Range(%s) = %v; want %v", tt.name, tt.q, got, tt.want)
		}
	}
	if p, ok := r.Oldest(); !ok || p != (Position{1002, 1}) {
		t.Errorf("Oldest = %v, %v", p, ok)
	}
	if p, ok := r.Last(); !ok || p != (Position{1004, 1}) {
		t.Errorf("Last = %v, %v", p, ok)
	}
	if r.Len() != 5 {
		t.Errorf("Len = %d", r.Len())
	}
}

func TestRingLimits(t *testing.T) {
	tests := []struct {
		name      string
		capacity  int
		appends   int
		q         Query
		wantLen   int
		wantFirst uint64 // ms of the first entry returned
	}{
		{"default limit is 50, newest", 2000, 2000, Query{}, 50, 1950},
		{"max limit 1000, newest", 2000, 2000, Query{Limit: 1000}, 1000, 1000},
		{"max limit 1000, oldest after since", 2000, 2000, Query{Since: AtPosition(Position{10, 0}), Limit: 1001}, 1000, 11},
		{"partly filled ring", 100, 7, Query{}, 7, 0},
		{"growth across several doublings", 300, 299, Query{Limit: 1000}, 299, 0},
		{"capacity 0 keeps nothing", 0, 10, Query{}, 0, 0},
		{"capacity 1", 1, 10, Query{}, 1, 9},
	}
	for _, tt := range tests {
		r := NewRing(tt.capacity)
		for i := range tt.appends {
			r.Append(entryAt(uint64(i), 0))
		}
		got := r.Range(tt.q)
		if len(got) != tt.wantLen {
			t.Errorf("%s: len = %d; want %d", tt.name, len(got), tt.wantLen)
			continue
		}
		for i, e := range got {
			if e.Position.Ms != tt.wantFirst+uint64(i) {
				t.Errorf("%s: entry %d = %v; want ms %d", tt.name, i, e.Position, tt.wantFirst+uint64(i))
				break
			}
		}
	}
	if _, ok := NewRing(3).Oldest(); ok {
		t.Error("empty ring has an oldest position")
	}
	if _, ok := NewRing(3).Last(); ok {
		t.Error("empty ring has a last position")
	}
}

func TestMemoryStore(t *testing.T) {
	ctx := context.Background()
	m := NewMemory(3)
	var store Store = m
	var acked int
	for i := range 5 {
		store.Append("lobby:chat", entryAt(uint64(100+i), 0), func(err error) {
			if err != nil {
				t.Errorf("done(%v)", err)
			}
			acked++
		})
	}
	store.Append("lobby:other", entryAt(7, 0), nil)
	if acked != 5 {
		t.Fatalf("done called %d times, want 5 synchronously", acked)
	}
	got, err := store.Range(ctx, "lobby:chat", Query{})
	if err != nil || !slices.Equal(positions(got), []string{"102-0", "103-0", "104-0"}) {
		t.Fatalf("Range = %v, %v", positions(got), err)
	}
	if got, _ := store.Range(ctx, "nobody:here", Query{}); len(got) != 0 {
		t.Fatalf("unknown channel has history %v", got)
	}
	if p, ok, err := store.Last(ctx, "lobby:other"); err != nil || !ok || p != (Position{7, 0}) {
		t.Fatalf("Last = %v %v %v", p, ok, err)
	}
	if _, ok, _ := store.Last(ctx, "nobody:here"); ok {
		t.Fatal("Last of unknown channel")
	}
	store.SaveChannel("a:b", time.Now(), nil)
	if chans, err := store.LoadChannels(ctx); err != nil || len(chans) != 0 {
		t.Fatalf("LoadChannels = %v, %v", chans, err)
	}
	h := store.Health()
	if h.Mode != ModeMemory || h.Status != StatusOK || h.Written != 6 {
		t.Fatalf("Health = %+v", h)
	}
	if err := store.Close(ctx); err != nil {
		t.Fatal(err)
	}
}

func BenchmarkRingAppend(b *testing.B) {
	r := NewRing(500)
	data := []byte(`{"type":"event","room":"lobby","channel":"chat","payload":{"text":"hello"}}`)
	var c Clock
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		r.Append(Entry{Position: c.Next(now), Data: data})
	}
}

func TestRecentCompleteness(t *testing.T) {
	since := func(ms uint64) Bound { return AtPosition(Position{ms, 0}) }
	type check struct {
		q          Query
		want       []string
		memory     bool // complete in the memory store (the ring is all the history there is)
		redisStore bool // complete in the Redis store (the ring starts at this process's first append)
	}
	tests := []struct {
		name    string
		appends int // entries at ms 1..appends into a ring of 5
		checks  []check
	}{
		{"no history yet", 0, []check{
			{Query{Since: since(3)}, nil, true, false},
			{Query{}, nil, true, false},
		}},
		{"ring not full", 3, []check{
			{Query{Since: since(1)}, []string{"2-0", "3-0"}, true, true},
			{Query{Since: AtPosition(Position{0, 5})}, []string{"1-0", "2-0", "3-0"}, true, false},
			{Query{}, []string{"1-0", "2-0", "3-0"}, true, false},
			{Query{Since: since(3)}, nil, true, true},
		}},
		{"ring wrapped", 10, []check{ // holds 6..10, lost 1..5
			{Query{Since: since(5)}, []string{"6-0", "7-0", "8-0", "9-0", "10-0"}, true, false},
			{Query{Since: since(4)}, []string{"6-0", "7-0", "8-0", "9-0", "10-0"}, false, false},
			{Query{Since: since(6)}, []string{"7-0", "8-0", "9-0", "10-0"}, true, true},
			{Query{Since: AtTime(time.UnixMilli(6))}, []string{"6-0", "7-0", "8-0", "9-0", "10-0"}, true, true},
			{Query{Since: since(7), Limit: 2}, []string{"8-0", "9-0"}, false, false},
			{Query{Since: since(7), Limit: 3}, []string{"8-0", "9-0", "10-0"}, true, true},
			{Query{Limit: 2}, []string{"9-0", "10-0"}, true, true},
			{Query{}, []string{"6-0", "7-0", "8-0", "9-0", "10-0"}, false, false},
		}},
	}
	for _, tt := range tests {
		m := NewMemory(5)
		for i := 1; i <= tt.appends; i++ {
			m.Append("a:b", entryAt(uint64(i), 0), nil)
		}
		for _, c := range tt.checks {
			got, complete := m.Recent("a:b", c.q)
			if g := positions(got); !slices.Equal(g, c.want) && len(g)+len(c.want) > 0 {
				t.Errorf("%s: Recent(%s) = %v; want %v", tt.name, c.q, g, c.want)
			}
			if complete != c.memory {
				t.Errorf("%s: memory Recent(%s) complete = %v; want %v", tt.name, c.q, complete, c.memory)
			}
			_, complete = recent(m.channels.get("a:b"), c.q, false)
			if complete != c.redisStore {
				t.Errorf("%s: redis-store Recent(%s) complete = %v; want %v", tt.name, c.q, complete, c.redisStore)
			}
		}
	}
	if _, complete := NewMemory(0).Recent("x:y", Query{}); !complete {
		t.Error("a channel without history is complete in memory")
	}
	m := NewMemory(0)
	m.Append("x:y", entryAt(1, 0), nil)
	if _, complete := m.Recent("x:y", Query{}); complete {
		t.Error("a ring of capacity 0 keeps nothing: not complete")
	}
}
