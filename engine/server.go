package engine

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
	"github.com/panjf2000/gnet/v2"
)

// Config holds the engine's settings. Zero values take the defaults below.
type Config struct {
	Addr              string        // host:port to listen on
	Loops             int           // event loops; default DefaultLoops
	MaxConnections    int           // connections accepted at once; more get HTTP 503
	MaxMessageSize    int           // bytes in one message, fragments included (1009 beyond)
	MaxOutboundBytes  int           // unsent bytes before a slow consumer is closed
	MaxRequestedBytes int           // asked-for bytes (WriteRequested) allowed above MaxOutboundBytes while read; default 4x
	HandshakeTimeout  time.Duration // from accept to a complete upgrade request
	PingInterval      time.Duration // silence after which the server pings
	IdleTimeout       time.Duration // silence after which the connection is closed
	FrameTimeout      time.Duration // from a frame's (or fragmented message's) first byte to its last (1008 beyond)
	MaxLoopInboxBytes int           // frames queued for one event loop (plus a small cost per delivery); beyond, dropped
	// WriteCoalesce is how long after a write to a connection its next fan-out frames may wait, so
	// that a busy subscriber gets the frames of that span in one writev instead of a syscall each;
	// one that gets two frames a span or more waits three spans (see busyFrames). A connection
	// quiet for a span, answers and frames for one client alone are written at once.
	// 0: the default (1ms); negative: never hold.
	WriteCoalesce time.Duration
	Logger        *slog.Logger
	// OnRouted, if set, hears how long each delivery waited between being
	// posted to a loop and its frames being written: once per message per
	// loop, never per recipient.
	OnRouted func(time.Duration)
}

// DefaultLoops is how many event loops serve when none is configured: one per
// CPU but one, and at least one. A message read on one loop for a connection
// on another wakes that loop too (an eventfd write, a second thread
// scheduled): measured on two CPUs shared with a load generator, one loop
// spent a third less CPU per one-to-one message than two (36 against 55 µs,
// p99 0.6 against 2.1 ms) and as much per fan-out delivery. The CPU left over
// serves the Go runtime (timers, the collector, the Redis client) and the
// kernel's network work.
func DefaultLoops() int { return max(1, runtime.NumCPU()-1) }

func (c *Config) setDefaults() {
	if c.Loops <= 0 {
		c.Loops = DefaultLoops()
	}
	if c.MaxConnections <= 0 {
		c.MaxConnections = 10000
	}
	if c.MaxMessageSize <= 0 {
		c.MaxMessageSize = 1 << 20
	}
	if c.MaxOutboundBytes <= 0 {
		c.MaxOutboundBytes = 4 << 20
	}
	if c.MaxRequestedBytes <= 0 {
		c.MaxRequestedBytes = 4 * c.MaxOutboundBytes
	}
	if c.HandshakeTimeout <= 0 {
		c.HandshakeTimeout = 10 * time.Second
	}
	if c.PingInterval <= 0 {
		c.PingInterval = 25 * time.Second
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = 60 * time.Second
	}
	if c.FrameTimeout <= 0 {
		// Shorter than the idle timeout, so trickling bytes cannot hold a
		// connection longer than silence could; long enough that a link of
		// 35 KB/s still sends a 1 MiB message.
		c.FrameTimeout = 30 * time.Second
	}
	if c.WriteCoalesce == 0 {
		c.WriteCoalesce = time.Millisecond
	}
	if c.MaxLoopInboxBytes <= 0 {
		// Only a stalled or overwhelmed loop comes near it: a drain empties
		// the inbox every time the loop gets to it.
		c.MaxLoopInboxBytes = 64 << 20
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Handler is what the engine calls, always on the connection's event loop.
// Handlers must not block: no network, disk or long-held locks.
type Handler interface {
	// Upgrade decides on an upgrade request. A non-nil error refuses it: a
	// *Reject chooses the HTTP status, anything else gets 400.
	Upgrade(c *Conn, r *Request) error
	// Open runs once the handshake response is queued.
	Open(c *Conn)
	// Message gets one complete text message, valid only until it returns.
	Message(c *Conn, msg []byte)
	// Close runs once for every connection that was opened.
	Close(c *Conn)
}

// Request is the client's upgrade request.
type Request struct {
	URI        string
	Query      url.Values
	Header     http.Header
	RemoteAddr string
}

// Reject refuses an upgrade with an HTTP status.
type Reject struct {
	Status int
	Reason string
}

func (r *Reject) Error() string { return fmt.Sprintf("%d %s", r.Status, r.Reason) }

// Stats are the engine's counters, read atomically.
type Stats struct {
	Connections   int64  // open now (upgraded or not)
	Accepted      uint64 // TCP connections accepted in all
	Refused       uint64 // refused at the connection cap
	MessagesIn    uint64 // complete text messages received
	FramesOut     uint64 // frames written
	Deliveries    uint64 // frames handed to connections by deliveries
	SlowConsumers uint64 // closed for an outbound backlog over the bound
	ProtocolClose uint64 // closed for a protocol error
	Panics        uint64 // handler panics recovered
	InboxDropped  uint64 // frames (one per recipient) dropped because a loop's inbox was full
	Writes        uint64 // write and writev calls on client sockets: FramesOut / Writes is the coalescing
	Wakeups       uint64 // tasks posted to a loop from elsewhere, each waking it (an eventfd write)
}

type counters struct {
	connections   atomic.Int64
	accepted      atomic.Uint64
	refused       atomic.Uint64
	messagesIn    atomic.Uint64
	framesOut     atomic.Uint64
	deliveries    atomic.Uint64
	slowConsumers atomic.Uint64
	protocolClose atomic.Uint64
	panics        atomic.Uint64
	inboxDropped  atomic.Uint64
	writes        atomic.Uint64
	wakeups       atomic.Uint64
}

// Server runs the event loops for one listening address.
type Server struct {
	gnet.BuiltinEventEngine
	cfg     Config
	handler Handler
	log     *slog.Logger
	stats   counters
	start   time.Time

	eng      gnet.Engine
	ready    chan struct{}
	stopping atomic.Bool
	refusing atomic.Bool // draining: new connections get 503

	loopsMu sync.RWMutex
	loops   map[gnet.EventLoop]*Loop
}

// New makes a server; Run starts it.
func New(cfg Config, h Handler) *Server {
	cfg.setDefaults()
	return &Server{
		cfg:     cfg,
		handler: h,
		log:     cfg.Logger,
		start:   time.Now(),
		ready:   make(chan struct{}),
		loops:   make(map[gnet.EventLoop]*Loop),
	}
}

// Run listens and serves until Stop. It returns an error if the engine stops
// without being asked to (gnet stops itself when accept runs out of file
// descriptors, and returns nil: that is not a clean exit).
//
// Each event loop accepts on its own listener (SO_REUSEPORT), one connection
// at a time, and refuses it over the cap before it accepts the next: with a
// single acceptor, gnet accepts a storm's whole backlog before the loops can
// refuse any, so a storm would hold descriptors far beyond the cap, and
// running out of them stops the engine. Since SO_REUSEPORT would let a second
// server bind the same port and silently share its clients, a lock on the
// port (portLock) keeps the port to one server.
func (s *Server) Run() error {
	opts := []gnet.Option{
		gnet.WithMulticore(true),
		gnet.WithNumEventLoop(s.cfg.Loops),
		gnet.WithReuseAddr(true),
		gnet.WithTicker(true),
		gnet.WithTCPNoDelay(gnet.TCPNoDelay),
		gnet.WithLogger(gnetLogger{s.log}),
	}
	if _, port, err := net.SplitHostPort(s.cfg.Addr); err == nil && port != "0" {
		// Port 0 would give each loop's listener a port of its own.
		lock, err := portLock(port)
		if err != nil {
			return fmt.Errorf("engine on %s: %w", s.cfg.Addr, err)
		}
		defer lock.Close()
		opts = append(opts, gnet.WithReusePort(true))
	}
	err := gnet.Run(s, "tcp://"+s.cfg.Addr, opts...)
	if err != nil {
		return fmt.Errorf("engine on %s: %w", s.cfg.Addr, err)
	}
	if !s.stopping.Load() {
		return fmt.Errorf("engine on %s stopped unexpectedly", s.cfg.Addr)
	}
	return nil
}

// portLock holds a name in the abstract Unix socket namespace (private to
// the network namespace, gone with the process) for a TCP port: a second
// server on the same port fails here, as it would to bind without
// SO_REUSEPORT.
//
// A server that is stopping has closed its listeners some hundreds of
// milliseconds before it lets the lock go, and a restart (a supervisor, a
// test reusing the port) may come in between: so the lock is waited for up
// to portLockWait before the port counts as served.
func portLock(port string) (io.Closer, error) {
	deadline := time.Now().Add(portLockWait)
	for {
		l, err := net.Listen("unix", "@arqonbus-tcp-port-"+port)
		if err == nil {
			return l, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("port %s is already served by another server: %w", port, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// portLockWait bounds the wait for a stopping server's port lock.
const portLockWait = 3 * time.Second

// Ready is closed once the server accepts connections.
func (s *Server) Ready() <-chan struct{} { return s.ready }

// Stop stops accepting and closes every connection (gnet takes at least 500 ms).
func (s *Server) Stop(ctx context.Context) error {
	s.stopping.Store(true)
	select {
	case <-s.ready:
	default:
		return nil
	}
	return s.eng.Stop(ctx)
}

// StopAccepting makes the server answer new connections with HTTP 503 while
// the open ones carry on: a draining node lets the load balancer move new
// clients elsewhere.
func (s *Server) StopAccepting() { s.refusing.Store(true) }

// CloseAll sends every open connection the frame notice (when not nil), then
// a close frame with code and reason. It returns once the closes are queued
// on their loops.
func (s *Server) CloseAll(notice []byte, code ws.StatusCode, reason string) {
	s.loopsMu.RLock()
	defer s.loopsMu.RUnlock()
	for _, l := range s.loops {
		_ = l.forEachConn(func(c *Conn) {
			if notice != nil {
				c.Write(notice)
			}
			c.closeWith(code, reason)
		})
	}
}

// LoopsAlive reports whether every event loop ran its sweep lately (the
// sweep is posted each second): a loop stuck in a callback stops answering.
func (s *Server) LoopsAlive() bool {
	select {
	case <-s.ready:
	default:
		return false
	}
	now := s.clock()
	s.loopsMu.RLock()
	defer s.loopsMu.RUnlock()
	for _, l := range s.loops {
		if last := l.swept.Load(); last != 0 && now-last > int64(5*time.Second) {
			return false
		}
	}
	return true
}

// Stats returns a snapshot of the counters.
func (s *Server) Stats() Stats {
	return Stats{
		Connections:   s.stats.connections.Load(),
		Accepted:      s.stats.accepted.Load(),
		Refused:       s.stats.refused.Load(),
		MessagesIn:    s.stats.messagesIn.Load(),
		FramesOut:     s.stats.framesOut.Load(),
		Deliveries:    s.stats.deliveries.Load(),
		SlowConsumers: s.stats.slowConsumers.Load(),
		ProtocolClose: s.stats.protocolClose.Load(),
		Panics:        s.stats.panics.Load(),
		InboxDropped:  s.stats.inboxDropped.Load(),
		Writes:        s.stats.writes.Load(),
		Wakeups:       s.stats.wakeups.Load(),
	}
}

// clock is the loops' time: nanoseconds since the server was made.
func (s *Server) clock() int64 { return int64(time.Since(s.start)) }

func (s *Server) OnBoot(eng gnet.Engine) gnet.Action {
	s.eng = eng
	close(s.ready)
	return gnet.None
}

var responseDraining = []byte("HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 35\r\nConnection: close\r\n\r\nserver draining: connect elsewhere\n")

var responseBusy = []byte("HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 29\r\nConnection: close\r\n\r\nserver at its connection cap\n")

func (s *Server) OnOpen(gc gnet.Conn) ([]byte, gnet.Action) {
	l := s.loopOf(gc.EventLoop())
	c := &Conn{gc: gc, loop: l, opened: s.clock()}
	c.reader.maxMessage = int64(s.cfg.MaxMessageSize)
	c.lastSeen = c.opened
	if a := gc.RemoteAddr(); a != nil {
		c.remote = a.String()
	}
	gc.SetContext(c)
	s.stats.accepted.Add(1)
	if s.refusing.Load() {
		s.stats.connections.Add(1) // OnClose takes it off again
		c.closing = true
		return responseDraining, gnet.Close
	}
	if n := s.stats.connections.Add(1); n > int64(s.cfg.MaxConnections) {
		s.stats.refused.Add(1)
		c.closing = true
		return responseBusy, gnet.Close
	}
	l.conns[c] = struct{}{}
	return nil, gnet.None
}

func (s *Server) OnClose(gc gnet.Conn, _ error) gnet.Action {
	c, _ := gc.Context().(*Conn)
	if c == nil || c.state == stateClosed {
		return gnet.None
	}
	s.stats.connections.Add(-1)
	wasOpen := c.state == stateOpen
	c.state = stateClosed
	c.closing = true
	c.closed.Store(true)
	c.resetPending()
	delete(c.loop.conns, c)
	if wasOpen {
		func() {
			defer s.recoverLoop("close handler", nil)
			s.handler.Close(c)
		}()
	}
	return gnet.None
}

func (s *Server) OnTraffic(gc gnet.Conn) gnet.Action {
	c, _ := gc.Context().(*Conn)
	if c == nil || c.closing {
		_, _ = gc.Discard(-1)
		return gnet.None
	}
	defer c.loop.flushSoon()
	// Frames for the connection being served (answers to what it sent) are never held: a client
	// that waits for each answer before its next request must not wait a span for each.
	// flushSoon clears it.
	c.loop.serving = c
	defer s.recoverLoop("message handler", c)
	c.lastSeen = s.clock()
	c.pinged = false

	if c.state == stateHandshake && !s.handshake(c) {
		return gnet.None
	}
	// While the frame in progress is not all here, do not look at it: Peek
	// copies the buffer when it wraps, and a frame trickled in over many
	// reads would be copied once per read.
	if gc.InboundBuffered() >= c.reader.need() {
		buf, _ := gc.Peek(-1)
		n, cerr := c.reader.feed(buf, c)
		if n > 0 { // Discard(0) would drop everything, partial frame included
			_, _ = gc.Discard(n)
			c.frameStarted = 0
		}
		if cerr != nil {
			s.stats.protocolClose.Add(1)
			c.closeWith(cerr.code, cerr.reason)
			return gnet.None
		}
	}
	// The frame deadline runs from the first byte of a frame that did not
	// complete in this read, and from the first fragment of a message.
	if c.frameStarted == 0 && gc.InboundBuffered() > 0 {
		c.frameStarted = c.lastSeen
	}
	switch {
	case !c.reader.inFrag:
		c.messageStarted = 0
	case c.messageStarted == 0:
		c.messageStarted = c.lastSeen
	}
	return gnet.None
}

// OnTick sweeps each loop's connections for handshake and frame deadlines,
// pings and idle timeouts. It runs on its own goroutine, so the sweep is posted to the
// loops.
func (s *Server) OnTick() (time.Duration, gnet.Action) {
	now := s.clock()
	hs, ping, idle := int64(s.cfg.HandshakeTimeout), int64(s.cfg.PingInterval), int64(s.cfg.IdleTimeout)
	frameDeadline := now - int64(s.cfg.FrameTimeout)
	pingFrame := AppendFrame(nil, ws.OpPing, nil)
	s.loopsMu.RLock()
	for _, l := range s.loops {
		_ = l.forEachConn(func(c *Conn) {
			if c.closing {
				if c.lingerUntil != 0 {
					c.lingerTick(now)
				}
				return
			}
			switch {
			case c.state == stateHandshake && now-c.opened > hs:
				c.abort()
			case c.state != stateOpen:
			case c.frameStarted != 0 && c.frameStarted < frameDeadline,
				c.messageStarted != 0 && c.messageStarted < frameDeadline:
				s.stats.protocolClose.Add(1)
				c.closeWith(ClosePolicyViolation, "frame timeout")
			case now-c.lastSeen > idle:
				c.closeWith(CloseGoingAway, "idle timeout")
			case now-c.lastSeen > ping && !c.pinged:
				c.pinged = true
				c.enqueue(pingFrame)
			}
		})
	}
	s.loopsMu.RUnlock()
	return time.Second, gnet.None
}

func (s *Server) loopOf(el gnet.EventLoop) *Loop {
	s.loopsMu.RLock()
	l := s.loops[el]
	s.loopsMu.RUnlock()
	if l != nil {
		return l
	}
	s.loopsMu.Lock()
	defer s.loopsMu.Unlock()
	if l = s.loops[el]; l == nil {
		l = newLoop(s, el)
		s.loops[el] = l
	}
	return l
}

// recoverLoop turns a panic on an event loop into a log line and, when it
// happened for a connection, that connection's close: one bad message must
// never take the process down.
func (s *Server) recoverLoop(where string, c *Conn) {
	r := recover()
	if r == nil {
		return
	}
	s.stats.panics.Add(1)
	remote := ""
	if c != nil {
		remote = c.remote
	}
	s.log.Error("panic on event loop", "where", where, "remote", remote, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
	if c != nil {
		c.closeWith(CloseInternalError, "internal error")
	}
}

// gnetLogger routes gnet's own logging into slog.
type gnetLogger struct{ l *slog.Logger }

func (g gnetLogger) Debugf(f string, a ...any) { g.l.Debug(fmt.Sprintf(f, a...), "component", "gnet") }
func (g gnetLogger) Infof(f string, a ...any)  { g.l.Debug(fmt.Sprintf(f, a...), "component", "gnet") }
func (g gnetLogger) Warnf(f string, a ...any)  { g.l.Warn(fmt.Sprintf(f, a...), "component", "gnet") }
func (g gnetLogger) Errorf(f string, a ...any) { g.l.Error(fmt.Sprintf(f, a...), "component", "gnet") }
func (g gnetLogger) Fatalf(f string, a ...any) { g.l.Error(fmt.Sprintf(f, a...), "component", "gnet") }
