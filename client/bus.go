package client

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
)

// State is where a Bus stands.
type State int

const (
	// StateConnecting: the first connection is being made (Connect).
	StateConnecting State = iota
	// StateOpen: connected, welcomed, every channel joined.
	StateOpen
	// StateReconnecting: the connection dropped; the Bus is getting a new one.
	StateReconnecting
	// StateClosed: for good (Close, reconnect disabled, or the id was taken over).
	StateClosed
)

func (s State) String() string {
	switch s {
	case StateConnecting:
		return "connecting"
	case StateOpen:
		return "open"
	case StateReconnecting:
		return "reconnecting"
	case StateClosed:
		return "closed"
	}
	return fmt.Sprintf("State(%d)", int(s))
}

var (
	// ErrDisconnected fails a call whose answer was still due when the
	// connection dropped. The server may or may not have acted on it.
	ErrDisconnected = errors.New("arqonbus: connection lost before the answer arrived")
	// ErrBusClosed is returned by calls on a closed Bus.
	ErrBusClosed = errors.New("arqonbus: bus closed")
)

// Reconnect configures reconnection. The zero value reconnects with the
// default delays.
type Reconnect struct {
	// Disabled makes the Bus close (StateClosed) when its connection drops.
	Disabled bool
	// MinDelay is the backoff's base (default 100 ms).
	MinDelay time.Duration
	// MaxDelay caps the backoff (default 10 s).
	MaxDelay time.Duration
}

// Config configures Connect. Every field is optional.
type Config struct {
	// ClientID is the id to connect as; default arq_<16 random hex digits>.
	ClientID string
	// ClientType is human (server default), ai-agent, dashboard or service.
	ClientType string
	// Token is a JWT for servers that require one.
	Token string
	// Personality, ScreenName: identity details sent on the upgrade.
	Personality string
	ScreenName  string
	// Params are more upgrade query parameters (avatar, admin_token, ...).
	Params map[string]string
	// ResumeToken lets a new process take over the id of a previous one whose
	// connection the server may still hold (see Bus.ResumeToken).
	ResumeToken string

	Reconnect Reconnect
	// DialTimeout bounds one connection attempt, upgrade and welcome (default 5 s).
	DialTimeout time.Duration
	// CommandTimeout bounds a wait for an answer when the call's context has
	// no earlier deadline (default 10 s).
	CommandTimeout time.Duration
	// EventBuffer is each Subscription's buffer (default 1024). See Subscription.
	EventBuffer int
	// OverflowWait is how long the reader waits for room in a full
	// Subscription buffer before it drops events into a Gap (default 1 s;
	// negative: never wait). The whole connection waits meanwhile.
	OverflowWait time.Duration
	// PrivateBuffer is the buffer of Private() (default 1024); private
	// messages that find it full are dropped and counted (Stats).
	PrivateBuffer int
	// PingInterval: after this long without receiving anything the Bus sends
	// a ping command, and drops the connection (then reconnects) when no
	// answer comes within another PingInterval. This finds a dead peer that
	// TCP would not report for minutes. Default 15 s; negative disables.
	PingInterval time.Duration
	// HandlerTimeout bounds each command handler's context (default 10 s).
	HandlerTimeout time.Duration
	// MaxHandlers bounds the handler calls running at once (default 64); a
	// command beyond it is answered UNAVAILABLE at once rather than queued,
	// so a slow handler never stalls the connection's reader.
	MaxHandlers int

	// OnState hears every state change, with the error that caused it (nil
	// for StateOpen and for Close). It runs on the Bus's own goroutine: it
	// must return quickly and must not call the Bus.
	OnState func(State, error)
	// OnError hears server errors that answer nothing the Bus waits for
	// (for example a refused publish sent without Ack).
	OnError func(*Error)
}

func (c *Config) defaults() {
	if c.ClientID == "" {
		var b [8]byte
		_, _ = rand.Read(b[:])
		c.ClientID = "arq_" + hex.EncodeToString(b[:])
	}
	if c.Reconnect.MinDelay <= 0 {
		c.Reconnect.MinDelay = 100 * time.Millisecond
	}
	if c.Reconnect.MaxDelay <= 0 {
		c.Reconnect.MaxDelay = 10 * time.Second
	}
	c.Reconnect.MaxDelay = max(c.Reconnect.MaxDelay, c.Reconnect.MinDelay)
	if c.DialTimeout <= 0 {
		c.DialTimeout = 5 * time.Second
	}
	if c.CommandTimeout <= 0 {
		c.CommandTimeout = 10 * time.Second
	}
	if c.EventBuffer <= 0 {
		c.EventBuffer = 1024
	}
	if c.OverflowWait == 0 {
		c.OverflowWait = time.Second
	}
	if c.PrivateBuffer <= 0 {
		c.PrivateBuffer = 1024
	}
	if c.PingInterval == 0 {
		c.PingInterval = 15 * time.Second
	}
	if c.HandlerTimeout <= 0 {
		c.HandlerTimeout = 10 * time.Second
	}
	if c.MaxHandlers <= 0 {
		c.MaxHandlers = 64
	}
}

// backoff is the delay before reconnect attempt n (0-based): full jitter
// over an exponentially growing window.
func backoff(n int, minDelay, maxDelay time.Duration) time.Duration {
	window := maxDelay
	if n < 30 {
		window = min(maxDelay, minDelay<<n)
	}
	return mrand.N(window + 1)
}

// HandlerFunc answers one command sent to a channel the Bus handles it on.
// params is payload.parameters (may be nil), env the command envelope. The
// returned value becomes result (status success); an error answers status
// error, with its Code when it is an *Error, INTERNAL otherwise.
type HandlerFunc func(ctx context.Context, params json.RawMessage, env Envelope) (any, error)

// Bus is the high-level client: one logical connection to ArqonBus that
// survives dropped connections and server restarts. Conn (client.go) stays the
// low-level building block: a Bus owns one Conn at a time and reads it from
// one goroutine of its own.
//
//	bus, err := client.Connect(ctx, "ws://127.0.0.1:9100/", client.Config{ClientType: "service"})
//	sub, err := bus.Join(ctx, "science:general", client.JoinOptions{})
//	for ev := range sub.Events() { ... }
//
// What a reconnect does, and why:
//
//   - The Bus always sends a client_id (it makes up arq_<random> when none is
//     configured) so that the server sees the same client after a reconnect,
//     and it sends the resume_token of the last welcome so that the new
//     connection takes the id over at once, even while the server still holds
//     the old, half-open one (without it the server answers CONFLICT until its
//     idle timeout).
//   - It waits between attempts with exponential backoff and full jitter
//     (a random delay in [0, min(MaxDelay, MinDelay*2^attempt)]), so that the
//     clients of a restarted server do not all come back in the same instant.
//   - Before it reports StateOpen again it rejoins every channel with since =
//     the last position it saw there and the same filter and handled
//     commands, so that publishes made right after a reconnect are not
//     refused (FORBIDDEN) and handlers are reachable again.
//   - It drops any event whose position is not after the last one seen on its
//     channel, so a replay that overlaps what was already delivered costs the
//     application nothing: each event reaches it once, in order.
//   - Calls waiting for an answer on the dropped connection (commands, acked
//     publishes, joins) fail at once with ErrDisconnected: whether the server
//     acted on them is unknown, and only the caller can decide whether to
//     retry. New calls made while reconnecting wait for the connection,
//     within their context.
//   - A replay the server could not complete (complete:false: history no
//     longer kept, or too big to send at once) is not swallowed: the
//     subscription's stream carries a Gap saying which positions are missing,
//     before the replayed events, so the application can page them with
//     History or accept the loss knowingly.
//   - The server's shutdown notice starts the reconnect (after the server's
//     own close, or 3 s); a close with 1008 saying "replaced" does not: another
//     connection took this id over with the resume token, and coming back
//     would fight the new owner.
//
// Its methods are safe for concurrent use.
type Bus struct {
	url string
	cfg Config

	mu      sync.Mutex
	state   State
	link    *link         // the open connection; nil unless StateOpen
	opened  chan struct{} // closed when the Bus (re)opens; replaced when it drops
	token   string        // resume_token of the last welcome
	nodeID  string
	chans   map[string]*channelState // by "room:channel"
	closed  bool
	lastErr error

	closing  chan struct{} // closed by Close
	done     chan struct{} // closed when the manager goroutine has ended
	ctx      context.Context
	cancel   context.CancelFunc // ends handler contexts at Close
	private  chan Envelope
	privOnce sync.Once
	handlers chan struct{} // semaphore of running handler calls
	hwg      sync.WaitGroup

	privateDropped atomic.Uint64
	duplicates     atomic.Uint64
	reconnects     atomic.Uint64
}

// channelState is what the Bus keeps per joined channel to rejoin it.
type channelState struct {
	room, channel string
	filter        map[string]any
	handlers      map[string]HandlerFunc
	sub           *Subscription // nil when joined only to handle commands

	last    position // last position seen (valid when hasLast)
	hasLast bool
	since   string // what to send as since on the next join ("" for none)

	holding int        // joins with since in flight: hold events until answered
	held    []Envelope // events received meanwhile, in order
}

func (cs *channelState) name() string { return cs.room + ":" + cs.channel }

// Connect makes the first connection and returns once the server welcomed
// it. It does not retry: a wrong URL, token or a taken id show at once.
// Reconnection applies to every later drop.
func Connect(ctx context.Context, url string, cfg Config) (*Bus, error) {
	cfg.defaults()
	b := &Bus{
		url:      url,
		cfg:      cfg,
		opened:   make(chan struct{}),
		token:    cfg.ResumeToken,
		chans:    map[string]*channelState{},
		closing:  make(chan struct{}),
		done:     make(chan struct{}),
		private:  make(chan Envelope, cfg.PrivateBuffer),
		handlers: make(chan struct{}, cfg.MaxHandlers),
	}
	b.ctx, b.cancel = context.WithCancel(context.Background())
	b.setState(StateConnecting, nil)
	l, err := b.dial(ctx)
	if err != nil {
		b.cancel()
		b.setState(StateClosed, err)
		return nil, err
	}
	b.setOpen(l)
	go b.run(l)
	return b, nil
}

// ClientID is the Bus's client id, the same on every connection.
func (b *Bus) ClientID() string { return b.cfg.ClientID }

// NodeID is the id of the node the current (or last) connection is on.
func (b *Bus) NodeID() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.nodeID
}

// ResumeToken is the resume_token of the last welcome ("" if the server gives
// none). A process that saves it can pass it as Config.ResumeToken after a
// crash to take its id over from the connection the server still holds.
func (b *Bus) ResumeToken() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.token
}

// State is the Bus's current state.
func (b *Bus) State() State {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.state
}

// Err is why the Bus closed (nil after Close, or while it is not closed).
func (b *Bus) Err() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.state != StateClosed {
		return nil
	}
	return b.lastErr
}

// Done is closed once the Bus is closed for good.
func (b *Bus) Done() <-chan struct{} { return b.done }

// Stats counts what the Bus did on its own.
type Stats struct {
	Reconnects     uint64 // successful reconnections
	Duplicates     uint64 // events dropped as already seen (replay overlap)
	PrivateDropped uint64 // private messages dropped on a full Private() buffer
}

// Stats returns the Bus's counters.
func (b *Bus) Stats() Stats {
	return Stats{b.reconnects.Load(), b.duplicates.Load(), b.privateDropped.Load()}
}

// Private delivers the private messages sent to this client, in order. The
// channel is bounded (Config.PrivateBuffer): a message that finds it full is
// dropped and counted in Stats, because private messages have no position
// to resume from and the reader must never wait on the application. It is
// closed by Close.
func (b *Bus) Private() <-chan Envelope { return b.private }

func (b *Bus) setState(s State, err error) {
	b.mu.Lock()
	b.state, b.lastErr = s, err
	b.mu.Unlock()
	if b.cfg.OnState != nil {
		b.cfg.OnState(s, err)
	}
}

// setOpen makes l the current connection and wakes the calls waiting for it.
func (b *Bus) setOpen(l *link) {
	b.mu.Lock()
	b.link = l
	close(b.opened)
	b.mu.Unlock()
	b.setState(StateOpen, nil)
}

// current waits until the Bus is open and returns its connection.
func (b *Bus) current(ctx context.Context) (*link, error) {
	for {
		b.mu.Lock()
		if b.closed {
			b.mu.Unlock()
			return nil, ErrBusClosed
		}
		l, opened := b.link, b.opened
		b.mu.Unlock()
		if l != nil {
			return l, nil
		}
		select {
		case <-opened:
		case <-b.closing:
			return nil, ErrBusClosed
		case <-ctx.Done():
			return nil, fmt.Errorf("arqonbus: waiting for the connection: %w", ctx.Err())
		}
	}
}

// Close closes the connection, ends every subscription's Events channel and
// Private(), and stops reconnecting. Calls in flight fail with ErrBusClosed
// or ErrDisconnected. Safe to call more than once.
func (b *Bus) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		<-b.done
		return nil
	}
	b.closed = true
	b.mu.Unlock()
	close(b.closing)
	<-b.done
	return nil
}

// dial makes one connection: upgrade with the identity and resume token,
// welcome, then the link's reader and monitor goroutines.
func (b *Bus) dial(ctx context.Context) (*link, error) {
	opts := []Option{WithClientID(b.cfg.ClientID), WithDialTimeout(b.cfg.DialTimeout), WithWelcomeTimeout(b.cfg.DialTimeout)}
	add := func(k, v string) {
		if v != "" {
			opts = append(opts, WithParam(k, v))
		}
	}
	add("client_type", b.cfg.ClientType)
	add("token", b.cfg.Token)
	add("personality", b.cfg.Personality)
	add("screen_name", b.cfg.ScreenName)
	for k, v := range b.cfg.Params {
		add(k, v)
	}
	b.mu.Lock()
	add("resume_token", b.token)
	b.mu.Unlock()
	dctx, cancel := context.WithTimeout(ctx, 2*b.cfg.DialTimeout)
	defer cancel()
	c, err := Dial(dctx, b.url, opts...)
	if err != nil {
		return nil, err
	}
	var w struct {
		NodeID      string `json:"node_id"`
		ResumeToken string `json:"resume_token"`
	}
	_ = json.Unmarshal(c.Welcome().Payload, &w)
	b.mu.Lock()
	b.nodeID = w.NodeID
	if w.ResumeToken != "" {
		b.token = w.ResumeToken
	}
	b.mu.Unlock()
	l := &link{
		conn:     c,
		pending:  map[string]*call{},
		readDone: make(chan struct{}),
		shutdown: make(chan struct{}),
	}
	l.touch()
	go b.read(l)
	go b.monitor(l)
	return l, nil
}

// run is the manager: it waits for the connection to end, then reconnects,
// until Close or a drop it must not recover from.
func (b *Bus) run(l *link) {
	defer close(b.done)
	for {
		select {
		case <-l.readDone:
		case <-b.closing:
			l.conn.Close()
			<-l.readDone
		}
		b.mu.Lock()
		b.link = nil
		b.opened = make(chan struct{})
		closed := b.closed
		b.mu.Unlock()
		cause := dropCause(l.conn)
		if closed {
			b.shut(nil)
			return
		}
		if code, reason := l.conn.CloseCode(); code == ws.StatusPolicyViolation && strings.Contains(reason, "replaced") {
			// Another connection took this id over with our resume token:
			// coming back would fight the new owner. Other 1008 closes (a
			// node re-claiming ids after a Redis outage, too many protocol
			// violations) are reconnected from, with backoff.
			b.shut(fmt.Errorf("arqonbus: server closed the connection with 1008 (%s): not reconnecting", reason))
			return
		}
		if b.cfg.Reconnect.Disabled {
			b.shut(cause)
			return
		}
		b.setState(StateReconnecting, cause)
		if l = b.reconnect(); l == nil {
			b.shut(nil)
			return
		}
		b.reconnects.Add(1)
		b.setOpen(l)
	}
}

func dropCause(c *Conn) error {
	if code, reason := c.CloseCode(); code != 0 {
		return fmt.Errorf("%w: server closed %d %q", ErrDisconnected, code, reason)
	}
	if err := c.Err(); err != nil && !errors.Is(err, ErrClosed) {
		return fmt.Errorf("%w: %v", ErrDisconnected, err)
	}
	return ErrDisconnected
}

// reconnect dials with backoff until it has a connection with every channel
// rejoined, or the Bus is closed (nil).
func (b *Bus) reconnect() *link {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-b.closing:
			cancel()
		case <-ctx.Done():
		}
	}()
	for attempt := 0; ; attempt++ {
		t := time.NewTimer(backoff(attempt, b.cfg.Reconnect.MinDelay, b.cfg.Reconnect.MaxDelay))
		select {
		case <-t.C:
		case <-b.closing:
			t.Stop()
			return nil
		}
		l, err := b.dial(ctx)
		if err != nil {
			continue
		}
		if err := b.rejoinAll(ctx, l); err != nil {
			l.conn.Abort()
			<-l.readDone
			continue
		}
		return l
	}
}

// rejoinAll joins every channel on l, all at once, and waits for the
// answers. A connection error means try another connection; a server error
// for one channel ends that subscription (its Err says why).
func (b *Bus) rejoinAll(ctx context.Context, l *link) error {
	b.mu.Lock()
	all := make([]*channelState, 0, len(b.chans))
	for _, cs := range b.chans {
		all = append(all, cs)
	}
	b.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, b.cfg.CommandTimeout)
	defer cancel()
	errs := make([]error, len(all))
	var wg sync.WaitGroup
	for i, cs := range all {
		wg.Go(func() { errs[i] = b.sendJoin(ctx, l, cs) })
	}
	wg.Wait()
	for i, err := range errs {
		var e *Error
		switch {
		case err == nil:
		case errors.As(err, &e):
			b.dropChannel(all[i], fmt.Errorf("arqonbus: rejoining %s after a reconnect: %w", all[i].name(), err))
		default:
			return err
		}
	}
	return nil
}

// dropChannel forgets cs and ends its subscription with err.
func (b *Bus) dropChannel(cs *channelState, err error) {
	b.mu.Lock()
	if b.chans[cs.name()] == cs {
		delete(b.chans, cs.name())
	}
	sub := cs.sub
	b.mu.Unlock()
	if sub != nil {
		sub.close(err)
	}
}

// shut ends the Bus: subscriptions and Private() close, handlers' contexts
// end, the state becomes closed.
func (b *Bus) shut(err error) {
	b.mu.Lock()
	b.closed = true
	subs := make([]*Subscription, 0, len(b.chans))
	for _, cs := range b.chans {
		if cs.sub != nil {
			subs = append(subs, cs.sub)
		}
	}
	b.mu.Unlock()
	b.cancel()
	for _, s := range subs {
		if err != nil {
			s.close(err)
		} else {
			s.close(ErrBusClosed)
		}
	}
	b.privOnce.Do(func() { close(b.private) })
	b.setState(StateClosed, err)
}

// link is one connection with the calls waiting for answers on it.
type link struct {
	conn     *Conn
	mu       sync.Mutex
	pending  map[string]*call
	dead     bool
	readDone chan struct{} // closed when read has drained the connection
	shutdown chan struct{} // closed on the server's shutdown notice
	shutOnce sync.Once
	lastRecv atomic.Int64 // unix nanos of the last envelope received
}

// call is one request waiting for its answer. hook, when set, runs on the
// reader goroutine before the caller wakes (even if the caller gave up), so
// that a join's answer is applied in order with the events around it.
type call struct {
	ch   chan callResult
	hook func(Envelope, error)
}

type callResult struct {
	env Envelope
	err error
}

func (l *link) touch() { l.lastRecv.Store(time.Now().UnixNano()) }

// do sends env and waits for the command_response or error whose
// request_id is env.ID.
func (l *link) do(ctx context.Context, env Envelope, hook func(Envelope, error)) (Envelope, error) {
	c := &call{ch: make(chan callResult, 1), hook: hook}
	l.mu.Lock()
	if l.dead {
		l.mu.Unlock()
		if hook != nil {
			hook(Envelope{}, ErrDisconnected)
		}
		return Envelope{}, ErrDisconnected
	}
	l.pending[env.ID] = c
	l.mu.Unlock()
	if err := l.conn.Send(env); err != nil {
		// The reader sees the broken connection too and fails the call
		// (running its hook) when it ends.
		l.conn.Abort()
	}
	select {
	case r := <-c.ch:
		return r.env, r.err
	case <-ctx.Done():
		if hook == nil {
			l.mu.Lock()
			delete(l.pending, env.ID)
			l.mu.Unlock()
		}
		return Envelope{}, ctx.Err()
	}
}

// answer hands env to the call waiting for id; false if there is none.
func (l *link) answer(id string, env Envelope) bool {
	l.mu.Lock()
	c := l.pending[id]
	delete(l.pending, id)
	l.mu.Unlock()
	if c == nil {
		return false
	}
	var err error
	if e := AsError(env); e != nil {
		err = e
	}
	if c.hook != nil {
		c.hook(env, err)
	}
	c.ch <- callResult{env, err}
	return true
}

// fail ends every call still waiting: the connection is gone.
func (l *link) fail() {
	l.mu.Lock()
	l.dead = true
	pending := l.pending
	l.pending = nil
	l.mu.Unlock()
	for _, c := range pending {
		if c.hook != nil {
			c.hook(Envelope{}, ErrDisconnected)
		}
		c.ch <- callResult{err: ErrDisconnected}
	}
}

// read is the connection's only reader: it routes answers to their calls,
// events to their subscriptions, commands to handlers. Nothing in it waits
// on the application.
func (b *Bus) read(l *link) {
	defer func() {
		l.fail()
		close(l.readDone)
	}()
	for {
		env, err := l.conn.Next(context.Background())
		if errors.Is(err, ErrClosed) {
			return
		}
		if err != nil {
			continue // not an envelope: nothing to route
		}
		l.touch()
		switch env.Type {
		case "command_response", "error":
			if id := env.RequestID(); id != "" && l.answer(id, env) {
				continue
			}
			if e := AsError(env); e != nil && env.Type == "error" && b.cfg.OnError != nil {
				b.cfg.OnError(e)
			}
		case "private":
			select {
			case b.private <- env:
			default:
				b.privateDropped.Add(1)
			}
		case "command":
			b.onCommand(l, env)
		case "system":
			if env.Room == "*" {
				var ev string
				if env.Channel == "broadcast" && env.PayloadField("event", &ev) && ev == "shutdown" {
					l.shutOnce.Do(func() { close(l.shutdown) })
				}
				continue
			}
			b.onEvent(env)
		default:
			b.onEvent(env)
		}
	}
}

// monitor pings a silent connection and drops it when the ping goes
// unanswered, and drops a connection whose server announced its shutdown if
// the server does not close it soon.
func (b *Bus) monitor(l *link) {
	var tick <-chan time.Time
	if b.cfg.PingInterval > 0 {
		t := time.NewTicker(b.cfg.PingInterval / 2)
		defer t.Stop()
		tick = t.C
	}
	pinging := false
	pinged := make(chan error, 1)
	for {
		select {
		case <-l.readDone:
			return
		case <-l.shutdown:
			// The server closes with 1001 right after its notice; give it
			// a moment to, so that nothing it still sends is cut off.
			select {
			case <-l.readDone:
			case <-time.After(3 * time.Second):
				l.conn.Abort()
			}
			return
		case err := <-pinged:
			pinging = false
			if errors.Is(err, context.DeadlineExceeded) {
				l.conn.Abort()
			}
		case <-tick:
			idle := time.Since(time.Unix(0, l.lastRecv.Load()))
			if pinging || idle < b.cfg.PingInterval {
				continue
			}
			pinging = true
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), b.cfg.PingInterval)
				defer cancel()
				_, err := l.do(ctx, b.commandEnvelope("ping", nil, "science", "general"), nil)
				pinged <- err
			}()
		}
	}
}

// splitName splits "room:channel".
func splitName(name string) (room, channel string, err error) {
	room, channel, ok := strings.Cut(name, ":")
	if !ok || room == "" || channel == "" {
		return "", "", fmt.Errorf("arqonbus: %q is not room:channel", name)
	}
	return room, channel, nil
}

// commandEnvelope builds a command envelope.
func (b *Bus) commandEnvelope(name string, params any, room, channel string) Envelope {
	if params == nil {
		params = map[string]any{}
	}
	p, _ := json.Marshal(struct {
		Command    string `json:"command"`
		Parameters any    `json:"parameters"`
	}{name, params})
	return Envelope{ID: NewID("cmd"), Type: "command", Room: room, Channel: channel, Payload: p}
}

// withTimeout bounds ctx by CommandTimeout unless it ends sooner anyway.
func (b *Bus) withTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) <= b.cfg.CommandTimeout {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, b.cfg.CommandTimeout)
}

// request waits for the connection, sends env and waits for its answer.
// A server error comes back as *Error.
func (b *Bus) request(ctx context.Context, env Envelope, what string) (json.RawMessage, error) {
	ctx, cancel := b.withTimeout(ctx)
	defer cancel()
	l, err := b.current(ctx)
	if err != nil {
		return nil, err
	}
	ans, err := l.do(ctx, env, nil)
	if err != nil {
		var e *Error
		if errors.As(err, &e) || errors.Is(err, ErrDisconnected) {
			return nil, err
		}
		return nil, fmt.Errorf("arqonbus: no answer to %s: %w", what, err)
	}
	var p struct {
		Result json.RawMessage `json:"result"`
	}
	_ = json.Unmarshal(ans.Payload, &p)
	return p.Result, nil
}

// CommandOptions says where a command goes.
type CommandOptions struct {
	// Room is the target room, or "room:channel". Default "science".
	Room string
	// Channel is the target channel. Default "general". Commands served by
	// a handler go to the channel it handles them on; built-ins read
	// their own room and channel parameters.
	Channel string
}

// Command runs a command (a built-in, or one a handler serves on the target
// channel) and returns its result. A refusal comes back as *Error (Code
// COMMAND_NOT_FOUND, TIMEOUT, ...). No answer within the context or
// CommandTimeout is an error wrapping context.DeadlineExceeded; a drop is
// ErrDisconnected.
func (b *Bus) Command(ctx context.Context, name string, params any, opts CommandOptions) (json.RawMessage, error) {
	room, channel := opts.Room, opts.Channel
	if r, c, ok := strings.Cut(room, ":"); ok {
		room, channel = r, c
	}
	if room == "" {
		room = "science"
	}
	if channel == "" {
		channel = "general"
	}
	return b.request(ctx, b.commandEnvelope(name, params, room, channel), name)
}

// PublishOptions tunes Publish.
type PublishOptions struct {
	// Metadata goes as the envelope's metadata (filters match on it).
	Metadata map[string]any
	// Ack waits for the server's confirmation that the event was routed
	// (and persisted, when the server persists synchronously).
	Ack bool
}

// AckResult is what Publish learned. Without Ack only ID is set.
type AckResult struct {
	ID        string `json:"-"`
	Routed    bool   `json:"routed"`
	Delivered int    `json:"delivered"`
	Position  string `json:"position"`
	Persisted bool   `json:"persisted"`
}

// Publish sends an event to "room:channel", which the Bus must have joined.
// payload must encode to a JSON object. Without Ack it returns once the
// event is written (a refusal then reaches Config.OnError); with Ack it
// waits for the server's answer. An acked publish cut off by a drop fails
// with ErrDisconnected: it may or may not have been routed.
func (b *Bus) Publish(ctx context.Context, name string, payload any, opts PublishOptions) (AckResult, error) {
	room, channel, err := splitName(name)
	if err != nil {
		return AckResult{}, err
	}
	p, err := json.Marshal(payload)
	if err != nil {
		return AckResult{}, err
	}
	env := Envelope{ID: NewID("msg"), Type: "event", Room: room, Channel: channel, Payload: p}
	meta := opts.Metadata
	if opts.Ack {
		meta = make(map[string]any, len(opts.Metadata)+1)
		for k, v := range opts.Metadata {
			meta[k] = v
		}
		meta["ack"] = true
	}
	if len(meta) > 0 {
		if env.Metadata, err = json.Marshal(meta); err != nil {
			return AckResult{}, err
		}
	}
	res := AckResult{ID: env.ID}
	if !opts.Ack {
		l, err := b.current(ctx)
		if err != nil {
			return res, err
		}
		if err := l.conn.Send(env); err != nil {
			return res, fmt.Errorf("%w: %v", ErrDisconnected, err)
		}
		return res, nil
	}
	raw, err := b.request(ctx, env, "publish")
	if err != nil {
		return res, err
	}
	_ = json.Unmarshal(raw, &res)
	return res, nil
}

// SendPrivate sends payload (a JSON object) to the client target alone and
// waits for the server's confirmation; an absent target is an *Error with
// Code TARGET_NOT_FOUND.
func (b *Bus) SendPrivate(ctx context.Context, target string, payload any) error {
	raw, err := json.Marshal(payload)
	if err != nil {
		return err
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil || m == nil {
		return fmt.Errorf("arqonbus: a private payload must be a JSON object")
	}
	m["target"], _ = json.Marshal(target)
	p, _ := json.Marshal(m)
	env := Envelope{ID: NewID("msg"), Type: "private", Payload: p, Metadata: json.RawMessage(`{"ack":true}`)}
	_, err = b.request(ctx, env, "private message")
	return err
}

// HistoryOptions selects history entries.
type HistoryOptions struct {
	Limit int    // default 50 (server), at most 1000
	Since string // only after this position or RFC 3339 time
	Until string // only up to this position or time, included
}

// HistoryEntry is one stored event with its position.
type HistoryEntry struct {
	Position string
	Envelope Envelope
}

// HistoryPage is one answer of History. With Since, the next (newer) page
// is since = NextSince; without, the previous (older) one is until = NextUntil.
type HistoryPage struct {
	Entries   []HistoryEntry
	More      bool
	NextSince string
	NextUntil string
}

// History reads a channel's stored events, oldest first.
func (b *Bus) History(ctx context.Context, name string, opts HistoryOptions) (HistoryPage, error) {
	room, channel, err := splitName(name)
	if err != nil {
		return HistoryPage{}, err
	}
	params := map[string]any{}
	if opts.Limit > 0 {
		params["limit"] = opts.Limit
	}
	if opts.Since != "" {
		params["since"] = opts.Since
	}
	if opts.Until != "" {
		params["until"] = opts.Until
	}
	raw, err := b.request(ctx, b.commandEnvelope("history", params, room, channel), "history")
	if err != nil {
		return HistoryPage{}, err
	}
	var r struct {
		Entries []struct {
			Position string          `json:"position"`
			Envelope json.RawMessage `json:"envelope"`
		} `json:"entries"`
		More      bool   `json:"more"`
		NextSince string `json:"next_since"`
		NextUntil string `json:"next_until"`
	}
	if err := json.Unmarshal(raw, &r); err != nil {
		return HistoryPage{}, fmt.Errorf("arqonbus: history answer: %w", err)
	}
	page := HistoryPage{More: r.More, NextSince: r.NextSince, NextUntil: r.NextUntil}
	for _, e := range r.Entries {
		he := HistoryEntry{Position: e.Position}
		_ = json.Unmarshal(e.Envelope, &he.Envelope)
		he.Envelope.Raw = e.Envelope
		page.Entries = append(page.Entries, he)
	}
	return page, nil
}
