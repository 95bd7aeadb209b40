package persist

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/arqonbus/arqonbus/internal/redistest"
)

func entryOf(ms uint64, size int) Entry {
	return Entry{Position: Position{ms, 0}, Data: bytes.Repeat([]byte{'x'}, size)}
}

// A channel's ring keeps within its byte bound, oldest first, and always
// keeps its newest entry; what it drops counts as lost for replays.
func TestRingByteBound(t *testing.T) {
	r := NewRingBytes(500, 3500)
	for i := range 10 {
		r.Append(entryOf(uint64(i+1), 1000))
	}
	if r.Len() != 3 || r.Bytes() != 3*(1000+entryOverhead) {
		t.Fatalf("ring holds %d entries, %d bytes", r.Len(), r.Bytes())
	}
	if got, complete := r.rangeCovered(span{lo: Position{5, 0}, hi: maxPosition, limit: 100, fromLo: true}, true); complete || len(got) != 3 {
		t.Fatalf("replay from a dropped entry: %d entries, complete %v", len(got), complete)
	}
	r.Append(entryOf(11, 10000)) // bigger than the bound alone: kept, alone
	if r.Len() != 1 || r.Bytes() != 10000+entryOverhead {
		t.Fatalf("after a big entry: %d entries, %d bytes", r.Len(), r.Bytes())
	}
}

// All rings together keep within the total bound: the channels written
// least recently give up their oldest entries first.
func TestMemoryTotalByteBound(t *testing.T) {
	const limit = 1 << 20
	m := NewMemoryLimits(Limits{Entries: 500, ChannelBytes: 256 << 10, TotalBytes: limit})
	for i := range 400 {
		m.Append(fmt.Sprintf("room:c%d", i%40), entryOf(uint64(i+1), 16<<10), nil)
		if _, used := m.Channels(); used > limit+(16<<10)+entryOverhead {
			t.Fatalf("after %d appends the rings hold %d bytes, bound %d", i+1, used, limit)
		}
	}
	// The newest channels still hold their entries; the oldest gave theirs up.
	newest, _ := m.Recent("room:c39", Query{})
	oldest, _ := m.Recent("room:c0", Query{})
	if len(newest) == 0 || len(oldest) >= len(newest) {
		t.Fatalf("newest channel keeps %d entries, oldest %d", len(newest), len(oldest))
	}
}

// Forgetting channels empties the table (its map rebuilt once far below its
// peak) and gives their bytes back; a replay from before a forgotten channel's
// history says it is incomplete.
func TestMemoryForget(t *testing.T) {
	m := NewMemoryLimits(Limits{Entries: 500, TotalBytes: 64 << 20})
	for i := range 20000 {
		name := fmt.Sprintf("churn:c%d", i)
		m.Append(name, entryOf(uint64(i+1), 1000), nil)
		m.Forget(name)
	}
	if n, used := m.Channels(); n != 0 || used != 0 {
		t.Fatalf("after forgetting: %d channels, %d bytes", n, used)
	}
	if m.channels.peak >= tableShrinkPeak {
		t.Fatalf("table peak %d: its map was not rebuilt", m.channels.peak)
	}
	since := Position{19999, 0}.String()
	q, _ := ParseBound(since)
	if _, complete := m.Recent("churn:c19999", Query{Since: q, Limit: 10}); complete {
		t.Fatal("a replay into forgotten history says complete")
	}
	m.Append("churn:c19999", entryOf(30000, 10), nil)
	if got, complete := m.Recent("churn:c19999", Query{Since: q, Limit: 10}); complete || len(got) != 1 {
		t.Fatalf("replay after the channel came back: %d entries, complete %v", len(got), complete)
	}
	later, _ := ParseBound(Position{30000, 0}.String())
	if _, complete := m.Recent("churn:c19999", Query{Since: later, Limit: 10}); !complete {
		t.Fatal("a replay after the forgotten history says incomplete")
	}
}

// Registry writes and stream deletions of one channel land in the order
// made, behind its history: created then deleted stays deleted, the stream
// of a deleted channel is gone, and history written after a delete starts
// a new stream.
func TestRedisChannelWritesInOrder(t *testing.T) {
	r := redistest.Run(t)
	ctx := testCtx(t)
	s := newTestStore(t, RedisOptions{URL: r.URL(), Shards: 2})
	a := newAcks()
	for i := range 200 {
		name := fmt.Sprintf("reg:c%d", i)
		ch := &published{channel: name}
		s.SaveChannel(name, time.Now(), nil)
		ch.append(s, a)
		if i%4 != 0 {
			s.DeleteChannel(name, nil)
		}
		if i%8 == 1 {
			s.SaveChannel(name, time.Now(), nil) // created again
			ch.append(s, a)
		}
	}
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	s2 := newTestStore(t, RedisOptions{URL: r.URL()})
	got, err := s2.LoadChannels(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c := r.Client()
	for i := range 200 {
		name := fmt.Sprintf("reg:c%d", i)
		wantSaved := i%4 == 0 || i%8 == 1
		if _, ok := got[name]; ok != wantSaved {
			t.Errorf("%s in the registry: %v, want %v", name, ok, wantSaved)
		}
		n := len(readStream(t, c, "arqonbus:{"+name+"}:stream"))
		if want := map[bool]int{true: 1, false: 0}[wantSaved]; n != want {
			t.Errorf("%s stream holds %d entries, want %d", name, n, want)
		}
	}
}
