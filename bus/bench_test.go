package bus

import (
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"testing"

	"github.com/arqonbus/arqonbus/engine"
	"github.com/arqonbus/arqonbus/fanout"
)

// detachedBus is a bus whose clients sit on detached engine loops: the real
// handler, fan-out and write path, with sockets that discard.
func detachedBus(tb testing.TB, members int) (*Bus, *engine.Conn) {
	tb.Helper()
	hub := fanout.NewHub(fanout.Options{AutoCreate: true, NewState: NewChannelState})
	b := New(Config{NodeID: "bench", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, hub)
	loops := []*engine.Loop{engine.NewDetachedLoop(), engine.NewDetachedLoop()}
	var sender *engine.Conn
	for i := range members {
		c := loops[i%len(loops)].NewConn("")
		id := fmt.Sprintf("member_%d", i)
		if err := b.Upgrade(c, &engine.Request{Query: url.Values{"client_id": {id}}}); err != nil {
			tb.Fatal(err)
		}
		b.Open(c)
		b.Message(c, []byte(`{"version":"1.0","id":"arq_join","type":"command","room":"bench","channel":"fanout","from":"`+id+
			`","timestamp":"2025-01-01T12:00:00.000Z","payload":{"command":"join_channel","parameters":{}}}`))
		if i == 0 {
			sender = c
		}
	}
	if n := hub.Channel(fanout.Key{Room: "bench", Channel: "fanout"}).Members(); n != members {
		tb.Fatalf("%d members joined, want %d", n, members)
	}
	return b, sender
}

// BenchmarkMessageEvent is one client event through the whole bus: decode,
// checks, position and routed frame, history ring, fan-out to every member on
// two loops, and their (discarded) writes.
func BenchmarkMessageEvent(b *testing.B) {
	for _, members := range []int{2, 100} {
		b.Run(fmt.Sprintf("members=%d", members), func(b *testing.B) {
			bus, sender := detachedBus(b, members)
			msg := []byte(`{"version":"1.0","id":"arq_msg_001","type":"event","room":"bench","channel":"fanout","from":"member_0",` +
				`"timestamp":"2025-01-01T12:00:00.000Z","payload":{"message":"Hello everyone!"}}`)
			b.ReportAllocs()
			for b.Loop() {
				bus.Message(sender, msg)
			}
		})
	}
}
