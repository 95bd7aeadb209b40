package fanout

import (
	"slices"

	"github.com/arqonbus/arqonbus/engine"
)

// Channel members may serve commands sent to the channel (join_channel with
// parameters.handles). Handler registrations change rarely and are read once
// per command, so they live under the channel lock, not in the snapshot.

type handlerSet struct {
	conns []*engine.Conn
	next  int // round-robin cursor
}

// SetHandles makes c the handler of names in ch (replacing what it handled
// before). c must be a member.
func (ch *Channel) SetHandles(c *engine.Conn, names []string) {
	ch.mu.Lock()
	changed := ch.dropHandler(c) || len(names) > 0
	ch.roster.setHandler(c, len(names) > 0)
	defer func() {
		ch.mu.Unlock()
		if changed && ch.onHandlers != nil {
			ch.onHandlers(ch)
		}
	}()
	for _, name := range names {
		if ch.handlers == nil {
			ch.handlers = make(map[string]*handlerSet)
		}
		hs := ch.handlers[name]
		if hs == nil {
			hs = &handlerSet{}
			ch.handlers[name] = hs
		}
		if !slices.Contains(hs.conns, c) {
			hs.conns = append(hs.conns, c)
		}
	}
}

// dropHandler forgets c as a handler and reports whether it was one; ch.mu
// is held.
func (ch *Channel) dropHandler(c *engine.Conn) bool {
	dropped := false
	for name, hs := range ch.handlers {
		if i := slices.Index(hs.conns, c); i >= 0 {
			hs.conns = slices.Delete(hs.conns, i, i+1)
			dropped = true
			if len(hs.conns) == 0 {
				delete(ch.handlers, name)
			}
		}
	}
	return dropped
}

// PickHandler returns the next live handler of name, round robin, or nil.
func (ch *Channel) PickHandler(name string) *engine.Conn {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	hs := ch.handlers[name]
	if hs == nil {
		return nil
	}
	for range hs.conns {
		c := hs.conns[hs.next%len(hs.conns)]
		hs.next++
		if !c.Closed() {
			return c
		}
	}
	return nil
}

// Handlers returns how many members handle each command name.
func (ch *Channel) Handlers() map[string]int {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	out := make(map[string]int, len(ch.handlers))
	for name, hs := range ch.handlers {
		out[name] = len(hs.conns)
	}
	return out
}

// HandlersOf returns the live members serving name, in registration order.
func (ch *Channel) HandlersOf(name string) []*engine.Conn {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	hs := ch.handlers[name]
	if hs == nil {
		return nil
	}
	out := make([]*engine.Conn, 0, len(hs.conns))
	for _, c := range hs.conns {
		if !c.Closed() {
			out = append(out, c)
		}
	}
	return out
}

// ForEachHandler calls fn for each command name and member serving it,
// under the channel's lock: fn must not call back into the channel.
func (ch *Channel) ForEachHandler(fn func(name string, c *engine.Conn)) {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	for name, hs := range ch.handlers {
		for _, c := range hs.conns {
			fn(name, c)
		}
	}
}
