package engine

import (
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/gobwas/ws"
	"github.com/panjf2000/gnet/v2"
	"golang.org/x/sys/unix"
)

type connState uint8

const (
	stateHandshake connState = iota
	stateOpen
	stateClosed
)

// Conn is one client connection. Its methods say which goroutines may call
// them: Write only on the connection's own loop (inside a Handler callback),
// Send and Close from anywhere.
type Conn struct {
	gc     gnet.Conn
	loop   *Loop
	reader msgReader

	// Value is the handler's per-connection state. Set it in Handler.Upgrade or
	// Handler.Open; it is published to other goroutines by whatever structure
	// the handler then puts the connection into.
	Value any

	// Loop-only state.
	state    connState
	closing  bool  // a close was started: write and read nothing more
	opened   int64 // loop clock at accept, for the handshake deadline
	lastSeen int64 // loop clock of the last bytes read, for pings and idle
	pinged   bool  // a server ping is outstanding
	pending  [][]byte
	pendingN int
	dirty    bool // in loop.dirty

	// A closing connection lingers: its close frame and FIN sent, its input
	// discarded, until the peer closes too or this loop clock passes (0: not
	// lingering). wrShut says the FIN went out.
	lingerUntil int64
	wrShut      bool

	// Loop clock of the first byte of the frame in progress and of the first
	// fragment of the message in progress (0: none), for the frame deadline.
	frameStarted   int64
	messageStarted int64

	// Requested bytes: frames the client asked for (a replay, a history
	// answer) may exceed the slow-consumer bound while the socket drains them.
	// granted is how many of them may still sit in gnet's outbound buffer (an
	// upper bound, trimmed to OutboundBuffered at each flush, so the allowance
	// shrinks as the client reads); pendingGranted is their share of pending.
	granted        int
	pendingGranted int
	lastWrite      int64 // server clock of the loop's last flush of it (write coalescing)
	rateFrom       int64 // server clock since when rateFrames were written (0: not yet)
	rateFrames     int   // frames written since rateFrom
	busy           bool  // it got busyFrames or more a span over the last span or more: its frames wait busySpans
	urgent         bool  // a pending frame must not be held: an answer, or a frame for this client alone
	held           bool  // in loop.held: its frames wait for the end of its coalescing span

	closed atomic.Bool
	gapped atomic.Bool // a frame for it was dropped: its loop closes it with 1013
	remote string
}

// Loop is the event loop this connection lives on.
func (c *Conn) Loop() *Loop { return c.loop }

// RemoteAddr is the peer's address as text.
func (c *Conn) RemoteAddr() string { return c.remote }

// Closed reports whether the connection is closing or gone: nothing more
// will be written to it. Safe from any goroutine.
func (c *Conn) Closed() bool { return c.closed.Load() }

// Write queues an encoded frame to go out when the current callback or inbox
// drain finishes, coalesced with the connection's other frames into one
// writev. Loop only; frame must not be modified afterwards.
func (c *Conn) Write(frame []byte) {
	if c.closing || c.state != stateOpen {
		return
	}
	c.enqueue(frame)
}

func (c *Conn) enqueue(frame []byte) {
	if c == c.loop.serving {
		c.markUrgent()
	}
	c.pending = append(c.pending, frame)
	c.pendingN += len(frame)
	if !c.dirty {
		c.dirty = true
		c.loop.dirty = append(c.loop.dirty, c)
	}
}

// markUrgent says the pending frames must leave at the end of this callback,
// also when the connection's earlier frames were being held. Loop only.
func (c *Conn) markUrgent() {
	c.urgent = true
	if c.held {
		c.loop.heldUrgent = true
	}
}

// Send queues an encoded frame for this connection from any goroutine.
func (c *Conn) Send(frame []byte) {
	c.loop.post(delivery{frame: frame, one: c})
}

// SendFrom is Send by a caller that runs on loop here (inside a Handler
// callback there; nil when it runs elsewhere): a frame for a connection on the
// same loop is queued at once instead of through the inbox (see
// Loop.DeliverFrom). Like Send, it is never held for coalescing.
func (c *Conn) SendFrom(here *Loop, frame []byte) { c.sendFrom(here, frame, false) }

// SendRequestedFrom is SendRequested by a caller on loop here (see SendFrom).
func (c *Conn) SendRequestedFrom(here *Loop, frame []byte) { c.sendFrom(here, frame, true) }

func (c *Conn) sendFrom(here *Loop, frame []byte, requested bool) {
	if !c.loop.local(here) {
		c.loop.post(delivery{frame: frame, one: c, requested: requested})
		return
	}
	c.writeOne(frame, requested)
	c.loop.srv.stats.deliveries.Add(1)
	c.loop.routedNow()
}

// writeOne queues a frame for this client alone (a private message, an
// answer): it is not held, since holding pays off for a channel's fan-out,
// not for request and response. requested: see WriteRequested. Loop only.
func (c *Conn) writeOne(frame []byte, requested bool) {
	if requested {
		c.WriteRequested(frame)
	} else {
		c.Write(frame)
	}
	c.markUrgent()
}

// WriteRequested is Write for a frame the client asked for (a replay, a
// history answer): while the socket drains it, its bytes do not count against
// the slow-consumer bound, up to Config.MaxRequestedBytes at a time. A client
// that asked for a lot is not cut for reading it; one that stops reading is
// still cut by the live traffic behind it. Loop only.
func (c *Conn) WriteRequested(frame []byte) {
	if c.closing || c.state != stateOpen {
		return
	}
	c.pendingGranted += len(frame)
	c.enqueue(frame)
}

// SendRequested is Send for a frame the client asked for (see WriteRequested),
// from any goroutine.
func (c *Conn) SendRequested(frame []byte) {
	c.loop.post(delivery{frame: frame, one: c, requested: true})
}

// Run runs fn on the connection's loop, in order with the frames sent to it,
// from any goroutine: fn may then Write and read loop-only state. fn runs even
// if the connection closed meanwhile (check Closed), but not once the server
// is stopping.
func (c *Conn) Run(fn func()) {
	c.loop.post(delivery{one: c, run: fn})
}

// Close sends a close frame with code and reason and closes the connection,
// from any goroutine.
func (c *Conn) Close(code ws.StatusCode, reason string) {
	c.loop.post(delivery{one: c, closeCode: code, closeReason: reason})
}

// CloseNow closes with code and reason on the connection's own loop. Loop only.
func (c *Conn) CloseNow(code ws.StatusCode, reason string) {
	c.closeWith(code, reason)
}

// closeWith queues a close frame behind what is pending, flushes, and closes
// gracefully (see linger).
func (c *Conn) closeWith(code ws.StatusCode, reason string) {
	if c.closing || c.state == stateClosed {
		return
	}
	if c.state == stateOpen {
		c.enqueue(closeFrame(code, reason))
	}
	c.closing = true
	c.flush()
	c.linger()
}

// closeLinger is how long a closing connection waits for its peer to close
// after the server's close frame and FIN.
const closeLinger = 2 * time.Second

// linger finishes a close without a reset. Closing a socket whose peer is
// still sending (a frame refused on its header keeps streaming) makes the
// kernel answer with RST, and the peer loses the close frame it has not read
// yet: it sees 1006. So the connection stops reading (OnTraffic discards),
// sends FIN once its last bytes are out, and is closed when the peer closes
// (gnet reads EOF) or, at the latest, by the sweep after closeLinger.
func (c *Conn) linger() {
	if c.state == stateClosed {
		return // the flush failed and gnet closed it
	}
	c.closed.Store(true)
	c.lingerUntil = c.loop.srv.clock() + int64(closeLinger)
	c.shutdownWrite()
}

// shutdownWrite sends FIN once gnet holds no more bytes for the peer.
func (c *Conn) shutdownWrite() {
	if c.wrShut || c.gc.OutboundBuffered() > 0 {
		return
	}
	c.wrShut = true
	if fd := c.gc.Fd(); fd >= 0 {
		_ = syscall.Shutdown(fd, syscall.SHUT_WR)
	}
}

// lingerTick runs from the sweep for a lingering connection.
func (c *Conn) lingerTick(now int64) {
	c.shutdownWrite()
	if now >= c.lingerUntil {
		c.lingerUntil = 0
		_ = c.gc.Close()
	}
}

// abort closes without a close frame: for a peer that is not reading.
func (c *Conn) abort() {
	if c.state == stateClosed {
		return
	}
	c.closing = true
	c.resetPending()
	_ = c.gc.Close()
}

// flush writes the pending frames, first checking the backlog: a consumer
// whose unsent bytes exceed the bound is closed, never waited for.
func (c *Conn) flush() {
	if len(c.pending) == 0 || c.state == stateClosed {
		c.resetPending()
		return
	}
	srv := c.loop.srv
	buffered := c.gc.OutboundBuffered()
	// Requested bytes already written that gnet no longer holds were read
	// (or taken by the kernel): their allowance is spent.
	c.granted = min(c.granted, buffered) + c.pendingGranted
	c.pendingGranted = 0
	allowance := min(c.granted, srv.cfg.MaxRequestedBytes)
	if backlog := buffered + c.pendingN; backlog > srv.cfg.MaxOutboundBytes+allowance {
		srv.stats.slowConsumers.Add(1)
		srv.log.Debug("closing slow consumer", "remote", c.remote, "backlog", backlog, "requested", c.granted)
		c.abort()
		return
	}
	frames := len(c.pending)
	pending := c.pending
	for len(pending) > 0 {
		srv.stats.writes.Add(1)
		n := min(len(pending), iovMax)
		var err error
		if n == 1 {
			_, err = c.gc.Write(pending[0])
		} else {
			err = c.writev(pending[:n])
		}
		if err != nil {
			break // gnet has closed the connection and called OnClose
		}
		pending = pending[n:]
	}
	srv.stats.framesOut.Add(uint64(frames))
	c.resetPending()
	c.granted = min(c.granted, c.gc.OutboundBuffered())
}

// A connection that gets busyFrames frames or more per span (Config.WriteCoalesce)
// is busy: its frames may wait busySpans spans. At a few thousand frames a
// second each writev then carries three times as many, and the writevs are
// most of what fan-out costs; a connection getting fewer (a chat, a
// moderate feed) keeps the plain span and its latency.
const (
	busyFrames = 2
	busySpans  = 3
)

// span is how long after a write c's next frames may wait: busySpans spans
// for a busy connection, else one.
func (c *Conn) span(hold int64) int64 {
	if c.busy {
		return busySpans * hold
	}
	return hold
}

// wrote notes a write of frames at now: the rate over at least a span says
// whether c is busy.
func (c *Conn) wrote(now int64, frames int, hold int64) {
	c.lastWrite = now
	if hold <= 0 {
		return // nothing is held
	}
	if c.rateFrom == 0 {
		c.rateFrom = now
		return
	}
	c.rateFrames += frames
	if elapsed := now - c.rateFrom; elapsed >= hold {
		c.busy = int64(c.rateFrames)*hold >= busyFrames*elapsed
		c.rateFrom, c.rateFrames = now, 0
	}
}

// writev writes frames in one writev. When gnet holds nothing for the socket
// the call is made here, from an iovec array the loop keeps: gnet's Writev
// goes through x/sys/unix.Writev, which allocates that array on every call
// of more than eight buffers, and a coalesced write carries tens. What the
// socket does not take, or an error, goes on to gnet's Writev, which buffers
// the rest and waits for the socket, or closes the connection.
func (c *Conn) writev(frames [][]byte) error {
	fd := c.gc.Fd()
	if fd < 0 || c.gc.OutboundBuffered() > 0 {
		_, err := c.gc.Writev(frames)
		return err
	}
	iov := c.loop.iov[:0]
	total := 0
	for _, f := range frames {
		if len(f) == 0 {
			continue
		}
		v := unix.Iovec{Base: &f[0]}
		v.SetLen(len(f))
		iov = append(iov, v)
		total += len(f)
	}
	if len(iov) == 0 {
		return nil
	}
	r, _, errno := unix.Syscall(unix.SYS_WRITEV, uintptr(fd), uintptr(unsafe.Pointer(&iov[0])), uintptr(len(iov)))
	clear(iov) // the frames are not kept alive by a spare array
	c.loop.iov = iov[:0]
	sent := int(r)
	if errno != 0 {
		sent = 0
	}
	if sent == total {
		return nil
	}
	rest := frames
	for len(rest) > 0 && sent >= len(rest[0]) {
		sent -= len(rest[0])
		rest = rest[1:]
	}
	rest[0] = rest[0][sent:]
	_, err := c.gc.Writev(rest)
	return err
}

// iovMax bounds one writev, as the kernel does (IOV_MAX).
const iovMax = 1024

func (c *Conn) resetPending() {
	clear(c.pending)
	if cap(c.pending) > 256 {
		c.pending = nil
	} else {
		c.pending = c.pending[:0]
	}
	c.pendingN = 0
	c.pendingGranted = 0
	c.urgent = false
}

// frameSink, for msgReader.

func (c *Conn) onMessage(msg []byte) {
	c.loop.srv.stats.messagesIn.Add(1)
	c.loop.srv.handler.Message(c, msg)
}

func (c *Conn) onPing(p []byte) {
	if c.closing {
		return
	}
	c.enqueue(AppendFrame(make([]byte, 0, 2+len(p)), ws.OpPong, p))
}

func (c *Conn) onPong([]byte) { c.pinged = false }

func (c *Conn) onClose(code ws.StatusCode) {
	if c.closing {
		return
	}
	if code == 0 {
		// The peer gave no code; answer with an empty close as RFC 6455 allows.
		c.enqueue(AppendFrame(nil, ws.OpClose, nil))
		c.closing = true
		c.flush()
		c.linger()
		return
	}
	c.closeWith(code, "")
}

func (c *Conn) stopped() bool { return c.closing }
