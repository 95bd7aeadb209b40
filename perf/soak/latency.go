package soak

import (
	"sync"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Latencies are recorded in microseconds from 1 µs to 60 s with 3 significant figures (as in
// perf/load): one histogram is about 140 KB, so each kind of latency has two, the current
// interval's and the whole run's.
const (
	latMinUs   = 1
	latMaxUs   = 60_000_000
	latSigFigs = 3
)

// LatencyStats summarises the latencies of one interval or of the whole run.
type LatencyStats struct {
	Count int64         `json:"count"`
	P50   time.Duration `json:"p50_ns"`
	P99   time.Duration `json:"p99_ns"`
	Max   time.Duration `json:"max_ns"`
}

// latency records one kind of latency (fan-out delivery, command round trip, history read)
// from many goroutines. The rates here are a few thousand a second, so one mutex is cheap
// enough and keeps the interval boundary exact.
type latency struct {
	mu       sync.Mutex
	interval *hdrhistogram.Histogram
	total    *hdrhistogram.Histogram
}

func newLatency() *latency {
	return &latency{
		interval: hdrhistogram.New(latMinUs, latMaxUs, latSigFigs),
		total:    hdrhistogram.New(latMinUs, latMaxUs, latSigFigs),
	}
}

// record adds one latency. Values off the scale are clamped (below: a clock artefact; above:
// beyond anything a healthy bus does), so recording cannot fail.
func (l *latency) record(d time.Duration) {
	us := min(max(d.Microseconds(), latMinUs), latMaxUs)
	l.mu.Lock()
	_ = l.interval.RecordValue(us)
	_ = l.total.RecordValue(us)
	l.mu.Unlock()
}

// rotate returns the current interval's statistics and starts a new interval.
func (l *latency) rotate() LatencyStats {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := statsOf(l.interval)
	l.interval.Reset()
	return s
}

// overall returns the statistics of the whole run so far.
func (l *latency) overall() LatencyStats {
	l.mu.Lock()
	defer l.mu.Unlock()
	return statsOf(l.total)
}

func statsOf(h *hdrhistogram.Histogram) LatencyStats {
	n := h.TotalCount()
	if n == 0 {
		return LatencyStats{}
	}
	us := func(v int64) time.Duration { return time.Duration(v) * time.Microsecond }
	return LatencyStats{
		Count: n,
		P50:   us(h.ValueAtQuantile(50)),
		P99:   us(h.ValueAtQuantile(99)),
		Max:   us(h.Max()),
	}
}
