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

	// mu orders publishes and serialises membership changes. A publish holds
	// it while it posts to every loop, so members on different loops see the
	// channel's messages in the same order.
	mu      sync.Mutex
	members atomic.Pointer[memberSet]
	seq     uint64 // messages published, under mu

	published    atomic.Uint64
	lastActivity atomic.Int64 // unix nanos
}

// memberSet is an immutable snapshot of a channel's members, grouped by loop.
type memberSet struct {
	groups []loopGroup
	count  int
}

type loopGroup struct {
	loop  *engine.Loop
	conns []*engine.Conn
}

var emptySet = &memberSet{}

func newChannel(k Key, bootstrap bool) *Channel {
	ch := &Channel{Key: k, Created: time.Now(), Bootstrap: bootstrap}
	ch.members.Store(emptySet)
	ch.lastActivity.Store(ch.Created.UnixNano())
	return ch
}

// Members is the number of members now.
func (ch *Channel) Members() int { return ch.members.Load().count }

// Published is the number of messages published to the channel.
func (ch *Channel) Published() uint64 { return ch.published.Load() }

// LastActivity is the time of the last publish or membership change.
func (ch *Channel) LastActivity() time.Time { return time.Unix(0, ch.lastActivity.Load()) }

// ForEachMember calls fn for each member of the snapshot taken now.
func (ch *Channel) ForEachMember(fn func(c *engine.Conn)) {
	for _, g := range ch.members.Load().groups {
		for _, c := range g.conns {
			fn(c)
		}
	}
}

// IsMember reports whether c is a member.
func (ch *Channel) IsMember(c *engine.Conn) bool {
	for _, g := range ch.members.Load().groups {
		if g.loop == c.Loop() {
			return slices.Contains(g.conns, c)
		}
	}
	return false
}

// add makes c a member; it reports false when c already was one.
func (ch *Channel) add(c *engine.Conn) bool {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	old := ch.members.Load()
	next := &memberSet{groups: make([]loopGroup, 0, len(old.groups)+1), count: old.count + 1}
	found := false
	for _, g := range old.groups {
		if g.loop == c.Loop() {
			if slices.Contains(g.conns, c) {
				return false
			}
			g.conns = append(slices.Clip(g.conns), c) // copies: old snapshot stays intact
			found = true
		}
		next.groups = append(next.groups, g)
	}
	if !found {
		next.groups = append(next.groups, loopGroup{loop: c.Loop(), conns: []*engine.Conn{c}})
	}
	ch.members.Store(next)
	ch.touch()
	return true
}

// remove drops c; it reports false when c was not a member.
func (ch *Channel) remove(c *engine.Conn) bool {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	old := ch.members.Load()
	next := &memberSet{groups: make([]loopGroup, 0, len(old.groups)), count: old.count - 1}
	found := false
	for _, g := range old.groups {
		if g.loop == c.Loop() {
			i := slices.Index(g.conns, c)
			if i < 0 {
				return false
			}
			found = true
			if len(g.conns) == 1 {
				continue
			}
			conns := make([]*engine.Conn, 0, len(g.conns)-1)
			conns = append(conns, g.conns[:i]...)
			g.conns = append(conns, g.conns[i+1:]...)
		}
		next.groups = append(next.groups, g)
	}
	if !found {
		return false
	}
	ch.members.Store(next)
	ch.touch()
	return true
}

func (ch *Channel) touch() { ch.lastActivity.Store(time.Now().UnixNano()) }

// Publish sends frame to every member but except and returns the message's
// sequence number in the channel (1-based) and the number of members it saw,
// except included when it is one. The frame is shared by all recipients and
// must not be modified afterwards.
func (ch *Channel) Publish(frame []byte, except *engine.Conn) (seq uint64, members int) {
	ch.mu.Lock()
	set := ch.members.Load()
	ch.seq++
	seq = ch.seq
	for _, g := range set.groups {
		g.loop.Deliver(frame, g.conns, except)
	}
	ch.mu.Unlock()
	ch.published.Add(1)
	ch.lastActivity.Store(time.Now().UnixNano())
	return seq, set.count
}
