package e2e

import (
	"testing"
	"time"

	"github.com/arqonbus/arqonbus/client"
)

// TestWriteCoalescing: with a long --write-coalesce (100ms, to make holding
// visible), events 5 ms apart reach a subscriber in a few writes instead of
// one per event, and request/response is never held: 20 sequential pings
// would take 2 s if each answer waited a span.
func TestWriteCoalescing(t *testing.T) {
	s := startServer(t, "ARQONBUS_WRITE_COALESCE=100ms")
	ctx := testCtx(t, 20*time.Second)
	room, ch := "coalesce", uniqueName("ch")
	pub := dial(t, s, client.WithClientID(uniqueName("pub")))
	sub := dial(t, s, client.WithClientID(uniqueName("sub")))
	for _, c := range []*client.Conn{pub, sub} {
		if err := c.Join(ctx, room, ch); err != nil {
			t.Fatal(err)
		}
	}

	start := time.Now()
	for range 20 {
		if _, err := pub.Command(ctx, room, ch, "ping", nil); err != nil {
			t.Fatal(err)
		}
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("20 sequential pings took %v: answers were held", took)
	}

	// Events 5 ms apart, each read in its own callback: without holding, a write each. The
	// subscriber's first event goes at once; those after it wait for the end of its span.
	before := scrape(t, s)
	const n = 40
	for i := range n {
		if err := pub.Send(seqEvent(room, ch, "p", i, nil)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	for i := range n {
		env, err := nextReal(ctx, sub)
		if err != nil {
			t.Fatal(err)
		}
		if got := seqOf(env); got != i {
			t.Fatalf("event %d arrived as %d", i, got)
		}
	}
	after := scrape(t, s)
	frames := after.value(t, "arqonbus_frames_written_total", nil) - before.value(t, "arqonbus_frames_written_total", nil)
	writes := after.value(t, "arqonbus_socket_writes_total", nil) - before.value(t, "arqonbus_socket_writes_total", nil)
	t.Logf("%d events 5 ms apart: %.0f frames in %.0f socket writes", n, frames, writes)
	// 40 events over about 200 ms (more on a loaded machine): a few spans, a write each.
	if frames < n || writes > n/4 {
		t.Errorf("%d events 5 ms apart: %.0f frames in %.0f socket writes, want them coalesced (at most %d writes)", n, frames, writes, n/4)
	}
}
