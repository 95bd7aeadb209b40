package cluster

import (
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/arqonbus/arqonbus/internal/redistest"
	"github.com/arqonbus/arqonbus/persist"
)

// countingHandler counts events and wakes a waiter once n arrived.
type countingHandler struct {
	*recorder
	got  atomic.Int64
	want int64
	done chan struct{}
	once sync.Once
}

func (h *countingHandler) Event(string, persist.Position, []byte) {
	if h.got.Add(1) == h.want {
		h.once.Do(func() { close(h.done) })
	}
}
func (h *countingHandler) Last(string) persist.Position { return persist.Position{} }

type nopResult struct{}

func (nopResult) Published(persist.Position, error) {}

// BenchmarkPublishThroughRedis: how many events one Redis carries for a cluster: b.N events of ~250
// bytes over 1000 channels, published as fast as the writers take them, each delivered back to a
// node subscribed to every channel. Reports events/s and Redis's CPU per event (from /proc), which
// is where the limit is once nodes and load generators have cores of their own.
func BenchmarkPublishThroughRedis(b *testing.B) {
	r := redistest.Run(b)
	h := &countingHandler{recorder: newRecorder(), want: int64(b.N), done: make(chan struct{})}
	n, err := New(b.Context(), Options{URL: r.URL(), NodeID: "bench", Handler: h, Linger: time.Minute, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		b.Fatal(err)
	}
	n.Start()
	b.Cleanup(func() { _ = n.Close(b.Context()) })
	for !n.Up() {
		time.Sleep(10 * time.Millisecond)
	}
	const channels = 1000
	names := make([]string, channels)
	for i := range names {
		names[i] = "bench:c" + strconv.Itoa(i)
		ready := make(chan error, 1)
		if n.Subscribe(names[i], func(err error) { ready <- err }) == Pending {
			if err := <-ready; err != nil {
				b.Fatal(err)
			}
		}
	}
	head := []byte(`{"version":"1.0","id":"arq_bench_0001","type":"event","room":"bench","channel":"c","from":"load","timestamp":"2025-01-01T12:00:00.000Z","payload":{"message":"` + strings.Repeat("x", 100) + `"},"metadata":{"position":"`)
	tail := []byte(`","received_at":"2025-01-01T12:00:00.000Z"}}`)
	cpu0 := procCPU(r.PID())
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		n.Publish(names[i%channels], head, tail, nopResult{})
	}
	select {
	case <-h.done:
	case <-time.After(time.Minute):
		b.Fatalf("%d of %d events came back", h.got.Load(), b.N)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "events/s")
	if cpu1 := procCPU(r.PID()); cpu0 >= 0 && cpu1 >= 0 {
		b.ReportMetric((cpu1-cpu0)*1e6/float64(b.N), "redis-µs/event")
	}
}

// procCPU is a process's user+system CPU seconds, or -1.
func procCPU(pid int) float64 {
	raw, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return -1
	}
	s := string(raw)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	if len(fields) < 13 {
		return -1
	}
	u, _ := strconv.ParseFloat(fields[11], 64)
	k, _ := strconv.ParseFloat(fields[12], 64)
	return (u + k) / 100 // clock ticks (CLK_TCK is 100 on Linux)
}
