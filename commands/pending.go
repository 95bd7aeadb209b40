package commands

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/arqonbus/arqonbus/engine"
)

// Inflight is one command forwarded to a client handler, awaiting its
// command_response.
type Inflight struct {
	RequestID   string
	Room        string
	Channel     string
	Requester   *engine.Conn
	Handler     *engine.Conn
	outstanding *atomic.Int32 // the requester's count of commands in flight
	timer       *time.Timer
}

type pendingKey struct {
	handler   *engine.Conn
	requestID string
}

// Pending is the table of commands in flight to handlers. A response is
// accepted only from the handler the command went to, once.
type Pending struct {
	timeout   time.Duration
	onTimeout func(*Inflight)

	mu        sync.Mutex
	byKey     map[pendingKey]*Inflight
	byHandler map[*engine.Conn]map[string]*Inflight
}

// NewPending makes a table whose commands time out after timeout, calling
// onTimeout (from a timer goroutine) for each.
func NewPending(timeout time.Duration, onTimeout func(*Inflight)) *Pending {
	return &Pending{
		timeout:   timeout,
		onTimeout: onTimeout,
		byKey:     make(map[pendingKey]*Inflight),
		byHandler: make(map[*engine.Conn]map[string]*Inflight),
	}
}

// Add records f, counted against outstanding, unless outstanding is already
// at limit (ok false, full true) or the handler already has a command with
// that id in flight (ok false).
func (p *Pending) Add(f *Inflight, outstanding *atomic.Int32, limit int32) (ok, full bool) {
	if outstanding.Add(1) > limit {
		outstanding.Add(-1)
		return false, true
	}
	k := pendingKey{f.Handler, f.RequestID}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.byKey[k] != nil {
		outstanding.Add(-1)
		return false, false
	}
	f.outstanding = outstanding
	p.byKey[k] = f
	hm := p.byHandler[f.Handler]
	if hm == nil {
		hm = make(map[string]*Inflight)
		p.byHandler[f.Handler] = hm
	}
	hm[f.RequestID] = f
	f.timer = time.AfterFunc(p.timeout, func() {
		if p.remove(k) {
			p.onTimeout(f)
		}
	})
	return true, false
}

// Resolve takes the command requestID that handler was given, or nil.
func (p *Pending) Resolve(handler *engine.Conn, requestID string) *Inflight {
	k := pendingKey{handler, requestID}
	p.mu.Lock()
	f := p.byKey[k]
	p.mu.Unlock()
	if f == nil || !p.remove(k) {
		return nil
	}
	f.timer.Stop()
	return f
}

// DropHandler takes every command in flight to handler (it went away).
func (p *Pending) DropHandler(handler *engine.Conn) []*Inflight {
	p.mu.Lock()
	var all []*Inflight
	for _, f := range p.byHandler[handler] {
		all = append(all, f)
	}
	p.mu.Unlock()
	var out []*Inflight
	for _, f := range all {
		if p.remove(pendingKey{handler, f.RequestID}) {
			f.timer.Stop()
			out = append(out, f)
		}
	}
	return out
}

// Len is the number of commands in flight.
func (p *Pending) Len() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.byKey)
}

// remove deletes k; only the caller that removed it acts on it.
func (p *Pending) remove(k pendingKey) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	f := p.byKey[k]
	if f == nil {
		return false
	}
	delete(p.byKey, k)
	if hm := p.byHandler[k.handler]; hm != nil {
		delete(hm, k.requestID)
		if len(hm) == 0 {
			delete(p.byHandler, k.handler)
		}
	}
	f.outstanding.Add(-1)
	return true
}
