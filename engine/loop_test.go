package engine

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/panjf2000/gnet/v2"
)

// heldLoop is an event loop that runs nothing until told: its inbox fills
// the way a stalled loop's does.
type heldLoop struct {
	gnet.EventLoop
	mu    sync.Mutex // the write-coalescing timer posts from its own goroutine
	tasks []gnet.Runnable
}

func (h *heldLoop) Execute(_ context.Context, r gnet.Runnable) error {
	h.mu.Lock()
	h.tasks = append(h.tasks, r)
	h.mu.Unlock()
	return nil
}

func (h *heldLoop) runAll() {
	for {
		h.mu.Lock()
		if len(h.tasks) == 0 {
			h.mu.Unlock()
			return
		}
		r := h.tasks[0]
		h.tasks = h.tasks[1:]
		h.mu.Unlock()
		_ = r.Run(context.Background())
	}
}

// coalescingLoop is a held loop on a server that coalesces writes for hold.
func coalescingLoop(hold time.Duration) (*Server, *heldLoop, *Loop) {
	srv := New(Config{WriteCoalesce: hold, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, nil)
	held := &heldLoop{}
	return srv, held, newLoop(srv, held)
}

// A full inbox drops frames, counts them, and closes their recipients with
// 1013 before writing them anything more; runs and closes still get through,
// and connections that lost nothing stay open.
func TestFullInboxDropsAndCloses(t *testing.T) {
	frame := TextFrame(make([]byte, 1000))
	limit := 10 * (len(frame) + deliveryOverhead)
	srv := New(Config{MaxLoopInboxBytes: limit, WriteCoalesce: -1, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, nil)
	held := &heldLoop{}
	l := newLoop(srv, held)
	a, b, bystander := l.NewConn("a"), l.NewConn("b"), l.NewConn("bystander")
	group := []*Conn{a, b}

	for range 10 {
		l.Deliver(frame, group, nil)
	}
	if got := srv.Stats().InboxDropped; got != 0 {
		t.Fatalf("dropped %d under the bound", got)
	}
	l.Deliver(frame, group, nil) // over the bound: dropped for both
	a.Send(frame)                // and this one for a
	if got := srv.Stats().InboxDropped; got != 3 {
		t.Fatalf("dropped %d frames, want 3 (two recipients, then one)", got)
	}
	ran := false
	a.Run(func() { ran = true })
	bystander.Close(CloseNormal, "bye") // a close is never dropped
	if len(l.inbox) != 12 {
		t.Fatalf("inbox holds %d deliveries, want the 10 frames, the run and the close", len(l.inbox))
	}

	held.runAll()
	if !ran {
		t.Error("a run posted to a full inbox did not run")
	}
	for _, c := range group {
		if !c.Closed() {
			t.Errorf("%s missed a frame and is still open", c.RemoteAddr())
		}
	}
	if !bystander.Closed() {
		t.Error("the close posted to a full inbox was lost")
	}
	if got := srv.Stats().FramesOut; got != 3 {
		t.Errorf("%d frames written, want only the three close frames", got)
	}

	// Drained, the inbox takes frames again, and an untouched connection
	// gets them.
	other := l.NewConn("other")
	other.Send(frame)
	held.runAll()
	if other.Closed() || srv.Stats().FramesOut != 4 {
		t.Fatalf("after the drain: other closed %v, frames out %d, want 4", other.Closed(), srv.Stats().FramesOut)
	}
}

// A connection written to less than WriteCoalesce ago gets its next fan-out
// frames in one write at the end of that span; a frame for a connection that
// was quiet for a span, or for one client alone (an answer, a private
// message), leaves at once.
func TestWriteCoalescing(t *testing.T) {
	const hold = 50 * time.Millisecond
	srv, held, l := coalescingLoop(hold)
	a, b := l.NewConn("a"), l.NewConn("b")
	frame := TextFrame([]byte(`{"x":1}`))
	both := []*Conn{a, b}

	l.Deliver(frame, []*Conn{a}, nil)
	held.runAll()
	if st := srv.Stats(); st.FramesOut != 1 || st.Writes != 1 {
		t.Fatalf("a lone frame: %d frames in %d writes, want it written at once", st.FramesOut, st.Writes)
	}
	start := time.Now()
	for range 3 {
		l.Deliver(frame, both, nil)
		held.runAll()
	}
	if st := srv.Stats(); st.FramesOut != 2 {
		t.Fatalf("%d frames written, want 2: a's first, then b's first (b was quiet); the rest held", st.FramesOut)
	}
	for srv.Stats().FramesOut < 7 {
		if time.Since(start) > 5*time.Second {
			t.Fatal("held frames were never written")
		}
		time.Sleep(5 * time.Millisecond)
		held.runAll()
	}
	if st := srv.Stats(); st.Writes != 4 {
		t.Errorf("%d writes, want 4: two lone frames, then one writev each for a's 3 and b's 2 held frames", st.Writes)
	}
	if waited := time.Since(start); waited > hold+time.Second {
		t.Errorf("held frames waited %v, want about %v", waited, hold)
	}
	// Just written, but a frame for a alone (Send: an answer, a private message) is not held.
	a.Send(frame)
	held.runAll()
	if st := srv.Stats(); st.FramesOut != 8 {
		t.Errorf("a frame for one client right after a write was held (%d frames out)", st.FramesOut)
	}
	// Quiet for a span again: fan-out leaves at once too.
	time.Sleep(hold)
	l.Deliver(frame, []*Conn{a}, nil)
	held.runAll()
	if st := srv.Stats(); st.FramesOut != 9 {
		t.Errorf("a frame after a quiet span was held (%d frames out)", st.FramesOut)
	}
}

// A frame for one client that finds its fan-out frames held takes them along
// at once; the other held connections keep waiting for the end of the span.
func TestUrgentFrameReleasesHeldConnection(t *testing.T) {
	const hold = time.Hour // only the urgent frame can release anything
	srv, held, l := coalescingLoop(hold)
	a, b := l.NewConn("a"), l.NewConn("b")
	frame := TextFrame([]byte(`{"x":1}`))
	both := []*Conn{a, b}

	l.Deliver(frame, both, nil) // both quiet: written at once
	held.runAll()
	l.Deliver(frame, both, nil) // both just written: held
	held.runAll()
	if st := srv.Stats(); st.FramesOut != 2 {
		t.Fatalf("%d frames out, want 2 (the second fan-out held)", st.FramesOut)
	}
	a.Send(frame)
	held.runAll()
	if st := srv.Stats(); st.FramesOut != 4 || st.Writes != 3 {
		t.Fatalf("after a frame for a alone: %d frames in %d writes, want 4 in 3 (a's held frame and the new one together)", st.FramesOut, st.Writes)
	}
	if len(l.held) != 1 || l.held[0] != b {
		t.Errorf("held %d connections, want b alone", len(l.held))
	}
	l.flushDirty()
	if st := srv.Stats(); st.FramesOut != 5 {
		t.Errorf("%d frames out after flushing, want 5", st.FramesOut)
	}
}

// On its own loop, DeliverFrom queues frames on the connections without a
// trip through the inbox (no wake-up), but behind anything already posted
// there: what was posted first is written first.
func TestDeliverFromOwnLoop(t *testing.T) {
	srv := New(Config{WriteCoalesce: -1, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, nil)
	held := &heldLoop{}
	l, other := newLoop(srv, held), newLoop(srv, &heldLoop{})
	a := l.NewConn("a")
	first, second := TextFrame([]byte(`{"n":1}`)), TextFrame([]byte(`{"n":2}`))

	l.DeliverFrom(l, first, []*Conn{a}, nil)
	if len(held.tasks) != 0 || len(a.pending) != 1 {
		t.Fatalf("on its own loop: %d tasks posted, %d frames pending; want none posted, one pending", len(held.tasks), len(a.pending))
	}
	l.flushSoon()
	if st := srv.Stats(); st.FramesOut != 1 || st.Deliveries != 1 {
		t.Fatalf("%d frames out, %d deliveries counted; want 1 and 1", st.FramesOut, st.Deliveries)
	}

	l.DeliverFrom(other, first, []*Conn{a}, nil) // from another loop: through the inbox
	l.DeliverFrom(l, second, []*Conn{a}, nil)    // behind it, though on its own loop
	a.SendFrom(l, second)
	if len(held.tasks) != 1 || len(l.inbox) != 3 || len(a.pending) != 0 {
		t.Fatalf("behind a posted frame: %d tasks, %d in the inbox, %d pending; want 1, 3, 0", len(held.tasks), len(l.inbox), len(a.pending))
	}
	held.runAll()
	if st := srv.Stats(); st.FramesOut != 4 {
		t.Fatalf("%d frames out, want 4", st.FramesOut)
	}
}

// A connection that gets frames faster than busyFrames a span is held
// busySpans spans at a time, so its writes carry that many more frames; once
// quiet for a span, its next frame leaves at once again.
func TestBusyConnectionHeldLonger(t *testing.T) {
	const hold = 20 * time.Millisecond
	srv, held, l := coalescingLoop(hold)
	a := l.NewConn("a")
	frame := TextFrame([]byte(`{"x":1}`))

	start := time.Now()
	sent := 0
	for time.Since(start) < 600*time.Millisecond { // a frame every ~2 ms: ten a span
		l.Deliver(frame, []*Conn{a}, nil)
		sent++
		held.runAll()
		time.Sleep(2 * time.Millisecond)
		held.runAll()
	}
	for srv.Stats().FramesOut < uint64(sent) {
		if time.Since(start) > 5*time.Second {
			t.Fatalf("%d of %d frames written", srv.Stats().FramesOut, sent)
		}
		time.Sleep(time.Millisecond)
		held.runAll()
	}
	// 600 ms in spans of one hold would be 30 writes; in busySpans holds, 10.
	if w := srv.Stats().Writes; !a.busy || w > 18 {
		t.Errorf("%d frames in %d writes (busy %v), want about %d writes", sent, w, a.busy, 600*time.Millisecond/(busySpans*hold))
	}
	time.Sleep(hold + hold/2)
	before := srv.Stats().FramesOut
	l.Deliver(frame, []*Conn{a}, nil)
	held.runAll()
	if got := srv.Stats().FramesOut - before; got != 1 {
		t.Errorf("a frame after a quiet span was held (%d written)", got)
	}
}
