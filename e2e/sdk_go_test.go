package e2e

// The Go SDK (client.Bus) against the real binary: every call, reconnects
// through a graceful shutdown, a crash and a half-open socket, and the
// resume guarantee (every acked event once, in order) across a SIGKILL.

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/arqonbus/arqonbus/client"
	"github.com/arqonbus/arqonbus/internal/redistest"
)

// stateLog records a Bus's state changes.
type stateLog struct {
	mu     sync.Mutex
	states []client.State
	ch     chan client.State
}

func newStateLog() *stateLog { return &stateLog{ch: make(chan client.State, 64)} }

func (s *stateLog) on(st client.State, _ error) {
	s.mu.Lock()
	s.states = append(s.states, st)
	s.mu.Unlock()
	select {
	case s.ch <- st:
	default:
	}
}

func (s *stateLog) all() []client.State {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]client.State(nil), s.states...)
}

// waitState waits until the log shows want (after what was already seen).
func (s *stateLog) waitState(t *testing.T, want client.State, d time.Duration) {
	t.Helper()
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		select {
		case st := <-s.ch:
			if st == want {
				return
			}
		case <-timer.C:
			t.Fatalf("state %v not reached in %v; states so far %v", want, d, s.all())
		}
	}
}

// connectBus connects a Bus that is closed at cleanup.
func connectBus(t *testing.T, url string, cfg client.Config) *client.Bus {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b, err := client.Connect(ctx, url, cfg)
	if err != nil {
		t.Fatalf("connect %s: %v", url, err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// nextEvent reads the next item of sub, failing after d.
func nextEvent(t *testing.T, sub *client.Subscription, d time.Duration) client.Event {
	t.Helper()
	select {
	case ev, ok := <-sub.Events():
		if !ok {
			t.Fatalf("%s: events closed (%v)", sub.Name(), sub.Err())
		}
		return ev
	case <-time.After(d):
		t.Fatalf("%s: no event in %v", sub.Name(), d)
	}
	return client.Event{}
}

func noEvent(t *testing.T, sub *client.Subscription, d time.Duration, why string) {
	t.Helper()
	select {
	case ev := <-sub.Events():
		t.Fatalf("%s: %s: got %s (gap %+v)", sub.Name(), why, ev.Raw, ev.Gap)
	case <-time.After(d):
	}
}

func asCode(err error) string {
	var e *client.Error
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}

// TestSDKGoCalls runs every Bus call once against the server.
func TestSDKGoCalls(t *testing.T) {
	s := startServer(t)
	ctx := testCtx(t, 30*time.Second)
	states := newStateLog()
	a := connectBus(t, s.URL, client.Config{ClientType: "service", OnState: states.on})
	b := connectBus(t, s.URL, client.Config{ClientID: "sdk_go_b", ClientType: "ai-agent", Personality: "analytical"})

	if !strings.HasPrefix(a.ClientID(), "arq_") || b.ClientID() != "sdk_go_b" {
		t.Errorf("client ids %q %q", a.ClientID(), b.ClientID())
	}
	if a.NodeID() == "" || a.ResumeToken() == "" {
		t.Errorf("welcome not taken in: node %q, resume token %q", a.NodeID(), a.ResumeToken())
	}
	if got := states.all(); len(got) != 2 || got[0] != client.StateConnecting || got[1] != client.StateOpen {
		t.Errorf("states after Connect: %v", got)
	}

	// Join, publish with and without ack, receive.
	subA, err := a.Join(ctx, "science:general", client.JoinOptions{})
	if err != nil {
		t.Fatal(err)
	}
	subB, err := b.Join(ctx, "science:general", client.JoinOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Join(ctx, "science:general", client.JoinOptions{}); err == nil {
		t.Error("a second Join of the same channel succeeded")
	}
	ack, err := a.Publish(ctx, "science:general", map[string]any{"message": "hello", "n": 1}, client.PublishOptions{Ack: true, Metadata: map[string]any{"k": "v"}})
	if err != nil {
		t.Fatalf("publish with ack: %v", err)
	}
	if !ack.Routed || ack.Delivered != 1 || ack.Position == "" || !strings.HasPrefix(ack.ID, "arq_") {
		t.Errorf("ack %+v", ack)
	}
	ev := nextEvent(t, subB, 5*time.Second)
	var m struct {
		Message string `json:"message"`
	}
	_ = json.Unmarshal(ev.Payload, &m)
	if ev.ID != ack.ID || ev.From != a.ClientID() || m.Message != "hello" || ev.Position != ack.Position || ev.Gap != nil {
		t.Errorf("received %s (position %q), ack %+v", ev.Raw, ev.Position, ack)
	}
	var meta map[string]any
	_ = json.Unmarshal(ev.Metadata, &meta)
	if meta["k"] != "v" {
		t.Errorf("metadata not carried: %s", ev.Metadata)
	}
	noAck, err := a.Publish(ctx, "science:general", map[string]any{"n": 2}, client.PublishOptions{})
	if err != nil || noAck.ID == "" || noAck.Position != "" {
		t.Fatalf("publish without ack: %+v %v", noAck, err)
	}
	if ev := nextEvent(t, subB, 5*time.Second); ev.ID != noAck.ID {
		t.Errorf("second event %s, want id %s", ev.Raw, noAck.ID)
	}
	noEvent(t, subA, 100*time.Millisecond, "the sender's own events")
	if _, err := a.Publish(ctx, "nojoin:here", map[string]any{}, client.PublishOptions{Ack: true}); asCode(err) != "FORBIDDEN" {
		t.Errorf("publish to a channel not joined: %v, want FORBIDDEN", err)
	}

	// Filters.
	filtered, err := b.Join(ctx, "research:coordination", client.JoinOptions{Filter: map[string]any{"priority": "high"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Join(ctx, "research:coordination", client.JoinOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"low", "high"} {
		if _, err := a.Publish(ctx, "research:coordination", map[string]any{"p": p}, client.PublishOptions{Ack: true, Metadata: map[string]any{"priority": p}}); err != nil {
			t.Fatal(err)
		}
	}
	if ev := nextEvent(t, filtered, 5*time.Second); !strings.Contains(string(ev.Payload), "high") {
		t.Errorf("filtered subscription got %s", ev.Raw)
	}
	noEvent(t, filtered, 100*time.Millisecond, "events the filter excludes")

	// Private messages.
	if err := a.SendPrivate(ctx, b.ClientID(), map[string]any{"secret": 42}); err != nil {
		t.Fatalf("private: %v", err)
	}
	select {
	case pm := <-b.Private():
		var p struct {
			Secret int    `json:"secret"`
			Target string `json:"target"`
		}
		_ = json.Unmarshal(pm.Payload, &p)
		if pm.Type != "private" || pm.From != a.ClientID() || p.Secret != 42 || p.Target != b.ClientID() {
			t.Errorf("private received %s", pm.Raw)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("private message not received")
	}
	if err := a.SendPrivate(ctx, "nobody_here", map[string]any{}); asCode(err) != "TARGET_NOT_FOUND" {
		t.Errorf("private to an absent client: %v, want TARGET_NOT_FOUND", err)
	}

	// Built-in commands.
	res, err := a.Command(ctx, "ping", nil, client.CommandOptions{})
	if err != nil || !strings.Contains(string(res), "pong") {
		t.Errorf("ping: %s %v", res, err)
	}
	res, err = a.Command(ctx, "channel_info", nil, client.CommandOptions{Room: "science:general"})
	if err != nil || !strings.Contains(string(res), b.ClientID()) {
		t.Errorf("channel_info: %s %v", res, err)
	}
	if _, err := a.Command(ctx, "no_such_command", nil, client.CommandOptions{}); asCode(err) != "COMMAND_NOT_FOUND" {
		t.Errorf("unknown command: %v, want COMMAND_NOT_FOUND", err)
	}

	// Handlers: a result, a typed error, a plain error, and params.
	err = a.Handle(ctx, "services:database", "status", func(_ context.Context, params json.RawMessage, env client.Envelope) (any, error) {
		var p struct {
			Check string `json:"check"`
		}
		_ = json.Unmarshal(params, &p)
		switch p.Check {
		case "forbidden":
			return nil, &client.Error{Code: "FORBIDDEN", Status: 403, Message: "not you"}
		case "broken":
			return nil, errors.New("pool exploded")
		}
		return map[string]any{"check": p.Check, "asked_by": env.From}, nil
	})
	if err != nil {
		t.Fatalf("handle: %v", err)
	}
	opts := client.CommandOptions{Room: "services", Channel: "database"}
	res, err = b.Command(ctx, "status", map[string]any{"check": "connection_pool"}, opts)
	if err != nil || !jsonEqual(res, []byte(`{"check":"connection_pool","asked_by":"sdk_go_b"}`)) {
		t.Errorf("handled command: %s %v", res, err)
	}
	_, err = b.Command(ctx, "status", map[string]any{"check": "forbidden"}, opts)
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Code != "FORBIDDEN" || ce.Message != "not you" {
		t.Errorf("handler's typed error: %v", err)
	}
	if _, err = b.Command(ctx, "status", map[string]any{"check": "broken"}, opts); asCode(err) != "INTERNAL" || !strings.Contains(err.Error(), "pool exploded") {
		t.Errorf("handler's plain error: %v", err)
	}

	// History, and a join that replays from a position.
	page, err := b.History(ctx, "science:general", client.HistoryOptions{Limit: 10})
	if err != nil || len(page.Entries) != 2 || page.Entries[0].Envelope.ID != ack.ID || page.Entries[0].Position != ack.Position {
		t.Errorf("history: %+v %v", page, err)
	}
	page, err = b.History(ctx, "science:general", client.HistoryOptions{Since: ack.Position})
	if err != nil || len(page.Entries) != 1 || page.Entries[0].Envelope.ID != noAck.ID {
		t.Errorf("history since: %+v %v", page, err)
	}
	c := connectBus(t, s.URL, client.Config{})
	replay, err := c.Join(ctx, "science:general", client.JoinOptions{Since: ack.Position})
	if err != nil {
		t.Fatal(err)
	}
	if ev := nextEvent(t, replay, 5*time.Second); ev.ID != noAck.ID {
		t.Errorf("replay since the first event gave %s", ev.Raw)
	}
	noEvent(t, replay, 100*time.Millisecond, "replay beyond what was missed")

	// Leave ends the stream; the publisher sees no more recipient.
	if err := subB.Leave(ctx); err != nil {
		t.Errorf("leave: %v", err)
	}
	if _, ok := <-subB.Events(); ok {
		t.Error("events still open after Leave")
	}
	if err := replay.Leave(ctx); err != nil {
		t.Errorf("leave: %v", err)
	}
	if ack, err := a.Publish(ctx, "science:general", map[string]any{"n": 3}, client.PublishOptions{Ack: true}); err != nil || ack.Delivered != 0 {
		t.Errorf("after every other member left: %+v %v", ack, err)
	}

	// Close.
	if err := a.Close(); err != nil {
		t.Errorf("close: %v", err)
	}
	if a.State() != client.StateClosed || states.all()[len(states.all())-1] != client.StateClosed {
		t.Errorf("state after close %v (%v)", a.State(), states.all())
	}
	if _, ok := <-subA.Events(); ok {
		t.Error("events still open after Close")
	}
	if _, err := a.Command(ctx, "ping", nil, client.CommandOptions{}); !errors.Is(err, client.ErrBusClosed) {
		t.Errorf("command after close: %v", err)
	}
}

// TestSDKGoShutdownReconnect: a graceful server stop (shutdown notice, 1001)
// makes the Bus reconnect; a command in flight fails at once with
// ErrDisconnected; calls made meanwhile wait for the new connection; the
// handler is registered again.
func TestSDKGoShutdownReconnect(t *testing.T) {
	s := startServer(t)
	ctx := testCtx(t, 40*time.Second)
	fast := client.Reconnect{MinDelay: 50 * time.Millisecond, MaxDelay: 300 * time.Millisecond}
	hStates, rStates := newStateLog(), newStateLog()
	h := connectBus(t, s.URL, client.Config{ClientID: "sdk_go_handler", ClientType: "service", Reconnect: fast, OnState: hStates.on})
	r := connectBus(t, s.URL, client.Config{ClientID: "sdk_go_requester", Reconnect: fast, OnState: rStates.on})

	release := make(chan struct{})
	var calls atomic.Int32
	err := h.Handle(ctx, "services:database", "status", func(ctx context.Context, params json.RawMessage, _ client.Envelope) (any, error) {
		if calls.Add(1) == 1 {
			select { // the first call hangs until the server goes away
			case <-release:
			case <-ctx.Done():
			}
		}
		return map[string]any{"active_connections": 15}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	opts := client.CommandOptions{Room: "services", Channel: "database"}
	inflight := make(chan error, 1)
	go func() {
		_, err := r.Command(ctx, "status", nil, opts)
		inflight <- err
	}()
	waitUntil(t, 5*time.Second, func() bool { return calls.Load() == 1 }, "handler called")

	stopped := time.Now()
	go s.stop()
	select {
	case err := <-inflight:
		if !errors.Is(err, client.ErrDisconnected) {
			t.Errorf("command in flight at the drop: %v, want ErrDisconnected", err)
		}
		if d := time.Since(stopped); d > 4*time.Second {
			t.Errorf("command in flight failed only after %v", d)
		}
	case <-time.After(8 * time.Second):
		t.Fatal("command in flight did not fail at the drop")
	}
	close(release)
	rStates.waitState(t, client.StateReconnecting, 5*time.Second)
	for s.Alive() {
		time.Sleep(20 * time.Millisecond)
	}

	// A call made while reconnecting waits for the connection.
	waiting := make(chan error, 1)
	go func() {
		_, err := r.Command(ctx, "ping", nil, client.CommandOptions{})
		waiting <- err
	}()
	time.Sleep(300 * time.Millisecond)
	restartServer(t, s)
	select {
	case err := <-waiting:
		if err != nil {
			t.Errorf("command made while reconnecting: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("command made while reconnecting never returned")
	}
	rStates.waitState(t, client.StateOpen, 10*time.Second)
	hStates.waitState(t, client.StateReconnecting, 10*time.Second)
	hStates.waitState(t, client.StateOpen, 10*time.Second)
	// The handler declared status again as it rejoined, before it was open.
	res, err := r.Command(ctx, "status", nil, opts)
	if err != nil || !jsonEqual(res, []byte(`{"active_connections":15}`)) {
		t.Errorf("status after the restart: %s %v", res, err)
	}
	if h.Stats().Reconnects != 1 || r.Stats().Reconnects != 1 {
		t.Errorf("reconnects: handler %d, requester %d", h.Stats().Reconnects, r.Stats().Reconnects)
	}
}

// waitUntil polls cond.
func waitUntil(t *testing.T, d time.Duration, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, d)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestSDKGoResumeAcrossCrash: a publisher acks events at ~200/s while the
// server (Redis storage, synchronous persistence) is SIGKILLed and restarted
// on the same port; the subscriber sees strictly increasing sequence
// numbers (no duplicate, in order) that include every acked publish.
func TestSDKGoResumeAcrossCrash(t *testing.T) {
	r := redistest.Run(t)
	env := redisEnv(r, "ARQONBUS_PERSIST=sync")
	s := startServer(t, env...)
	ctx := testCtx(t, 60*time.Second)
	fast := client.Reconnect{MinDelay: 50 * time.Millisecond, MaxDelay: 400 * time.Millisecond}
	const ch = "sdkgo:resume"
	pub := connectBus(t, s.URL, client.Config{ClientID: "sdk_go_pub", Reconnect: fast})
	// The subscriber goes through a proxy that keeps it away after the
	// restart until the publisher has gone on publishing, so that its resume
	// must replay what it missed (it could otherwise come back first).
	proxy := newFreezeProxy(t, s.Addr)
	subStates := newStateLog()
	subBus := connectBus(t, proxy.url(), client.Config{ClientID: "sdk_go_sub", Reconnect: fast, OnState: subStates.on})
	sub, err := subBus.Join(ctx, ch, client.JoinOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pub.Join(ctx, ch, client.JoinOptions{}); err != nil {
		t.Fatal(err)
	}

	// Subscriber: record every sequence number and gap.
	var mu sync.Mutex
	var got []int
	var gaps []client.Gap
	recvDone := make(chan struct{})
	go func() {
		defer close(recvDone)
		for ev := range sub.Events() {
			mu.Lock()
			if ev.Gap != nil {
				gaps = append(gaps, *ev.Gap)
			} else {
				got = append(got, seqOf(ev.Envelope))
			}
			mu.Unlock()
		}
	}()

	// Publisher: ~200/s, with ack; remember what was acked.
	var ackMu sync.Mutex
	var acked []int
	ackedCount := func() int { ackMu.Lock(); defer ackMu.Unlock(); return len(acked) }
	var failed atomic.Int32
	stopPub := make(chan struct{})
	pubDone := make(chan struct{})
	go func() {
		defer close(pubDone)
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for n := 0; ; n++ {
			select {
			case <-stopPub:
				return
			case <-tick.C:
			}
			pctx, cancel := context.WithTimeout(ctx, 15*time.Second)
			_, err := pub.Publish(pctx, ch, map[string]any{"n": n, "pub": "sdk_go_pub"}, client.PublishOptions{Ack: true})
			cancel()
			if err != nil {
				failed.Add(1)
				continue
			}
			ackMu.Lock()
			acked = append(acked, n)
			ackMu.Unlock()
		}
	}()

	time.Sleep(1500 * time.Millisecond)
	proxy.reject.Store(true)
	s.kill()
	killedAt := time.Now()
	s = restartServer(t, s, env...)
	subStates.waitState(t, client.StateReconnecting, 5*time.Second)
	before := ackedCount()
	waitUntil(t, 20*time.Second, func() bool { return ackedCount() >= before+100 }, "100 acked publishes after the restart")
	proxy.reject.Store(false)
	subStates.waitState(t, client.StateOpen, 15*time.Second)
	t.Logf("subscriber back after %v; %d events acked while it was away", time.Since(killedAt), ackedCount()-before)
	time.Sleep(1500 * time.Millisecond)
	close(stopPub)
	<-pubDone
	if len(acked) < 300 {
		t.Errorf("only %d publishes acked", len(acked))
	}

	// Every acked event arrives, in order, once.
	ackMu.Lock()
	defer ackMu.Unlock()
	last := acked[len(acked)-1]
	waitUntil(t, 10*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got) > 0 && got[len(got)-1] >= last
	}, "the last acked event reaching the subscriber")
	mu.Lock()
	defer mu.Unlock()
	seen := make(map[int]bool, len(got))
	for i, n := range got {
		if i > 0 && n <= got[i-1] {
			t.Errorf("sequence not strictly increasing at %d: %d after %d", i, n, got[i-1])
		}
		seen[n] = true
	}
	missing := 0
	for _, n := range acked {
		if !seen[n] {
			if missing < 10 {
				t.Errorf("acked event %d never reached the subscriber", n)
			}
			missing++
		}
	}
	if len(gaps) > 0 {
		t.Errorf("gaps reported: %+v", gaps)
	}
	t.Logf("published %d acked, %d failed at the crash; received %d; duplicates dropped %d; missing %d",
		len(acked), failed.Load(), len(got), subBus.Stats().Duplicates, missing)
}

// freezeProxy forwards TCP to target; freeze stops forwarding on the
// connections open at that moment without closing them: a half-open socket
// as a dead NAT or a suspended laptop leaves behind.
type freezeProxy struct {
	reject atomic.Bool // close new connections at once
	ln     net.Listener
	target string
	mu     sync.Mutex
	frozen []*atomic.Bool
	conns  []net.Conn
}

func newFreezeProxy(t *testing.T, target string) *freezeProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &freezeProxy{ln: ln, target: target}
	go p.serve()
	t.Cleanup(p.close)
	return p
}

func (p *freezeProxy) url() string { return "ws://" + p.ln.Addr().String() + "/" }

func (p *freezeProxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		if p.reject.Load() {
			c.Close()
			continue
		}
		u, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		f := &atomic.Bool{}
		p.mu.Lock()
		p.frozen = append(p.frozen, f)
		p.conns = append(p.conns, c, u)
		p.mu.Unlock()
		go pipeUnlessFrozen(u, c, f)
		go pipeUnlessFrozen(c, u, f)
	}
}

// pipeUnlessFrozen copies src to dst, dropping everything once frozen.
func pipeUnlessFrozen(dst, src net.Conn, frozen *atomic.Bool) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && !frozen.Load() {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if err == io.EOF && !frozen.Load() {
				if tc, ok := dst.(*net.TCPConn); ok {
					_ = tc.CloseWrite()
				}
			}
			return
		}
	}
}

func (p *freezeProxy) freeze() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, f := range p.frozen {
		f.Store(true)
	}
}

func (p *freezeProxy) close() {
	p.ln.Close()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
}

// TestSDKGoTakeover: a Bus whose connection went silent (the server still
// holds it open) notices with its ping, reconnects with its resume token
// and takes its id over at once, channels and all. Without the token the
// same id is CONFLICT; with it, a live holder of the id is closed (1008)
// and, knowing it was replaced, does not fight back.
func TestSDKGoTakeover(t *testing.T) {
	s := startServer(t)
	ctx := testCtx(t, 40*time.Second)
	proxy := newFreezeProxy(t, s.Addr)
	states := newStateLog()
	b := connectBus(t, proxy.url(), client.Config{ClientID: "sdk_go_half_open", PingInterval: 300 * time.Millisecond,
		Reconnect: client.Reconnect{MinDelay: 50 * time.Millisecond, MaxDelay: 300 * time.Millisecond}, OnState: states.on})
	sub, err := b.Join(ctx, "science:explore", client.JoinOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pub := connectBus(t, s.URL, client.Config{})
	if _, err := pub.Join(ctx, "science:explore", client.JoinOptions{}); err != nil {
		t.Fatal(err)
	}

	// Without the token, the id is taken.
	if _, err := client.Dial(ctx, s.URL, client.WithClientID("sdk_go_half_open")); asCode(err) != "CONFLICT" {
		t.Fatalf("a second connection without the token: %v, want CONFLICT", err)
	}

	proxy.freeze()
	frozeAt := time.Now()
	first, err := pub.Publish(ctx, "science:explore", map[string]any{"n": 1}, client.PublishOptions{Ack: true})
	if err != nil || first.Delivered != 1 {
		t.Fatalf("publish to the frozen member: %+v %v", first, err)
	}
	states.waitState(t, client.StateReconnecting, 5*time.Second)
	states.waitState(t, client.StateOpen, 10*time.Second)
	t.Logf("back %v after the freeze", time.Since(frozeAt))
	second, err := pub.Publish(ctx, "science:explore", map[string]any{"n": 2}, client.PublishOptions{Ack: true})
	// Delivered may still count the replaced connection while the server
	// finishes closing it; what matters is that the new one gets it.
	if err != nil || second.Delivered < 1 {
		t.Fatalf("publish after the takeover: %+v %v", second, err)
	}
	// The event the frozen socket swallowed is replayed, then the new one.
	if ev := nextEvent(t, sub, 5*time.Second); ev.ID != first.ID {
		t.Errorf("first after the takeover: %s, want the swallowed %s", ev.Raw, first.ID)
	}
	if ev := nextEvent(t, sub, 5*time.Second); ev.ID != second.ID {
		t.Errorf("second after the takeover: %s, want %s", ev.Raw, second.ID)
	}

	// A live Bus whose id is taken over with its token closes for good.
	c, err := client.Dial(ctx, s.URL, client.WithClientID("sdk_go_half_open"), client.WithParam("resume_token", b.ResumeToken()))
	if err != nil {
		t.Fatalf("takeover with the resume token: %v", err)
	}
	defer c.Close()
	states.waitState(t, client.StateClosed, 5*time.Second)
	if err := b.Err(); err == nil || !strings.Contains(err.Error(), "1008") {
		t.Errorf("replaced Bus's error: %v", err)
	}
	if _, ok := <-sub.Events(); ok {
		t.Error("events still open after the Bus was replaced")
	}
	if _, err := c.Command(ctx, "science", "general", "ping", nil); err != nil {
		t.Errorf("the new holder of the id: %v", err)
	}
}

// dropAll closes every proxied connection (both ends), as a network cut.
func (p *freezeProxy) dropAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

// TestSDKGoReplayGap: a subscriber away while more was published than the
// server keeps gets, on its resume, a Gap (replay_incomplete) before the
// replayed events, not a silent loss.
func TestSDKGoReplayGap(t *testing.T) {
	s := startServer(t, "ARQONBUS_HISTORY_SIZE=10")
	ctx := testCtx(t, 30*time.Second)
	proxy := newFreezeProxy(t, s.Addr)
	states := newStateLog()
	subBus := connectBus(t, proxy.url(), client.Config{Reconnect: client.Reconnect{MinDelay: 50 * time.Millisecond, MaxDelay: 200 * time.Millisecond}, OnState: states.on})
	sub, err := subBus.Join(ctx, "science:design", client.JoinOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pub := connectBus(t, s.URL, client.Config{})
	if _, err := pub.Join(ctx, "science:design", client.JoinOptions{}); err != nil {
		t.Fatal(err)
	}
	publish := func(n int) client.AckResult {
		a, err := pub.Publish(ctx, "science:design", map[string]any{"n": n}, client.PublishOptions{Ack: true})
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	first := publish(0)
	if ev := nextEvent(t, sub, 5*time.Second); ev.ID != first.ID {
		t.Fatalf("first event %s", ev.Raw)
	}
	proxy.reject.Store(true)
	proxy.dropAll()
	states.waitState(t, client.StateReconnecting, 5*time.Second)
	var acks []client.AckResult
	for n := 1; n <= 30; n++ {
		acks = append(acks, publish(n))
	}
	proxy.reject.Store(false)
	states.waitState(t, client.StateOpen, 10*time.Second)

	ev := nextEvent(t, sub, 5*time.Second)
	if ev.Gap == nil || ev.Gap.Reason != client.GapReplay || ev.Gap.Since != first.Position {
		t.Fatalf("first after the resume: %s gap %+v; want a replay gap since %s", ev.Raw, ev.Gap, first.Position)
	}
	t.Logf("gap %+v", *ev.Gap)
	// Then the newest events the server still kept, in order, to the last.
	prev := 0
	for {
		ev := nextEvent(t, sub, 5*time.Second)
		n := seqOf(ev.Envelope)
		if ev.Gap != nil || n <= prev {
			t.Fatalf("after the gap: %s gap %+v (previous n %d)", ev.Raw, ev.Gap, prev)
		}
		prev = n
		if n == 30 {
			break
		}
	}
	// What the gap names is what history no longer has.
	page, err := subBus.History(ctx, "science:design", client.HistoryOptions{Limit: 100})
	if err != nil || len(page.Entries) != 10 || page.Entries[0].Position != acks[20].Position {
		t.Errorf("history: %d entries, %v", len(page.Entries), err)
	}
}
