package load

import (
	"math/bits"
	"sync"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Latencies are recorded in microseconds from 1 µs to 60 s with 3 significant figures.
const (
	latMinUs   = 1
	latMaxUs   = 60_000_000
	latSigFigs = 3
)

// latBatch is how many latencies a subscriber buffers before taking its shard's lock.
const latBatch = 128

// maxHistShards bounds the number of histograms. One costs about 140 KB at this range and
// precision, so one per subscriber would be 140 MB at 1,000 subscribers; subscribers instead
// share a few, each behind a mutex taken once per latBatch records.
const maxHistShards = 64

// histSet is a set of latency histograms that subscribers share, merged at the end.
type histSet struct {
	shards []histShard
}

type histShard struct {
	mu sync.Mutex
	h  *hdrhistogram.Histogram
}

func newHistSet(n int) *histSet {
	n = min(max(n, 1), maxHistShards)
	hs := &histSet{shards: make([]histShard, n)}
	for i := range hs.shards {
		hs.shards[i].h = newHist()
	}
	return hs
}

func newHist() *hdrhistogram.Histogram {
	return hdrhistogram.New(latMinUs, latMaxUs, latSigFigs)
}

func (hs *histSet) shard(i int) *histShard { return &hs.shards[i%len(hs.shards)] }

// merged returns one histogram holding every shard's values. Call it after recording stopped.
func (hs *histSet) merged() *hdrhistogram.Histogram {
	all := newHist()
	for i := range hs.shards {
		all.Merge(hs.shards[i].h)
	}
	return all
}

func (s *histShard) record(vals []int64) {
	s.mu.Lock()
	for _, v := range vals {
		// Clamped, so RecordValue cannot fail: lower is a clock artefact, higher is off scale.
		_ = s.h.RecordValue(min(max(v, latMinUs), latMaxUs))
	}
	s.mu.Unlock()
}

// latRecorder buffers one subscriber's latencies for its shard.
type latRecorder struct {
	shard *histShard
	buf   []int64
}

func (l *latRecorder) add(d time.Duration) {
	l.buf = append(l.buf, d.Microseconds())
	if len(l.buf) >= latBatch {
		l.flush()
	}
}

func (l *latRecorder) flush() {
	if len(l.buf) > 0 {
		l.shard.record(l.buf)
		l.buf = l.buf[:0]
	}
}

// seqTrack remembers which sequence numbers of one publisher a subscriber has seen, as a bitmap:
// one bit per message keeps a 10 s run at 10,000 msg/s per publisher to 16 KB.
type seqTrack struct {
	seen   []uint64
	maxSeq int64 // highest seq seen, -1 before any
}

// observe marks s as seen and tells whether it had been seen before, or arrived after a higher
// sequence number of the same publisher. s must be in [0, limit) as checked by the caller.
func (t *seqTrack) observe(s int64) (dup, outOfOrder bool) {
	w := int(s >> 6)
	if w >= len(t.seen) {
		if w >= cap(t.seen) {
			grown := make([]uint64, w+1, max(2*cap(t.seen), w+1, 64))
			copy(grown, t.seen)
			t.seen = grown
		} else {
			t.seen = t.seen[:w+1]
		}
	}
	bit := uint64(1) << (uint(s) & 63)
	if t.seen[w]&bit != 0 {
		return true, false
	}
	t.seen[w] |= bit
	if s < t.maxSeq {
		return false, true
	}
	t.maxSeq = s
	return false, false
}

// unique counts the distinct sequence numbers seen.
func (t *seqTrack) unique() int64 {
	var n int
	for _, w := range t.seen {
		n += bits.OnesCount64(w)
	}
	return int64(n)
}
