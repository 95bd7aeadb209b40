package cluster

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/arqonbus/arqonbus/internal/redistest"
	"github.com/arqonbus/arqonbus/persist"
)

// recorder is a Handler that keeps what it is given.
type recorder struct {
	mu      sync.Mutex
	events  map[string][]persist.Entry
	inbox   [][]byte
	control [][]byte
	gaps    int
	ups     []bool
}

func newRecorder() *recorder { return &recorder{events: map[string][]persist.Entry{}} }

func (r *recorder) Event(ch string, pos persist.Position, data []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	evs := r.events[ch]
	if n := len(evs); n > 0 && !evs[n-1].Position.Less(pos) {
		return // already have it
	}
	r.events[ch] = append(evs, persist.Entry{Position: pos, Data: append([]byte(nil), data...)})
}
func (r *recorder) Gap(string) { r.mu.Lock(); r.gaps++; r.mu.Unlock() }
func (r *recorder) Last(ch string) persist.Position {
	r.mu.Lock()
	defer r.mu.Unlock()
	if evs := r.events[ch]; len(evs) > 0 {
		return evs[len(evs)-1].Position
	}
	return persist.Position{}
}
func (r *recorder) Inbox(m []byte) {
	r.mu.Lock()
	r.inbox = append(r.inbox, append([]byte(nil), m...))
	r.mu.Unlock()
}
func (r *recorder) Control(m []byte) {
	r.mu.Lock()
	r.control = append(r.control, append([]byte(nil), m...))
	r.mu.Unlock()
}
func (r *recorder) Reachable(up bool)   { r.mu.Lock(); r.ups = append(r.ups, up); r.mu.Unlock() }
func (r *recorder) NodesChanged([]Info) {}

func (r *recorder) count(ch string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.events[ch])
}

func startNode(t *testing.T, url, id string, h Handler) *Node {
	t.Helper()
	n, err := New(context.Background(), Options{URL: url, NodeID: id, Handler: h, Heartbeat: 200 * time.Millisecond, NodeTTL: time.Second, Linger: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	n.Start()
	t.Cleanup(func() { _ = n.Close(context.Background()) })
	waitFor(t, 5*time.Second, "redis reachable", n.Up)
	return n
}

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func subscribe(t *testing.T, n *Node, ch string) {
	t.Helper()
	ready := make(chan error, 1)
	switch n.Subscribe(ch, func(err error) { ready <- err }) {
	case Live:
	case Unreachable:
		t.Fatal("unreachable")
	case Pending:
		select {
		case err := <-ready:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("subscription not live within 5s")
		}
	}
}

type resultChan chan error

func (r resultChan) Published(_ persist.Position, err error) { r <- err }

func publish(t *testing.T, n *Node, ch string, i int) chan error {
	done := make(chan error, 1)
	head := []byte(fmt.Sprintf(`{"n":%d,"position":"`, i))
	n.Publish(ch, head, []byte(`"}`), resultChan(done))
	return done
}

// TestEventsCrossNodesInOrder: events published on two nodes reach a third in one order, the
// stream's, each once, and every stored envelope carries its own position.
func TestEventsCrossNodesInOrder(t *testing.T) {
	r := redistest.Run(t)
	ha, hb, hc := newRecorder(), newRecorder(), newRecorder()
	a := startNode(t, r.URL(), "a", ha)
	b := startNode(t, r.URL(), "b", hb)
	c := startNode(t, r.URL(), "c", hc)
	const ch = "science:general"
	for _, n := range []*Node{a, b, c} {
		subscribe(t, n, ch)
	}
	var dones []chan error
	for i := 0; i < 200; i++ {
		n := a
		if i%2 == 1 {
			n = b
		}
		dones = append(dones, publish(t, n, ch, i))
	}
	for _, d := range dones {
		if err := <-d; err != nil {
			t.Fatal(err)
		}
	}
	for _, h := range []*recorder{ha, hb, hc} {
		waitFor(t, 5*time.Second, "200 events", func() bool { return h.count(ch) == 200 })
	}
	for i, e := range hc.events[ch] {
		if want := `"position":"` + e.Position.String() + `"`; !strings.Contains(string(e.Data), want) {
			t.Fatalf("event %d: %s lacks %s", i, e.Data, want)
		}
		if string(ha.events[ch][i].Data) != string(e.Data) || string(hb.events[ch][i].Data) != string(e.Data) {
			t.Fatalf("nodes disagree at %d", i)
		}
	}
	waitFor(t, 2*time.Second, "a sees 3 nodes", func() bool { return len(a.Nodes()) == 3 })
}

// TestCatchUpAfterUnsubscribe: a node that left a channel and comes back reads what it missed from
// the stream before live events.
func TestCatchUpAfterUnsubscribe(t *testing.T) {
	r := redistest.Run(t)
	ha, hb := newRecorder(), newRecorder()
	a := startNode(t, r.URL(), "a", ha)
	b := startNode(t, r.URL(), "b", hb)
	const ch = "r:c"
	subscribe(t, a, ch)
	subscribe(t, b, ch)
	if err := <-publish(t, a, ch, 0); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "b has 1", func() bool { return hb.count(ch) == 1 })
	b.Unsubscribe(ch)
	waitFor(t, 5*time.Second, "b unsubscribed", func() bool { return !b.Subscribed(ch) })
	time.Sleep(300 * time.Millisecond)
	for i := 1; i <= 10; i++ {
		if err := <-publish(t, a, ch, i); err != nil {
			t.Fatal(err)
		}
	}
	if n := hb.count(ch); n != 1 {
		t.Fatalf("b got %d events while unsubscribed", n)
	}
	subscribe(t, b, ch)
	if n := hb.count(ch); n != 11 {
		t.Fatalf("b has %d events after catching up, want 11", n)
	}
}

// TestDirectory: ids are unique across live nodes; a dead node's ids are free once it is unseen.
func TestDirectory(t *testing.T) {
	r := redistest.Run(t)
	ha, hb := newRecorder(), newRecorder()
	a := startNode(t, r.URL(), "a", ha)
	b := startNode(t, r.URL(), "b", hb)
	ctx := context.Background()
	if ok, _, err := a.ClaimID(ctx, "alice", false); !ok || err != nil {
		t.Fatalf("a claim: %v %v", ok, err)
	}
	if ok, holder, err := b.ClaimID(ctx, "alice", false); ok || err != nil || holder != a.Instance() {
		t.Fatalf("b claim: ok=%v holder=%q err=%v", ok, holder, err)
	}
	inst, ok, err := sendToClient(b, "alice", "hello")
	if !ok || err != nil || inst != a.Instance() {
		t.Fatalf("send: %q %v %v", inst, ok, err)
	}
	waitFor(t, 5*time.Second, "inbox", func() bool { ha.mu.Lock(); defer ha.mu.Unlock(); return len(ha.inbox) == 1 })
	if _, ok, _ := sendToClient(b, "nobody", "x"); ok {
		t.Fatal("sent to nobody")
	}
	if err := a.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if ok, _, err := b.ClaimID(ctx, "alice", false); !ok || err != nil {
		t.Fatalf("claim after a left: %v %v", ok, err)
	}
}

// TestConflicts: a standalone node refuses to start next to others, and a second node with the same id
// too.
func TestConflicts(t *testing.T) {
	r := redistest.Run(t)
	startNode(t, r.URL(), "a", newRecorder())
	if _, err := New(context.Background(), Options{URL: r.URL(), NodeID: "b", Standalone: true}); err == nil {
		t.Fatal("standalone started next to a cluster node")
	} else {
		t.Log(err)
	}
	if _, err := New(context.Background(), Options{URL: r.URL(), NodeID: "a", Handler: newRecorder()}); err == nil {
		t.Fatal("second node a started")
	} else {
		t.Log(err)
	}
}

// sendToClient sends msg to id's node and waits for the outcome.
func sendToClient(n *Node, id, msg string) (string, bool, error) {
	type sent struct {
		inst string
		ok   bool
		err  error
	}
	done := make(chan sent, 1)
	n.SendToClient(id, id, []byte(msg), func(inst string, ok bool, err error) { done <- sent{inst, ok, err} })
	s := <-done
	return s.inst, s.ok, s.err
}

// TestWriterQueueIsBounded: while Redis does not answer (stopped with SIGSTOP), publishes beyond the
// queue's bound are refused at once with ErrOverloaded instead of piling up; the ones queued are
// settled once Redis answers again.
func TestWriterQueueIsBounded(t *testing.T) {
	r := redistest.Run(t)
	n, err := New(context.Background(), Options{URL: r.URL(), NodeID: "bounded", Handler: newRecorder(),
		Heartbeat: 200 * time.Millisecond, NodeTTL: 5 * time.Second, Shards: 1, MaxQueuedBytes: 4096})
	if err != nil {
		t.Fatal(err)
	}
	n.Start()
	t.Cleanup(func() { _ = n.Close(context.Background()) })
	waitFor(t, 5*time.Second, "redis reachable", n.Up)
	subscribe(t, n, "room:bounded")

	if err := syscall.Kill(r.PID(), syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	resumed := false
	resume := func() {
		if !resumed {
			resumed = true
			_ = syscall.Kill(r.PID(), syscall.SIGCONT)
		}
	}
	t.Cleanup(resume)

	const total = 2000 // about 60 KiB of events, 15 times the bound
	var results []chan error
	for i := range total {
		results = append(results, publish(t, n, "room:bounded", i))
	}
	overloaded := 0
	time.Sleep(500 * time.Millisecond) // refusals are settled on a goroutine of their own
	for i, res := range results {
		select {
		case err := <-res:
			if err == ErrOverloaded {
				overloaded++
			}
			results[i] = nil
		default: // queued behind the stopped Redis
		}
	}
	t.Logf("refused at once: %d of %d; counter %d", overloaded, total, n.QueueRefused())
	if overloaded < total/2 || uint64(overloaded) != n.QueueRefused() {
		t.Fatalf("refused %d of %d (counter %d), want most refused while Redis is stopped", overloaded, total, n.QueueRefused())
	}
	resume()
	for _, res := range results {
		if res == nil {
			continue
		}
		select {
		case <-res:
		case <-time.After(15 * time.Second):
			t.Fatal("a queued publish was never settled after Redis came back")
		}
	}
}

// withdrawn is a cluster.Withdrawable called off before the writer takes it.
type withdrawn struct{ results chan error }

func (w withdrawn) Published(_ persist.Position, err error) { w.results <- err }
func (w withdrawn) Sending() bool                           { return false }

// TestPublishWithdrawn: a publish withdrawn while queued is never sent, and hears no result, so that
// its sender may route it elsewhere knowing Redis never had it; the publishes around it go through.
func TestPublishWithdrawn(t *testing.T) {
	r := redistest.Run(t)
	h := newRecorder()
	n := startNode(t, r.URL(), "w", h)
	subscribe(t, n, "room:w")
	first := publish(t, n, "room:w", 0)
	w := withdrawn{make(chan error, 1)}
	n.Publish("room:w", []byte(`{"n":1,"position":"`), []byte(`"}`), w)
	last := publish(t, n, "room:w", 2)
	for _, done := range []chan error{first, last} {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 5*time.Second, "2 events", func() bool { return h.count("room:w") == 2 })
	select {
	case err := <-w.results:
		t.Fatalf("the withdrawn publish heard %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for i, e := range h.events["room:w"] {
		if want := fmt.Sprintf(`{"n":%d,`, 2*i); !strings.HasPrefix(string(e.Data), want) {
			t.Errorf("event %d: %s, want %s...", i, e.Data, want)
		}
	}
}
