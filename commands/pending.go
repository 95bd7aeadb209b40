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
	RequesterID   string // its client id

	outstanding *atomic.Int32 // the requester's count of commands in flight; nil for a remote requester
	timer       *time.Timer
}

type pendingKey struct {
	handler   *engine.Conn
	remote    string // RemoteHandler, when handler is nil
	requestID string
}

func keyOf(f *Inflight) pendingKey { return pendingKey{f.Handler, f.RemoteHandler, f.RequestID} }

// RemoteHandlerName names a handler on another node in Inflight.RemoteHandler.
func RemoteHandlerName(instance, clientID string) string { return instance + "/" + clientID }

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

// Add records f, counted against outstanding (when not nil), unless
// outstanding is already at limit (ok false, full true) or the handler
// already has a command with that id in flight (ok false).
func (p *Pending) Add(f *Inflight, outstanding *atomic.Int32, limit int32) (ok, full bool) {
	if outstanding != nil && outstanding.Add(1) > limit {
		outstanding.Add(-1)
		return false, true
	}
	k := keyOf(f)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.byKey[k] != nil {
		if outstanding != nil {
			outstanding.Add(-1)
		}
		return false, false
	}
	f.outstanding = outstanding
	p.byKey[k] = f
	if f.Handler != nil {
		hm := p.byHandler[f.Handler]
		if hm == nil {
			hm = make(map[string]*Inflight)
			p.byHandler[f.Handler] = hm
		}
		hm[f.RequestID] = f
	}
	f.timer = time.AfterFunc(p.timeout, func() {
		if p.remove(k) {
			p.onTimeout(f)
		}
	})
	return true, false
}

// Resolve takes the command requestID that handler was given, or nil.
func (p *Pending) Resolve(handler *engine.Conn, requestID string) *Inflight {
	return p.resolve(pendingKey{handler: handler, requestID: requestID})
}

// ResolveRemote takes the command requestID this node forwarded to the
// handler on another node named remote (RemoteHandlerName), or nil.
func (p *Pending) ResolveRemote(remote, requestID string) *Inflight {
	return p.resolve(pendingKey{remote: remote, requestID: requestID})
}

func (p *Pending) resolve(k pendingKey) *Inflight {
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
		if p.remove(keyOf(f)) {
			f.timer.Stop()
			out = append(out, f)
		}
	}
	return out
}

// DropNode takes every command in flight across instance, which is gone:
// those forwarded to its handlers and those its requesters forwarded here.
func (p *Pending) DropNode(instance string) []*Inflight {
	prefix := instance + "/"
	p.mu.Lock()
	var all []*Inflight
	for k, f := range p.byKey {
		if strings.HasPrefix(k.remote, prefix) || f.RequesterNode == instance {
			all = append(all, f)
		}
	}
	p.mu.Unlock()
	var out []*Inflight
	for _, f := range all {
		if p.remove(keyOf(f)) {
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
	if hm := p.byHandler[k.handler]; k.handler != nil && hm != nil {
		delete(hm, k.requestID)
		if len(hm) == 0 {
			delete(p.byHandler, k.handler)
		}
	}
	if f.outstanding != nil {
		f.outstanding.Add(-1)
	}
	return true
}
