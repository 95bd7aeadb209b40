package persist

import (
	"sort"
	"sync"
)

// Entry is one history entry: its position and the envelope's JSON bytes as routed. Data is shared, never
// copied, by the stores and the slices they return: it must not be modified once appended.
type Entry struct {
	Position Position
	Data     []byte
}

// Ring is a bounded history of one channel in memory: at most a number of entries and, optionally, of
// bytes, oldest entries dropped first. It is safe for concurrent use. Entries must be appended in
// increasing position order (a Clock does that). The buffer grows by doubling up to its capacity, so an
// idle channel costs little; once full, Append allocates nothing.
type Ring struct {
	mu       sync.Mutex
	cap      int
	maxBytes int64 // 0: no byte bound
	bytes    int64 // entrySize of what the ring holds
	budget   *budget
	buf      []Entry
	head     int // index of the oldest entry
	count    int
	// lost is the newest position overwritten (or not kept, at capacity 0); hasLost says there was one.
	lost    Position
	hasLost bool
}

// entryOverhead is what an entry costs besides its data: the Entry in the buffer and the data's
// allocation rounding, roughly.
const entryOverhead = 64

func entrySize(e *Entry) int64 { return int64(len(e.Data)) + entryOverhead }

const ringInitial = 8

// NewRing returns a ring holding at most capacity entries; capacity <= 0 keeps nothing.
func NewRing(capacity int) *Ring {
	return &Ring{cap: max(capacity, 0)}
}

// Cap returns the ring's capacity.
func (r *Ring) Cap() int { return r.cap }

// NewRingBytes returns a ring holding at most capacity entries and maxBytes bytes of entries (0: no
// byte bound); the newest entry is kept whatever its size.
func NewRingBytes(capacity int, maxBytes int64) *Ring {
	return &Ring{cap: max(capacity, 0), maxBytes: max(maxBytes, 0)}
}

// Bytes returns what the ring's entries cost, by the measure of its byte bound.
func (r *Ring) Bytes() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.bytes
}

// Append adds e as the newest entry, dropping the oldest when the ring is full.
func (r *Ring) Append(e Entry) {
	r.mu.Lock()
	defer r.mu.Unlock()
	before := r.bytes
	r.appendLocked(e)
	if r.maxBytes > 0 {
		for r.count > 1 && r.bytes > r.maxBytes {
			r.dropOldestLocked()
		}
	}
	r.budget.add(r.bytes - before)
}

func (r *Ring) appendLocked(e Entry) {
	size := entrySize(&e)
	switch {
	case r.cap == 0:
		r.lost, r.hasLost = e.Position, true
		return
	case r.count < len(r.buf):
		r.buf[(r.head+r.count)%len(r.buf)] = e
		r.count++
	case len(r.buf) < r.cap: // grow: unwrap into a larger buffer
		nb := make([]Entry, min(max(2*len(r.buf), ringInitial), r.cap))
		n := copy(nb, r.buf[r.head:])
		copy(nb[n:], r.buf[:r.head])
		r.buf, r.head = nb, 0
		r.buf[r.count] = e
		r.count++
	default: // full: overwrite the oldest
		old := &r.buf[r.head]
		r.lost, r.hasLost = old.Position, true
		r.bytes -= entrySize(old)
		*old = e
		r.head = (r.head + 1) % len(r.buf)
	}
	r.bytes += size
}

// dropOldestLocked drops the oldest entry (there is one), marking it lost.
func (r *Ring) dropOldestLocked() {
	old := &r.buf[r.head]
	r.lost, r.hasLost = old.Position, true
	r.bytes -= entrySize(old)
	*old = Entry{}
	r.head = (r.head + 1) % len(r.buf)
	r.count--
	if r.count == 0 {
		r.head = 0
	}
}

// shed drops the oldest entries until at least need bytes are freed or the ring is empty, and returns
// what it freed; the store's total bound calls it on its coldest channels.
func (r *Ring) shed(need int64) int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	before := r.bytes
	for r.count > 0 && before-r.bytes < need {
		r.dropOldestLocked()
	}
	if r.count == 0 {
		r.buf, r.head = nil, 0 // an empty ring gives its buffer back
	}
	freed := before - r.bytes
	r.budget.add(-freed)
	return freed
}

// Drop empties the ring and marks what it held as lost, as if it had been
// overwritten: a replay from before the next entry is then incomplete.
func (r *Ring) Drop() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.count > 0 {
		r.lost, r.hasLost = r.at(r.count-1).Position, true
	}
	r.budget.add(-r.bytes)
	r.buf, r.head, r.count, r.bytes = nil, 0, 0, 0
}

// at returns the i-th oldest entry; the caller holds r.mu.
func (r *Ring) at(i int) *Entry { return &r.buf[(r.head+i)%len(r.buf)] }

// Len returns the number of entries held.
func (r *Ring) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.count
}

// Oldest returns the oldest position held. Every entry after it is in the ring, so the ring alone
// answers a query whose Since is at or after Oldest.
func (r *Ring) Oldest() (Position, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.count == 0 {
		return Position{}, false
	}
	return r.at(0).Position, true
}

// Last returns the newest position held.
func (r *Ring) Last() (Position, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.count == 0 {
		return Position{}, false
	}
	return r.at(r.count - 1).Position, true
}

// Range returns the entries matching q, oldest first (see Query for the limit rules).
func (r *Ring) Range(q Query) []Entry {
	s, ok := q.span()
	if !ok {
		return nil
	}
	return r.rangeSpan(s)
}

func (r *Ring) rangeSpan(s span) []Entry {
	out, _ := r.rangeCovered(s, false)
	return out
}

// rangeCovered answers s from the ring and reports whether the answer is complete: every entry of the
// channel from s.lo on is in the ring (or, with startsHere, the ring lost none of them: the channel
// had no history before this ring), and the limit left none out after Since. A query without Since
// that fills its limit is complete too: the newest entries are always in the ring.
func (r *Ring) rangeCovered(s span, startsHere bool) ([]Entry, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	lo := sort.Search(r.count, func(i int) bool { return !r.at(i).Position.Less(s.lo) })
	hi := sort.Search(r.count, func(i int) bool { return s.hi.Less(r.at(i).Position) })
	covered := (r.count > 0 && !s.lo.Less(r.at(0).Position)) ||
		(startsHere && (!r.hasLost || r.lost.Less(s.lo)))
	if hi-lo > s.limit {
		if s.fromLo {
			hi = lo + s.limit
			covered = false // the rest is left for the next page
		} else {
			lo = hi - s.limit
			covered = true
		}
	}
	if hi <= lo {
		return nil, covered
	}
	out := make([]Entry, hi-lo)
	for i := range out {
		out[i] = *r.at(lo + i)
	}
	return out, covered
}
