package engine

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/gobwas/ws"
	"github.com/panjf2000/gnet/v2"
	"golang.org/x/sys/unix"
)

// Loop is one event loop's side of the write path: an inbox that other
// goroutines post deliveries to, drained on the loop by a single Execute per
// burst, so that a message for many connections on this loop costs one task,
// and all frames for one connection in a burst leave in one writev.
type Loop struct {
	srv *Server
	el  gnet.EventLoop

	mu         sync.Mutex
	inbox      []delivery
	inboxBytes int  // what the inbox holds, as inboxCost counts it
	scheduled  bool // a drain is queued on the loop

	// gapped says that a frame for some connection on this loop was dropped
	// (the connection carries its own flag): the next drain closes them.
	gapped atomic.Bool

	// Loop-only state.
	draining bool // runDrain is working through a batch
	spare    []delivery
	dirty    []*Conn      // connections with pending frames
	iov      []unix.Iovec // Conn.writev's array, reused
	conns    map[*Conn]struct{}
	drain    gnet.RunnableFunc
	warned   int64 // server clock of the last warning about a full inbox

	// Write coalescing (Config.WriteCoalesce), loop-only but for the timer.
	serving    *Conn       // the connection whose traffic the loop is handling
	held       []*Conn     // connections whose frames wait for their span to end (still dirty)
	heldUrgent bool        // one of them got a frame that must not wait
	heldUntil  int64       // server clock when the first of them is due
	flushArmed bool        // flushTimer will run flushHeld
	flushTimer *time.Timer // wakes the loop to write what it held
	flushHeld  gnet.RunnableFunc
	unobserved []int64 // when the deliveries not yet written were posted (for OnRouted)

	swept atomic.Int64 // server clock of the last sweep: proves the loop runs
}

// delivery is one frame for a set of connections, or a close request.
type delivery struct {
	frame  []byte
	to     []*Conn // immutable snapshot owned by the poster; nil when one is set
	one    *Conn
	except *Conn // the sender, skipped

	requested bool // with one: a frame the client asked for (WriteRequested)

	closeCode   ws.StatusCode // with one: close it instead of writing
	closeReason string
	run         func() // with one: run this on the loop instead of writing
	posted      int64  // server clock when posted, when OnRouted is set
}

func newLoop(srv *Server, el gnet.EventLoop) *Loop {
	l := &Loop{srv: srv, el: el, conns: make(map[*Conn]struct{})}
	l.drain = l.runDrain
	l.flushHeld = l.runFlushHeld
	l.flushTimer = time.AfterFunc(time.Hour, func() {
		// The engine may be stopping: its connections are going away with what they held.
		l.srv.stats.wakeups.Add(1)
		_ = l.el.Execute(context.Background(), l.flushHeld)
	})
	l.flushTimer.Stop()
	return l
}

// Deliver queues frame for every connection in to except except. to must be
// owned by the caller and never modified afterwards (a copy-on-write snapshot);
// every connection in it must live on this loop. Safe from any goroutine.
func (l *Loop) Deliver(frame []byte, to []*Conn, except *Conn) {
	l.post(delivery{frame: frame, to: to, except: except})
}

// DeliverFrom is Deliver by a caller that runs on loop here (inside a Handler
// callback there; nil when it runs elsewhere). A frame for one connection on
// here itself (one-to-one traffic: a small channel, its sender excepted) is
// queued on it at once: a post to one's own loop costs a wake-up of the loop
// (an eventfd write and another epoll return) for nothing. A fan-out still
// goes through the inbox, drained once the loop has read everything ready:
// the frames of all the messages read in that pass then leave together.
func (l *Loop) DeliverFrom(here *Loop, frame []byte, to []*Conn, except *Conn) {
	var one *Conn
	switch {
	case len(to) == 1 && to[0] != except:
		one = to[0]
	case len(to) == 2 && to[0] == except:
		one = to[1]
	case len(to) == 2 && to[1] == except:
		one = to[0]
	}
	if one == nil || !l.local(here) {
		l.Deliver(frame, to, except)
		return
	}
	one.Write(frame)
	l.srv.stats.deliveries.Add(1)
	l.routedNow()
}

// local reports whether a caller on loop here may queue frames for l's
// connections directly. Only on l itself, and only while nothing posted to l
// earlier waits in its inbox or in the batch being drained: those came first
// (a channel's earlier event, a join's replay) and must be written first.
func (l *Loop) local(here *Loop) bool {
	if here != l || l.draining {
		return false
	}
	l.mu.Lock()
	empty := len(l.inbox) == 0
	l.mu.Unlock()
	return empty
}

// routedNow reports a delivery written without waiting in the inbox to OnRouted. Loop only.
func (l *Loop) routedNow() {
	if l.srv.cfg.OnRouted != nil {
		l.unobserved = append(l.unobserved, l.srv.clock())
	}
}

// deliveryOverhead is what a queued delivery costs besides its frame.
const deliveryOverhead = int(unsafe.Sizeof(delivery{}))

// inboxCost is what d counts against Config.MaxLoopInboxBytes.
func inboxCost(d *delivery) int { return len(d.frame) + deliveryOverhead }

// post queues d for the loop. A frame that would take the inbox over its
// bound is dropped, and its recipients are closed with 1013 by the next drain
// (see dropped); runs and closes are never dropped.
func (l *Loop) post(d delivery) {
	if l.srv.cfg.OnRouted != nil {
		d.posted = l.srv.clock()
	}
	cost := inboxCost(&d)
	l.mu.Lock()
	if d.run == nil && d.closeCode == 0 && l.inboxBytes+cost > l.srv.cfg.MaxLoopInboxBytes {
		l.mu.Unlock()
		l.dropped(&d)
		return
	}
	l.inboxBytes += cost
	l.inbox = append(l.inbox, d)
	wake := !l.scheduled
	l.scheduled = true
	l.mu.Unlock()
	if wake {
		l.srv.stats.wakeups.Add(1)
		if err := l.el.Execute(context.Background(), l.drain); err != nil {
			// The engine is shutting down: the connections are going away.
			l.mu.Lock()
			l.scheduled = false
			clear(l.inbox)
			l.inbox = l.inbox[:0]
			l.inboxBytes = 0
			l.mu.Unlock()
		}
	}
}

func (l *Loop) runDrain(context.Context) error {
	defer l.srv.recoverLoop("drain", nil)
	l.mu.Lock()
	batch := l.inbox
	l.inbox = l.spare
	l.inboxBytes = 0
	l.scheduled = false
	l.mu.Unlock()

	if l.gapped.Swap(false) {
		l.closeGapped()
	}

	l.draining = true
	defer l.doneDraining() // also after a panic, or frames for this loop would always take the inbox
	var delivered uint64
	for i := range batch {
		d := &batch[i]
		switch {
		case d.run != nil:
			func() {
				defer l.srv.recoverLoop("run", d.one)
				d.run()
			}()
		case d.one != nil && d.closeCode != 0:
			d.one.closeWith(d.closeCode, d.closeReason)
		case d.one != nil:
			d.one.writeOne(d.frame, d.requested)
			delivered++
		default:
			for _, c := range d.to {
				if c != d.except {
					c.Write(d.frame)
					delivered++
				}
			}
		}
	}
	// Counted before the writes, so that a client who got a frame never sees
	// a counter that does not include it yet.
	l.srv.stats.deliveries.Add(delivered)
	if l.srv.cfg.OnRouted != nil {
		for i := range batch {
			if batch[i].posted != 0 && batch[i].closeCode == 0 && batch[i].run == nil {
				l.unobserved = append(l.unobserved, batch[i].posted)
			}
		}
	}
	l.flushPass(true)
	clear(batch)
	l.spare = batch[:0]
	return nil
}

func (l *Loop) doneDraining() { l.draining = false }

// dropped counts a delivery refused by a full inbox and marks its
// recipients: a client that silently missed a frame could not know to catch
// up, so each is closed with 1013 before anything more is written to it, and
// reconnects and resumes with since. The inbox is not empty (it is full), so
// a drain is coming. Any goroutine.
func (l *Loop) dropped(d *delivery) {
	n := 0
	if d.one != nil {
		d.one.gapped.Store(true)
		n = 1
	}
	for _, c := range d.to {
		if c != d.except {
			c.gapped.Store(true)
			n++
		}
	}
	l.srv.stats.inboxDropped.Add(uint64(n))
	l.gapped.Store(true)
}

// closeGapped closes the connections that missed a frame. Loop only.
func (l *Loop) closeGapped() {
	for c := range l.conns {
		if c.gapped.Load() {
			c.closeWith(CloseTryAgainLater, "server overloaded: reconnect and resume with since")
		}
	}
	if now := l.srv.clock(); l.warned == 0 || now-l.warned > int64(10*time.Second) {
		l.warned = now
		l.srv.log.Warn("event loop inbox full: frames dropped, their recipients closed with 1013",
			"max_loop_inbox_bytes", l.srv.cfg.MaxLoopInboxBytes, "dropped_total", l.srv.stats.inboxDropped.Load())
	}
}

// flushSoon writes each dirty connection's frames, except for a connection
// written to less than Config.WriteCoalesce ago: its frames wait for the end
// of that span and then leave together. A connection that gets frames faster
// than the span (a fan-out subscriber under load) so gets one writev per span
// instead of a syscall per frame (5 to 9 µs each on these machines); a frame
// for a connection that was quiet for a span (a lone message, one-to-one
// traffic) leaves at once. Called at the end of each loop callback that may
// have queued frames.
func (l *Loop) flushSoon() { l.flushPass(false) }

// flushPass is flushSoon. After a drain (drained), held connections whose
// span has ended, or nearly, are written too: a loop busy with fan-out then
// writes them on its way, with the frames it just drained, and its timer only
// has to wake a loop that went quiet. Not after reading a message: its
// frames are still in the inbox, and would miss the write and wait a whole
// span for the next one.
func (l *Loop) flushPass(drained bool) {
	l.serving = nil
	hold := int64(l.srv.cfg.WriteCoalesce)
	if hold <= 0 {
		l.flushDirty()
		return
	}
	now := l.srv.clock()
	// Indexed, not ranged: a failed write runs OnClose, whose handler may
	// queue frames for other connections and so extend the list.
	for i := 0; i < len(l.dirty); i++ {
		c := l.dirty[i]
		l.dirty[i] = nil
		// Held when written less than a span ago (a frame after a quiet span leaves at once),
		// until the end of its span: busySpans spans for a busy connection.
		if c.lastWrite != 0 && now-c.lastWrite < hold && !c.closing && !c.urgent {
			due := c.lastWrite + c.span(hold)
			if len(l.held) == 0 || due < l.heldUntil {
				l.heldUntil = due
			}
			c.held = true
			l.held = append(l.held, c) // stays dirty: its next frames join the pending ones
			continue
		}
		l.write(c, hold)
	}
	l.dirty = l.dirty[:0]
	switch {
	case drained && len(l.held) > 0 && l.heldUntil <= now+heldSlack(hold):
		// All of them, not only those whose span ended: written together, they
		// stay in step and keep being written together.
		l.flushDirty()
	case l.heldUrgent:
		l.flushUrgentHeld()
	}
	if len(l.held) == 0 {
		if l.flushArmed && l.flushTimer.Stop() {
			l.flushArmed = false
		}
		l.observeWritten()
		return
	}
	if !l.flushArmed {
		l.flushArmed = true
		l.flushTimer.Reset(time.Duration(l.heldUntil - now))
	}
}

// flushUrgentHeld writes the held connections that got a frame that must not
// wait (an answer, a private message), and holds the others on.
func (l *Loop) flushUrgentHeld() {
	l.heldUrgent = false
	kept := l.held[:0]
	// Indexed: a failed write runs OnClose, which must not see a half-built list.
	for i := 0; i < len(l.held); i++ {
		c := l.held[i]
		l.held[i] = nil
		if !c.urgent && !c.closing {
			kept = append(kept, c)
			continue
		}
		l.write(c, int64(l.srv.cfg.WriteCoalesce))
	}
	l.held = kept
}

// write writes c's pending frames and notes when, for its next span: the
// clock is read after the write, since a pass that writes a hundred
// connections takes about a span itself, and the first ones would otherwise
// look quiet to frames that arrive right after it.
func (l *Loop) write(c *Conn, hold int64) {
	c.held = false
	c.dirty = false
	frames := len(c.pending)
	c.flush()
	c.wrote(l.srv.clock(), frames, hold)
}

// heldSlack is how early held connections may be written: when the first
// span ends that soon, they go now rather than cost the loop a wake-up.
func heldSlack(hold int64) int64 { return hold / 8 }

// runFlushHeld writes what the loop held, when the timer says a span ended.
func (l *Loop) runFlushHeld(context.Context) error {
	defer l.srv.recoverLoop("flush", nil)
	l.flushArmed = false
	l.flushDirty()
	return nil
}

// flushDirty writes every connection's pending frames now, held ones included.
func (l *Loop) flushDirty() {
	for i := 0; i < len(l.held); i++ {
		l.held[i].held = false
		l.dirty = append(l.dirty, l.held[i])
		l.held[i] = nil
	}
	l.held = l.held[:0]
	l.heldUrgent = false
	hold := int64(l.srv.cfg.WriteCoalesce)
	for i := 0; i < len(l.dirty); i++ {
		c := l.dirty[i]
		l.dirty[i] = nil
		l.write(c, hold)
	}
	l.dirty = l.dirty[:0]
	l.observeWritten()
}

// observeWritten reports to OnRouted the deliveries whose frames are now written.
func (l *Loop) observeWritten() {
	if len(l.unobserved) == 0 {
		return
	}
	now := l.srv.clock()
	for _, posted := range l.unobserved {
		l.srv.cfg.OnRouted(time.Duration(now - posted))
	}
	l.unobserved = l.unobserved[:0]
}

// forEachConn runs fn on this loop for each of its connections.
func (l *Loop) forEachConn(fn func(c *Conn)) error {
	return l.el.Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error {
		defer l.srv.recoverLoop("sweep", nil)
		l.swept.Store(l.srv.clock())
		for c := range l.conns {
			fn(c)
		}
		l.flushDirty()
		return nil
	}))
}
