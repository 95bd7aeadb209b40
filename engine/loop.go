package engine

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
	"github.com/panjf2000/gnet/v2"
)

// Loop is one event loop's side of the write path: an inbox that other
// goroutines post deliveries to, drained on the loop by a single Execute per
// burst, so that a message for many connections on this loop costs one task,
// and all frames for one connection in a burst leave in one writev.
type Loop struct {
	srv *Server
	el  gnet.EventLoop

	mu        sync.Mutex
	inbox     []delivery
	scheduled bool // a drain is queued on the loop

	// Loop-only state.
	spare []delivery
	dirty []*Conn // connections with pending frames
	conns map[*Conn]struct{}
	drain gnet.RunnableFunc

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
	return l
}

// Deliver queues frame for every connection in to except except. to must be
// owned by the caller and never modified afterwards (a copy-on-write snapshot);
// every connection in it must live on this loop. Safe from any goroutine.
func (l *Loop) Deliver(frame []byte, to []*Conn, except *Conn) {
	l.post(delivery{frame: frame, to: to, except: except})
}

func (l *Loop) post(d delivery) {
	if l.srv.cfg.OnRouted != nil {
		d.posted = l.srv.clock()
	}
	l.mu.Lock()
	l.inbox = append(l.inbox, d)
	wake := !l.scheduled
	l.scheduled = true
	l.mu.Unlock()
	if wake {
		if err := l.el.Execute(context.Background(), l.drain); err != nil {
			// The engine is shutting down: the connections are going away.
			l.mu.Lock()
			l.scheduled = false
			clear(l.inbox)
			l.inbox = l.inbox[:0]
			l.mu.Unlock()
		}
	}
}

func (l *Loop) runDrain(context.Context) error {
	defer l.srv.recoverLoop("drain", nil)
	l.mu.Lock()
	batch := l.inbox
	l.inbox = l.spare
	l.scheduled = false
	l.mu.Unlock()

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
		case d.one != nil && d.requested:
			d.one.WriteRequested(d.frame)
			delivered++
		case d.one != nil:
			d.one.Write(d.frame)
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
	l.flushDirty()
	if observe := l.srv.cfg.OnRouted; observe != nil {
		now := l.srv.clock()
		for i := range batch {
			if batch[i].posted != 0 && batch[i].closeCode == 0 && batch[i].run == nil {
				observe(time.Duration(now - batch[i].posted))
			}
		}
	}
	clear(batch)
	l.spare = batch[:0]
	return nil
}

// flushDirty writes every connection's pending frames. Called at the end of
// each loop callback that may have queued frames.
func (l *Loop) flushDirty() {
	// Indexed, not ranged: a failed write runs OnClose, whose handler may
	// queue frames for other connections and so extend the list.
	for i := 0; i < len(l.dirty); i++ {
		c := l.dirty[i]
		l.dirty[i] = nil
		c.dirty = false
		c.flush()
	}
	l.dirty = l.dirty[:0]
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
