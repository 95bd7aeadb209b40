package commands

import (
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/arqonbus/arqonbus/engine"
)

// Inflight is one command forwarded to a client handler, awaiting its
// command_response. In a cluster one side may be on another node: a command
// this node forwarded to another node's handler has no Handler but a
// RemoteHandler; a command another node forwarded to a handler here has no
// Requester but a RequesterNode and RequesterID.
type Inflight struct {
	RequestID string
	Room      string
	Channel   string
	Requester *engine.Conn
	Handler   *engine.Conn

	RemoteHandler string // "instance/client id" of a handler on another node
	RequesterNode string // instance of a requester on another node
	RequesterID   string // the requester's client id (always set for a remote requester or handler)

	// Frame is what the handler (a local one) is sent when the command
	// becomes the one in flight to it with this id: the command as the
	// requester sent it. Pending hands it to Forward and forgets it.
	Frame []byte

	outstanding *atomic.Int32 // the requester's count of commands in flight; nil for a remote requester
	timer       *time.Timer
}

// sameRequester reports whether f and g come from the same requester.
func (f *Inflight) sameRequester(g *Inflight) bool {
	if f.Requester != nil || g.Requester != nil {
		return f.Requester == g.Requester
	}
	return f.RequesterNode == g.RequesterNode && f.RequesterID == g.RequesterID
}

// pendingKey names what a command_response is matched by. A handler answers
// with the command's own id only, so a local handler's key is (handler, id):
// commands from several requesters with the same id to one handler share a
// key and take turns (see slot). A handler on another node is answered
// through that node, which names the requester: its key adds the requester.
type pendingKey struct {
	handler   *engine.Conn
	remote    string // RemoteHandler, when handler is nil
	requester string // RequesterID, when handler is nil
	requestID string
}

func keyOf(f *Inflight) pendingKey {
	if f.Handler != nil {
		return pendingKey{handler: f.Handler, requestID: f.RequestID}
	}
	return pendingKey{remote: f.RemoteHandler, requester: f.RequesterID, requestID: f.RequestID}
}

// slot holds the commands sharing a key: queue[0] is in flight to the
// handler, the others wait (in arrival order) for it to be answered, time
// out or go away. Only then can the handler's answer be told apart.
type slot struct{ queue []*Inflight }

// RemoteHandlerName names a handler on another node in Inflight.RemoteHandler.
func RemoteHandlerName(instance, clientID string) string { return instance + "/" + clientID }

// Pending is the table of commands in flight to handlers, namespaced by
// requester: the handler sees each command as sent (its own id), and a
// response is accepted only from the handler the command went to, once.
type Pending struct {
	timeout   time.Duration
	onTimeout func(*Inflight)
	forward   func(f *Inflight, here *engine.Loop)

	mu        sync.Mutex
	byKey     map[pendingKey]*slot
	byHandler map[*engine.Conn]map[string]*slot
	n         int // commands in the table, waiting ones included
}

// NewPending makes a table whose commands time out after timeout (counted
// from Add, waiting included), calling onTimeout (from a timer goroutine)
// for each. forward sends a command (f.Frame) to its local handler when it
// becomes the one in flight there with its id; it is called with the
// table's lock held, so it must only hand the frame over
// (engine.Conn.SendFrom), and with here, the event loop the caller of Add
// runs on, when Add sends at once (nil when a settled command releases it).
func NewPending(timeout time.Duration, onTimeout func(*Inflight), forward func(f *Inflight, here *engine.Loop)) *Pending {
	return &Pending{
		timeout:   timeout,
		onTimeout: onTimeout,
		forward:   forward,
		byKey:     make(map[pendingKey]*slot),
		byHandler: make(map[*engine.Conn]map[string]*slot),
	}
}

// AddResult says what Add did with a command.
type AddResult int

const (
	// Sent: the command is in flight (for a local handler, forward was called).
	Sent AddResult = iota
	// Queued: another requester's command with the same id is in flight to
	// that handler; this one is sent when it is settled.
	Queued
	// Conflict: the same requester has a command with this id in flight to
	// that handler.
	Conflict
	// Full: the requester has as many commands in flight as it may.
	Full
)

// Add records f, counted against outstanding (when not nil) unless
// outstanding is already at limit (Full), and sends it to a local handler
// now or when the command with its id ahead of it is settled. here is the
// event loop the caller runs on (nil: none), for forward.
func (p *Pending) Add(f *Inflight, outstanding *atomic.Int32, limit int32, here *engine.Loop) AddResult {
	if outstanding != nil && outstanding.Add(1) > limit {
		outstanding.Add(-1)
		return Full
	}
	k := keyOf(f)
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.byKey[k]
	if s != nil {
		for _, g := range s.queue {
			if g.sameRequester(f) {
				if outstanding != nil {
					outstanding.Add(-1)
				}
				return Conflict
			}
		}
	} else {
		s = &slot{}
		p.byKey[k] = s
		if f.Handler != nil {
			hm := p.byHandler[f.Handler]
			if hm == nil {
				hm = make(map[string]*slot)
				p.byHandler[f.Handler] = hm
			}
			hm[f.RequestID] = s
		}
	}
	f.outstanding = outstanding
	s.queue = append(s.queue, f)
	p.n++
	f.timer = time.AfterFunc(p.timeout, func() {
		if p.take(f) {
			p.onTimeout(f)
		}
	})
	if len(s.queue) > 1 {
		return Queued
	}
	p.sendLocked(f, here)
	return Sent
}

// sendLocked hands f to its local handler; p.mu is held.
func (p *Pending) sendLocked(f *Inflight, here *engine.Loop) {
	if f.Handler != nil && p.forward != nil {
		p.forward(f, here)
	}
	f.Frame = nil
}

// Resolve takes the command requestID in flight to handler, or nil: the
// command with that id that handler was sent (the next one with the same id,
// if any, is sent to it now).
func (p *Pending) Resolve(handler *engine.Conn, requestID string) *Inflight {
	return p.resolve(pendingKey{handler: handler, requestID: requestID})
}

// ResolveRemote takes the command requestID that requester (a client id)
// sent, which this node forwarded to the handler on another node named
// remote (RemoteHandlerName), or nil.
func (p *Pending) ResolveRemote(remote, requester, requestID string) *Inflight {
	return p.resolve(pendingKey{remote: remote, requester: requester, requestID: requestID})
}

func (p *Pending) resolve(k pendingKey) *Inflight {
	p.mu.Lock()
	var f *Inflight
	if s := p.byKey[k]; s != nil {
		f = s.queue[0]
		p.removeLocked(f)
	}
	p.mu.Unlock()
	if f != nil {
		f.timer.Stop()
	}
	return f
}

// DropHandler takes every command in flight to handler, or waiting for it
// (it went away).
func (p *Pending) DropHandler(handler *engine.Conn) []*Inflight {
	p.mu.Lock()
	var out []*Inflight
	for _, s := range p.byHandler[handler] {
		// Last first, so that no waiting command is sent to the handler that went away.
		for i := len(s.queue) - 1; i >= 0; i-- {
			out = append(out, s.queue[i])
		}
	}
	for _, f := range out {
		p.removeLocked(f)
	}
	p.mu.Unlock()
	for _, f := range out {
		f.timer.Stop()
	}
	return out
}

// DropNode takes the commands across instance, which is gone: those this
// node forwarded to its handlers, and those its requesters forwarded here
// that still wait for their turn. A command of its requesters already in
// flight to a handler here stays until answered or timed out: the handler's
// answer belongs to it, not to the next command with its id.
func (p *Pending) DropNode(instance string) []*Inflight {
	prefix := instance + "/"
	p.mu.Lock()
	var out []*Inflight
	for k, s := range p.byKey {
		for i, f := range s.queue {
			if strings.HasPrefix(k.remote, prefix) || (i > 0 && f.Requester == nil && f.RequesterNode == instance) {
				out = append(out, f)
			}
		}
	}
	for _, f := range out {
		p.removeLocked(f)
	}
	p.mu.Unlock()
	for _, f := range out {
		f.timer.Stop()
	}
	return out
}

// Len is the number of commands in flight or waiting for their turn.
func (p *Pending) Len() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.n
}

// take removes f if it is still in the table; only the caller that removed
// it acts on it.
func (p *Pending) take(f *Inflight) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.removeLocked(f)
}

// removeLocked deletes f from its slot, sends the next command of the slot
// when f was the one in flight, and reports whether f was there. p.mu is
// held.
func (p *Pending) removeLocked(f *Inflight) bool {
	k := keyOf(f)
	s := p.byKey[k]
	if s == nil {
		return false
	}
	i := 0
	for i < len(s.queue) && s.queue[i] != f {
		i++
	}
	if i == len(s.queue) {
		return false
	}
	p.unlinkLocked(s, i)
	if i == 0 {
		// The next command with this id goes to the handler, unless its requester is gone meanwhile:
		// it would only hold up the ones behind it.
		for len(s.queue) > 0 {
			g := s.queue[0]
			if g.Requester == nil || !g.Requester.Closed() {
				p.sendLocked(g, nil)
				break
			}
			g.timer.Stop()
			p.unlinkLocked(s, 0)
		}
	}
	if len(s.queue) == 0 {
		delete(p.byKey, k)
		if hm := p.byHandler[k.handler]; k.handler != nil && hm != nil {
			delete(hm, k.requestID)
			if len(hm) == 0 {
				delete(p.byHandler, k.handler)
			}
		}
	}
	return true
}

// unlinkLocked takes the i-th command out of s, uncounted. p.mu is held.
func (p *Pending) unlinkLocked(s *slot, i int) {
	f := s.queue[i]
	copy(s.queue[i:], s.queue[i+1:])
	s.queue[len(s.queue)-1] = nil
	s.queue = s.queue[:len(s.queue)-1]
	p.n--
	if f.outstanding != nil {
		f.outstanding.Add(-1)
	}
}
