package bus

import (
	"fmt"
	"io"
	"log/slog"
	"testing"

	"github.com/arqonbus/arqonbus/codec"
	"github.com/arqonbus/arqonbus/commands"
	"github.com/arqonbus/arqonbus/fanout"
)

// busWithChannels is a bus whose hub holds n channels over n/100 rooms.
func busWithChannels(tb testing.TB, n int) *Bus {
	tb.Helper()
	hub := fanout.NewHub(fanout.Options{AutoCreate: true, NewState: NewChannelState})
	b := New(Config{NodeID: "bench", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, hub)
	for i := range n {
		if _, err := hub.Create(fanout.Key{Room: fmt.Sprintf("room%d", i/100), Channel: fmt.Sprintf("ch%05d", i)}); err != nil {
			tb.Fatal(err)
		}
	}
	return b
}

// BenchmarkStatus is the status command's work on the event loop with
// 10,000 channels.
func BenchmarkStatus(b *testing.B) {
	bus := busWithChannels(b, 10000)
	b.ReportAllocs()
	var size int
	for b.Loop() {
		out, err := marshalStatus(bus)
		if err != nil {
			b.Fatal(err)
		}
		size = len(out)
	}
	b.ReportMetric(float64(size), "bytes/answer")
}

func marshalStatus(b *Bus) ([]byte, error) {
	cmd := b.builtins.Get("status")
	out, cerr := cmd.Run(b.deps, nil, nil)
	if cerr != nil {
		return nil, cerr
	}
	return out, nil
}

// BenchmarkListChannels is a list_channels of one room (100 channels; the
// hub holds 10,000) on the event loop.
func BenchmarkListChannels(b *testing.B) {
	bus := busWithChannels(b, 10000)
	cmd := bus.builtins.Get("list_channels")
	req := &commands.Request{Env: &codec.Envelope{Room: "room7", Channel: "general"}, Name: "list_channels"}
	b.ReportAllocs()
	var size int
	for b.Loop() {
		out, cerr := cmd.Run(bus.deps, nil, req)
		if cerr != nil {
			b.Fatal(cerr)
		}
		size = len(out)
	}
	b.ReportMetric(float64(size), "bytes/answer")
}
