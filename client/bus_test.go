package client

import (
	"strings"
	"testing"
	"time"
)

// The Bus's behaviour is tested against the real server in e2e/sdk_go_test.go;
// these are the pieces that need no server.

func TestBackoffFullJitter(t *testing.T) {
	lo, hi := 100*time.Millisecond, 2*time.Second
	for n := 0; n < 40; n++ {
		window := hi
		if n < 30 {
			window = min(hi, lo<<n)
		}
		var top time.Duration
		for i := 0; i < 200; i++ {
			d := backoff(n, lo, hi)
			if d < 0 || d > window {
				t.Fatalf("attempt %d: delay %v outside [0, %v]", n, d, window)
			}
			top = max(top, d)
		}
		// Full jitter spreads over the whole window, not just its top.
		if top < window/2 {
			t.Errorf("attempt %d: 200 delays all below %v (window %v)", n, top, window)
		}
	}
}

func TestConfigDefaults(t *testing.T) {
	var c Config
	c.defaults()
	if !strings.HasPrefix(c.ClientID, "arq_") || len(c.ClientID) != 4+16 {
		t.Errorf("generated client id %q, want arq_ and 16 hex digits", c.ClientID)
	}
	var d Config
	d.defaults()
	if c.ClientID == d.ClientID {
		t.Errorf("two generated ids are equal: %q", c.ClientID)
	}
	e := Config{Reconnect: Reconnect{MinDelay: time.Second, MaxDelay: time.Millisecond}}
	e.defaults()
	if e.Reconnect.MaxDelay != time.Second {
		t.Errorf("MaxDelay below MinDelay not raised: %v", e.Reconnect.MaxDelay)
	}
}

func TestPositionOrder(t *testing.T) {
	cases := []struct {
		a, b string
		less bool
	}{
		{"1-0", "2-0", true},
		{"9-5", "10-0", true}, // numeric, not lexical
		{"10-2", "10-10", true},
		{"10-10", "10-2", false},
		{"5-5", "5-5", false},
	}
	for _, c := range cases {
		a, ok1 := parsePosition(c.a)
		b, ok2 := parsePosition(c.b)
		if !ok1 || !ok2 || a.less(b) != c.less {
			t.Errorf("%s < %s: got %v, want %v", c.a, c.b, a.less(b), c.less)
		}
	}
	for _, bad := range []string{"", "12", "a-1", "1-b", "2025-01-01T00:00:00Z"} {
		if _, ok := parsePosition(bad); ok {
			t.Errorf("parsePosition(%q) accepted", bad)
		}
	}
}

func TestSplitName(t *testing.T) {
	if r, c, err := splitName("science:general"); err != nil || r != "science" || c != "general" {
		t.Errorf("splitName: %q %q %v", r, c, err)
	}
	for _, bad := range []string{"science", ":general", "science:", ""} {
		if _, _, err := splitName(bad); err == nil {
			t.Errorf("splitName(%q) accepted", bad)
		}
	}
}

func ev(pos string) Event { return Event{Envelope: Envelope{ID: "arq_" + pos}, Position: pos} }

// A full buffer never blocks deliver: what does not fit becomes a Gap (or,
// when more is dropped while the flusher waits, consecutive Gaps), delivered
// in order once the reader makes room, naming the dropped range.
func TestSubscriptionOverflowGap(t *testing.T) {
	s := &Subscription{ch: make(chan Event, 2), done: make(chan struct{})}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 1; i <= 6; i++ {
			s.deliver(ev("1-"+string(rune('0'+i))), 0)
		}
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("deliver blocked on a full buffer")
	}
	got := func() Event {
		select {
		case e := <-s.ch:
			return e
		case <-time.After(5 * time.Second):
			t.Fatal("nothing delivered")
			return Event{}
		}
	}
	if e := got(); e.Position != "1-1" {
		t.Fatalf("first %+v", e)
	}
	if e := got(); e.Position != "1-2" {
		t.Fatalf("second %+v", e)
	}
	// Usually one gap, 1-2..1-6. The flusher takes its copy of the gap before it waits for
	// room, so when it started before the last drops it reports them as a next gap, from
	// where the first ended: either way the gaps name exactly the dropped range, in order.
	for since := "1-2"; since != "1-6"; {
		e := got()
		if e.Gap == nil || e.Gap.Reason != GapOverflow || e.Gap.Since != since {
			t.Fatalf("want a gap from %s up to 1-6, got %+v (gap %+v)", since, e, e.Gap)
		}
		since = e.Gap.Until
	}
	// After the gap, delivery goes on normally.
	waitFor(t, func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return !s.flushing
	})
	s.deliver(ev("1-7"), 0)
	if e := got(); e.Position != "1-7" || e.Gap != nil {
		t.Fatalf("after the gap: %+v", e)
	}
	s.close(nil)
	if _, ok := <-s.ch; ok {
		t.Fatal("events channel not closed")
	}
}

// Closing a subscription whose gap waits for room ends its flusher.
func TestSubscriptionCloseWhileFlushing(t *testing.T) {
	s := &Subscription{ch: make(chan Event, 1), done: make(chan struct{})}
	s.deliver(ev("1-1"), 0)
	s.deliver(ev("1-2"), 0)
	closed := make(chan struct{})
	go func() { s.close(ErrBusClosed); close(closed) }()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("close hung on the flusher")
	}
	if s.Err() != ErrBusClosed {
		t.Errorf("Err = %v", s.Err())
	}
	s.deliver(ev("1-3"), time.Second) // after close: ignored, no panic
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 5s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A full buffer makes deliver wait up to its bound: an event that finds
// room within it is delivered, not dropped; Close wakes a waiting deliver.
func TestSubscriptionOverflowWait(t *testing.T) {
	s := &Subscription{ch: make(chan Event, 1), done: make(chan struct{})}
	s.deliver(ev("1-1"), time.Second)
	go func() {
		time.Sleep(100 * time.Millisecond)
		<-s.ch
	}()
	start := time.Now()
	s.deliver(ev("1-2"), 5*time.Second)
	if d := time.Since(start); d < 50*time.Millisecond || d > 4*time.Second {
		t.Errorf("deliver returned after %v", d)
	}
	if e := <-s.ch; e.Position != "1-2" || e.Gap != nil {
		t.Fatalf("got %+v, want 1-2", e)
	}
	s.deliver(ev("1-3"), time.Second)
	waiting := make(chan struct{})
	go func() { s.deliver(ev("1-4"), time.Minute); close(waiting) }()
	time.Sleep(50 * time.Millisecond)
	s.close(nil)
	select {
	case <-waiting:
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not wake a waiting deliver")
	}
}

func TestPositionOf(t *testing.T) {
	cases := map[string]string{
		`{"position":"17-3","received_at":"2025-01-01T00:00:00.000Z"}`:                             "17-3",
		`{"k":{"position":"1-1"},"position":"17-3","received_at":"2025-01-01T00:00:00.000Z"}`:      "17-3",
		`{"received_at":"2025-01-01T00:00:00.000Z","position":"9-9"}`:                              "9-9",
		`{"position":"9-9", "received_at":"x"}`:                                                    "9-9",
		`{"a":1}`:                                                                                  "",
		`{"position":"not-a-position","received_at":"2025-01-01T00:00:00.000Z","position2":"1-1"}`: "not-a-position",
	}
	for meta, want := range cases {
		if got := positionOf(Envelope{Metadata: []byte(meta)}); got != want {
			t.Errorf("positionOf(%s) = %q, want %q", meta, got, want)
		}
	}
}
