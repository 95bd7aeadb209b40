package telemetry

import (
	"strings"
	"sync/atomic"
	"time"
)

// Agent activities. Activity maps any other name to the "other" slot, which
// reports the last such name it saw.
const (
	ActivityPublished = "published"
	ActivityCommand   = "command"
	ActivityPrivate   = "private"
	ActivityJoined    = "joined"
	ActivityLeft      = "left"
)

const (
	slotPublished = iota
	slotCommand
	slotPrivate
	slotJoined
	slotLeft
	slotOther
	numSlots
)

var slotNames = [numSlots]string{ActivityPublished, ActivityCommand, ActivityPrivate, ActivityJoined, ActivityLeft, "other"}

// AgentHandle coalesces one ai-agent session's activity. The bus gets it from
// Emitter.Agent at connect, calls Activity on every action and Release at
// disconnect. A nil handle is valid and does nothing, so the bus may keep nil
// for clients that are not agents and call it unconditionally.
type AgentHandle struct {
	e           *Emitter
	agentID     string
	personality string
	released    atomic.Bool
	slots       [numSlots]activitySlot
}

// activitySlot counts one activity since the last flush and remembers where
// it last happened. The location is replaced only when it changes, so an
// agent acting on the same channel allocates nothing.
type activitySlot struct {
	count atomic.Uint64
	where atomic.Pointer[location]
	_     [48]byte // keep slots on separate cache lines
}

type location struct {
	activity, room, channel string
}

// Agent returns the activity handle for one ai-agent session. Call it once
// per session, at connect.
func (e *Emitter) Agent(agentID, personality string) *AgentHandle {
	h := &AgentHandle{e: e, agentID: agentID, personality: personality}
	e.agentsMu.Lock()
	e.agents[h] = struct{}{}
	e.agentsMu.Unlock()
	return h
}

// Activity records one action of the agent in room:channel. Hot path: no
// allocation while the activity stays on the same room and channel, no lock,
// no channel send. Safe from any goroutine.
func (h *AgentHandle) Activity(activity, room, channel string) {
	if h == nil {
		return
	}
	var s *activitySlot
	switch activity {
	case ActivityPublished:
		s = &h.slots[slotPublished]
	case ActivityCommand:
		s = &h.slots[slotCommand]
	case ActivityPrivate:
		s = &h.slots[slotPrivate]
	case ActivityJoined:
		s = &h.slots[slotJoined]
	case ActivityLeft:
		s = &h.slots[slotLeft]
	default:
		s = &h.slots[slotOther]
	}
	if w := s.where.Load(); w == nil || w.room != room || w.channel != channel || w.activity != activity {
		s.where.Store(newLocation(activity, room, channel))
	}
	s.count.Add(1)
}

// newLocation copies the strings (into one allocation), so a caller passing
// strings that alias a reused buffer stays safe.
func newLocation(activity, room, channel string) *location {
	var b strings.Builder
	b.Grow(len(activity) + len(room) + len(channel))
	b.WriteString(activity)
	b.WriteString(room)
	b.WriteString(channel)
	s := b.String()
	return &location{
		activity: s[:len(activity)],
		room:     s[len(activity) : len(activity)+len(room)],
		channel:  s[len(activity)+len(room):],
	}
}

// Release ends the session: its counts are flushed at once (with "final":
// true) and the handle is forgotten. It never blocks; with the queue full the
// final flush happens at the next periodic flush instead. Safe to call twice.
func (h *AgentHandle) Release() {
	if h == nil || h.released.Swap(true) {
		return
	}
	// With the queue full the periodic flush sees released and does it.
	_ = h.e.queue.push(item{kind: kindRelease, agent: h})
}

// AgentCount is the number of agent handles not yet released and flushed.
func (e *Emitter) AgentCount() int {
	e.agentsMu.Lock()
	defer e.agentsMu.Unlock()
	return len(e.agents)
}

// flushAgents publishes every agent's counts since the last flush and
// forgets released agents. Emitter goroutine.
func (e *Emitter) flushAgents() {
	defer e.recover("agent flush")
	e.agentsMu.Lock()
	list := e.agentList[:0]
	for h := range e.agents {
		list = append(list, h)
	}
	e.agentsMu.Unlock()
	now := time.Now()
	for _, h := range list {
		e.flushAgent(h, now, h.released.Load())
	}
	clear(list)
	e.agentList = list[:0]
	e.lastWindow = now
}

// flushAgent publishes one agent_activity event per activity with a count;
// final also forgets the handle. Emitter goroutine.
func (e *Emitter) flushAgent(h *AgentHandle, now time.Time, final bool) {
	if final {
		e.agentsMu.Lock()
		_, known := e.agents[h]
		delete(e.agents, h)
		e.agentsMu.Unlock()
		if !known {
			return // flushed already
		}
	}
	window := now.Sub(e.lastWindow).Milliseconds()
	for i := range h.slots {
		s := &h.slots[i]
		n := s.count.Swap(0)
		if n == 0 {
			continue
		}
		w := s.where.Load()
		if w == nil { // cannot happen: where is stored before count is bumped
			w = &location{activity: slotNames[i]}
		}
		e.publish(e.o.DashboardChannel, EventAgentActivity, now, func(p []byte) []byte {
			p = append(p, `"agent_id":`...)
			p = appendString(p, h.agentID)
			p = append(p, `,"personality":`...)
			p = appendString(p, h.personality)
			p = append(p, `,"activity":`...)
			p = appendString(p, w.activity)
			p = append(p, `,"room":`...)
			p = appendString(p, w.room)
			p = append(p, `,"channel":`...)
			p = appendString(p, w.channel)
			p = append(p, `,"count":`...)
			p = appendUint(p, n)
			p = append(p, `,"window_ms":`...)
			p = appendInt(p, window)
			if final {
				p = append(p, `,"final":true`...)
			}
			return append(p, ',')
		})
	}
}
