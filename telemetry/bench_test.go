package telemetry

import (
	"context"
	"testing"
	"time"
)

func BenchmarkAgentActivity(b *testing.B) {
	e := New(Options{Logger: quiet})
	h := e.Agent("agent-1", "analyst")
	b.ReportAllocs()
	for b.Loop() {
		h.Activity(ActivityPublished, "science", "general")
	}
}

func BenchmarkAgentActivityParallel(b *testing.B) {
	e := New(Options{Logger: quiet})
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		h := e.Agent("agent", "p") // one handle per session, as the bus keeps them
		for pb.Next() {
			h.Activity(ActivityPublished, "science", "general")
		}
	})
}

// BenchmarkEmit is the producer's cost, with Run draining concurrently.
func BenchmarkEmit(b *testing.B) {
	e := New(Options{Logger: quiet})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { e.Run(ctx); close(done) }()
	fields := map[string]any{"client_id": "alice", "command": "status", "room": "science", "channel": "general"}
	b.ReportAllocs()
	for b.Loop() {
		e.Emit("command_executed", fields)
	}
	b.StopTimer()
	cancel()
	<-done
	b.ReportMetric(float64(e.Dropped())/float64(b.N), "dropped/op")
}

// BenchmarkEmitterEncode is the emitter goroutine's cost of one event:
// payload and envelope encoding and the frame, with a listener present.
func BenchmarkEmitterEncode(b *testing.B) {
	e := New(Options{Logger: quiet, NodeID: "node-1"})
	fields := map[string]any{"client_id": "alice", "command": "status", "room": "science", "channel": "general", "duration_ms": 0.42}
	it := item{kind: kindEvent, at: time.Now().UnixNano(), typ: "command_executed", fields: fields}
	b.ReportAllocs()
	for b.Loop() {
		e.publish(e.o.StreamChannel, EventMetricsSnapshot, time.Unix(0, it.at), func(p []byte) []byte {
			return appendFields(p, it.fields, e.log)
		})
	}
}
