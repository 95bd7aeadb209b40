package fanout

import (
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/arqonbus/arqonbus/engine"
)

// Key names a channel: room and channel.
type Key struct {
	Room, Channel string
}

// String is "room:channel".
func (k Key) String() string { return k.Room + ":" + k.Channel }

// Channel is one room:channel stream and its members.
type Channel struct {
	Key       Key
	Created   time.Time
	Bootstrap bool // created at start; never deleted
	// Kept channels (create_channel, restored, pinned) stay until deleted;
	// the others are evicted once idle (Hub.Evict).
	Kept bool

	// State is the owner's per-channel state (the bus keeps its history
	// clock there), made by Options.NewState when the channel is created.
	// Fields in it that Publish's Preparer touches are guarded by the channel
	// lock.
	State any

	// mu orders publishes and serialises membership changes. A publish holds
	// it while it posts to every loop, so members on different loops see the
	// channel's messages in the same order.
	mu      sync.Mutex
	roster  roster                    // the members, mutable, under mu
	members atomic.Pointer[memberSet] // the snapshot publishes hand out; nil when the roster changed since
	count   atomic.Int64              // members now

	handlers   map[string]*handlerSet // command name -> members serving it, under mu
	deleted    bool                   // removed from the hub, under mu: joins must look again
	onHandlers func(*Channel)         // Options.OnHandlers

	published    atomic.Uint64
	lastActivity atomic.Int64 // unix nanos
}

// memberSet is an immutable snapshot of a channel's members: those without a
// filter grouped by loop (a publish hands each group to its loop as is), and
// those with one listed apart, checked per message.
type memberSet struct {
	groups   []loopGroup
	filtered []filteredMember
	count    int
}

type loopGroup struct {
	loop  *engine.Loop
	conns []*engine.Conn
}

type filteredMember struct {
	conn   *engine.Conn
	filter Filter
}

var emptySet = &memberSet{}

func newChannel(k Key, bootstrap bool, created time.Time) *Channel {
	ch := &Channel{Key: k, Created: created, Bootstrap: bootstrap}
	ch.members.Store(emptySet)
	ch.lastActivity.Store(ch.Created.UnixNano())
	return ch
}

// Members is the number of members now.
func (ch *Channel) Members() int { return int(ch.count.Load()) }

// Published is the number of messages published to the channel.
func (ch *Channel) Published() uint64 { return ch.published.Load() }

// LastActivity is the time of the last publish or membership change.
func (ch *Channel) LastActivity() time.Time { return time.Unix(0, ch.lastActivity.Load()) }

// ForEachMember calls fn for each member, in join order per loop (members
// with a filter last), from a snapshot taken now.
func (ch *Channel) ForEachMember(fn func(c *engine.Conn)) {
	set := ch.snapshot()
	for _, g := range set.groups {
		for _, c := range g.conns {
			fn(c)
		}
	}
	for _, m := range set.filtered {
		fn(m.conn)
	}
}

// IsMember reports whether c is a member.
func (ch *Channel) IsMember(c *engine.Conn) bool {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	return ch.roster.has(c)
}

// snapshot is the members now, as a publish sees them.
func (ch *Channel) snapshot() *memberSet {
	if set := ch.members.Load(); set != nil {
		return set
	}
	ch.mu.Lock()
	defer ch.mu.Unlock()
	return ch.current()
}

// current returns the snapshot, building it when the roster changed since the
// last one; ch.mu is held. A storm of joins thus costs one build per publish
// that follows changes, not one copy of the member list per join.
func (ch *Channel) current() *memberSet {
	if set := ch.members.Load(); set != nil {
		return set
	}
	set := ch.roster.snapshot()
	ch.members.Store(set)
	return set
}

// add makes c a member, receiving only what f matches when f is not empty.
// before, if not nil, runs first under the channel lock: frames it delivers
// to c reach it ahead of any message published after the join. A member that
// joins again keeps its membership with the new filter; add reports whether c
// is new, and false for ok when the channel was deleted.
func (ch *Channel) add(c *engine.Conn, f Filter, before func(*Channel)) (isNew, ok bool) {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if ch.deleted {
		return false, false
	}
	if before != nil {
		before(ch)
	}
	handler := false
	if ref, was := ch.roster.remove(c); was {
		handler = ref.handler
	} else {
		isNew = true
		ch.count.Add(1)
	}
	ch.roster.add(c, f, handler)
	ch.members.Store(nil)
	ch.touch()
	return isNew, true
}

// remove drops c and the commands it handles; it reports false when c was
// not a member.
func (ch *Channel) remove(c *engine.Conn) bool {
	ch.mu.Lock()
	ref, was := ch.roster.remove(c)
	if !was {
		ch.mu.Unlock()
		return false
	}
	ch.count.Add(-1)
	ch.members.Store(nil)
	dropped := ref.handler && ch.dropHandler(c)
	ch.touch()
	ch.mu.Unlock()
	if dropped && ch.onHandlers != nil {
		ch.onHandlers(ch)
	}
	return true
}

func (ch *Channel) touch() { ch.lastActivity.Store(time.Now().UnixNano()) }

// evictable reports whether ch may be evicted: made by a join, no members,
// and no activity since idle (unix nanos).
func (ch *Channel) evictable(idle int64) bool {
	return !ch.Bootstrap && !ch.Kept && ch.count.Load() == 0 && ch.lastActivity.Load() < idle
}

// Removed reports whether ch left the hub; call it under Locked to keep the
// answer true while using it.
func (ch *Channel) Removed() bool { return ch.deleted }

// Preparer makes a message's frame under the channel lock, so that what it
// stamps on the message (a history position) follows delivery order, and
// names the member it must not go to (its sender, or nil).
type Preparer interface {
	Prepare(ch *Channel) (frame []byte, except *engine.Conn)
}

// Publish sends the frame p prepares to every member but except whose
// filter, if it has one, matches attrs. attrs is consulted only when filtered
// members exist. The frame is shared by all recipients and must not be
// modified afterwards; a nil frame publishes nothing.
func (ch *Channel) Publish(p Preparer, attrs Attrs) Published {
	return ch.PublishFrom(nil, p, attrs)
}

// PublishFrom is Publish by a caller that runs on event loop here (a message
// handler; nil elsewhere): members on that loop get the frame queued at once
// instead of through the loop's inbox (engine.Loop.DeliverFrom).
func (ch *Channel) PublishFrom(here *engine.Loop, p Preparer, attrs Attrs) Published {
	ch.mu.Lock()
	if ch.deleted {
		// Removed from the hub (an event from another node found it just
		// before): no members, and its history is already dropped.
		ch.mu.Unlock()
		return Published{}
	}
	frame, except := p.Prepare(ch)
	if frame == nil {
		ch.mu.Unlock()
		return Published{}
	}
	set := ch.current()
	// Counted before delivery: whoever sees the message sees it counted.
	ch.published.Add(1)
	handed := 0
	for _, g := range set.groups {
		g.loop.DeliverFrom(here, frame, g.conns, except)
		handed += len(g.conns)
	}
	if len(set.filtered) > 0 {
		handed += deliverFiltered(here, set.filtered, frame, except, attrs)
	}
	ch.mu.Unlock()
	ch.lastActivity.Store(time.Now().UnixNano())
	return Published{handed: handed, set: set, except: except}
}

// Locked runs fn under the channel lock: what fn does is ordered with the
// channel's publishes, joins and leaves.
func (ch *Channel) Locked(fn func()) {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	fn()
}

// Published says whom a publish reached. Counting the recipients exactly
// means finding the sender among the members, so it is left to those who ask
// (an ack), off the plain publish path.
type Published struct {
	handed int // group members handed the frame (the sender included) plus filtered matches
	set    *memberSet
	except *engine.Conn
}

// Recipients is how many members the message went to, the sender not counted.
func (p Published) Recipients() int {
	if p.except == nil || p.set == nil {
		return p.handed
	}
	for _, g := range p.set.groups {
		if g.loop == p.except.Loop() && slices.Contains(g.conns, p.except) {
			return p.handed - 1 // a filtered sender was never counted
		}
	}
	return p.handed
}

// Frame is a Preparer for a frame made beforehand, from Sender (nil for the
// server's own messages).
type Frame struct {
	Data   []byte
	Sender *engine.Conn
}

// Prepare returns the frame itself.
func (f Frame) Prepare(*Channel) ([]byte, *engine.Conn) { return f.Data, f.Sender }

// deliverFiltered hands each loop the filtered members that match, in one
// delivery per loop.
func deliverFiltered(here *engine.Loop, members []filteredMember, frame []byte, except *engine.Conn, attrs Attrs) int {
	var byLoop map[*engine.Loop][]*engine.Conn
	n := 0
	for _, m := range members {
		if m.conn == except || attrs == nil || !m.filter.Match(attrs) {
			continue
		}
		if byLoop == nil {
			byLoop = make(map[*engine.Loop][]*engine.Conn, 2)
		}
		byLoop[m.conn.Loop()] = append(byLoop[m.conn.Loop()], m.conn)
		n++
	}
	for l, conns := range byLoop {
		l.DeliverFrom(here, frame, conns, nil)
	}
	return n
}
