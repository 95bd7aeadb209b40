package fanout

import (
	"errors"
	"hash/maphash"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/arqonbus/arqonbus/engine"
)

// shardCount spreads the channel and client maps over this many locks.
const shardCount = 64

// Errors the hub returns; the caller maps them to protocol errors.
var (
	ErrChannelNotFound = errors.New("channel not found")
	ErrChannelExists   = errors.New("channel already exists")
	ErrClientIDTaken   = errors.New("client id already connected")
	ErrBootstrap       = errors.New("bootstrap channels cannot be deleted")
	ErrHasMembers      = errors.New("channel has members")
)

// LimitError refuses a new channel: the hub holds Options.MaxChannels.
type LimitError struct{ Max int }

func (e *LimitError) Error() string { return "channel limit reached (" + strconv.Itoa(e.Max) + ")" }

// Removal says why a channel left the hub (Options.OnRemoved).
type Removal int

const (
	// Deleted: delete_channel on this node.
	Deleted Removal = iota
	// DeletedElsewhere: another node of the cluster deleted it.
	DeletedElsewhere
	// Evicted: no members and no traffic for the idle time (Hub.Evict).
	Evicted
)

// Hub holds every channel and every connected client id.
type Hub struct {
	seed        maphash.Seed
	autoCreate  bool
	maxChannels int
	newState    func(Key) any
	onHandlers  func(*Channel)
	onRemoved   func(*Channel, Removal)
	chans       [shardCount]chanShard
	clients     [shardCount]clientShard
	nChans      atomic.Int64
	nClients    atomic.Int64
}

type chanShard struct {
	mu   sync.RWMutex
	m    map[Key]*Channel
	peak int // the map's largest size since it was last rebuilt
}

type clientShard struct {
	mu sync.RWMutex
	m  map[string]*engine.Conn
}

// Options configure a Hub.
type Options struct {
	// Bootstrap channels exist from the start and can never be deleted.
	Bootstrap []Key
	// AutoCreate lets Join create a channel that does not exist.
	AutoCreate bool
	// NewState, if set, makes each new channel's State.
	NewState func(k Key) any
	// OnHandlers, if set, hears that a channel's command handlers changed
	// (a member registered, or a handler left). It runs after the change,
	// outside the channel's lock, on the goroutine that made it.
	OnHandlers func(ch *Channel)
	// MaxChannels, if positive, bounds the channels that joins and Create
	// make (LimitError beyond); bootstrap, restored and other nodes'
	// channels are made regardless, and counted.
	MaxChannels int
	// OnRemoved, if set, hears that a channel left the hub, and why. It runs
	// under the hub's and the channel's locks, before a channel of the same
	// name can be made again: what it does (dropping the channel's history)
	// is ordered before anything the next channel of that name does. It
	// must not block nor call back into the hub.
	OnRemoved func(ch *Channel, why Removal)
}

// NewHub makes a hub holding the bootstrap channels.
func NewHub(o Options) *Hub {
	h := &Hub{seed: maphash.MakeSeed(), autoCreate: o.AutoCreate, maxChannels: o.MaxChannels, newState: o.NewState,
		onHandlers: o.OnHandlers, onRemoved: o.OnRemoved}
	for i := range h.chans {
		h.chans[i].m = make(map[Key]*Channel)
		h.clients[i].m = make(map[string]*engine.Conn)
	}
	for _, k := range o.Bootstrap {
		sh := h.chanShard(k)
		if _, ok := sh.m[k]; !ok {
			sh.m[k] = h.newChannel(k, true, time.Now())
			sh.peak = max(sh.peak, len(sh.m))
			h.nChans.Add(1)
		}
	}
	return h
}

func (h *Hub) chanShard(k Key) *chanShard {
	var mh maphash.Hash
	mh.SetSeed(h.seed)
	mh.WriteString(k.Room)
	mh.WriteByte(':')
	mh.WriteString(k.Channel)
	return &h.chans[mh.Sum64()%shardCount]
}

func (h *Hub) clientShard(id string) *clientShard {
	return &h.clients[maphash.String(h.seed, id)%shardCount]
}

// Channel returns the channel k, or nil.
func (h *Hub) Channel(k Key) *Channel {
	sh := h.chanShard(k)
	sh.mu.RLock()
	ch := sh.m[k]
	sh.mu.RUnlock()
	return ch
}

func (h *Hub) newChannel(k Key, bootstrap bool, created time.Time) *Channel {
	ch := newChannel(k, bootstrap, created)
	ch.onHandlers = h.onHandlers
	if h.newState != nil {
		ch.State = h.newState(k)
	}
	return ch
}

// Create makes channel k as create_channel does: kept until deleted, never
// evicted. ErrChannelExists if it is there, a *LimitError when the hub is
// full.
func (h *Hub) Create(k Key) (*Channel, error) { return h.create(k, time.Now(), true, true) }

// CreateAt makes channel k, kept like Create's, with its creation time (a
// restored channel keeps the time it was first made; another node's keeps
// its own), even beyond MaxChannels; ErrChannelExists if it is there.
func (h *Hub) CreateAt(k Key, created time.Time) (*Channel, error) {
	return h.create(k, created, true, false)
}

// CreateTransient makes channel k as a join would: evicted once idle (see
// Evict). ErrChannelExists if it is there, a *LimitError when the hub is full.
func (h *Hub) CreateTransient(k Key) (*Channel, error) { return h.create(k, time.Now(), false, true) }

func (h *Hub) create(k Key, created time.Time, kept, capped bool) (*Channel, error) {
	sh := h.chanShard(k)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if ch := sh.m[k]; ch != nil {
		return ch, ErrChannelExists
	}
	if capped && h.maxChannels > 0 && h.nChans.Load() >= int64(h.maxChannels) {
		return nil, &LimitError{Max: h.maxChannels}
	}
	ch := h.newChannel(k, false, created)
	ch.Kept = kept
	sh.m[k] = ch
	sh.peak = max(sh.peak, len(sh.m))
	h.nChans.Add(1)
	return ch, nil
}

// Join makes c a member of k, creating the channel when the hub auto-creates;
// with a filter c receives only the events it matches. before, if not nil,
// runs under the channel lock just before c becomes a member (a replay of
// missed messages goes there: no gap, no duplicate). Join reports whether c
// newly joined (false if it already was a member: its filter is replaced).
func (h *Hub) Join(k Key, c *engine.Conn, f Filter, before func(*Channel)) (ch *Channel, joined bool, err error) {
	for {
		ch = h.Channel(k)
		if ch == nil {
			if !h.autoCreate {
				return nil, false, ErrChannelNotFound
			}
			var err error
			if ch, err = h.CreateTransient(k); ch == nil {
				return nil, false, err
			} // ErrChannelExists: lost a race to another creator, use theirs
		}
		if joined, ok := ch.add(c, f, before); ok {
			return ch, joined, nil
		}
		// Deleted between the lookup and the join: look again.
	}
}

// Leave removes c from ch; it reports whether c was a member.
func (h *Hub) Leave(ch *Channel, c *engine.Conn) bool { return ch.remove(c) }

// Delete removes a channel that is not bootstrap and has no members.
func (h *Hub) Delete(k Key) error { return h.delete(k, Deleted) }

// DeleteElsewhere removes a channel that another node deleted (not
// bootstrap, no members here): as Delete, but OnRemoved hears
// DeletedElsewhere, so that what the deleting node already did to the
// channel's storage is not done twice.
func (h *Hub) DeleteElsewhere(k Key) error { return h.delete(k, DeletedElsewhere) }

func (h *Hub) delete(k Key, why Removal) error {
	sh := h.chanShard(k)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	ch := sh.m[k]
	switch {
	case ch == nil:
		return ErrChannelNotFound
	case ch.Bootstrap:
		return ErrBootstrap
	}
	// Holding the channel lock while deleting keeps a join from slipping in
	// between the member check and the delete.
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if ch.count.Load() > 0 {
		return ErrHasMembers
	}
	h.removeLocked(sh, ch, why)
	return nil
}

// removeLocked takes ch out of the hub; the shard's and the channel's locks
// are held.
func (h *Hub) removeLocked(sh *chanShard, ch *Channel, why Removal) {
	ch.deleted = true
	if h.onRemoved != nil {
		h.onRemoved(ch, why)
	}
	delete(sh.m, ch.Key)
	h.nChans.Add(-1)
	// Maps never shrink: a shard that held a churn's channels would keep
	// their buckets. Rebuilt when far below its peak (O(channels) once per
	// that many removals).
	if sh.peak >= shrinkMinPeak && len(sh.m) < sh.peak/8 {
		m := make(map[Key]*Channel, len(sh.m))
		for k, c := range sh.m {
			m[k] = c
		}
		sh.m, sh.peak = m, len(m)
	}
}

// shrinkMinPeak is the smallest shard map worth rebuilding.
const shrinkMinPeak = 256

// Evict removes the channels that are neither bootstrap nor kept (Create,
// CreateAt) and have had no members and no traffic since idleSince; it
// returns how many. A join that races with the eviction finds the channel
// gone and makes a new one.
func (h *Hub) Evict(idleSince time.Time) int {
	idle := idleSince.UnixNano()
	evicted := 0
	var candidates []*Channel
	for i := range h.chans {
		sh := &h.chans[i]
		candidates = candidates[:0]
		sh.mu.RLock()
		for _, ch := range sh.m {
			if ch.evictable(idle) {
				candidates = append(candidates, ch)
			}
		}
		sh.mu.RUnlock()
		if len(candidates) == 0 {
			continue
		}
		sh.mu.Lock()
		for _, ch := range candidates {
			ch.mu.Lock()
			if sh.m[ch.Key] == ch && ch.evictable(idle) {
				h.removeLocked(sh, ch, Evicted)
				evicted++
			}
			ch.mu.Unlock()
		}
		sh.mu.Unlock()
		clear(candidates)
	}
	return evicted
}

// Channels returns every channel, sorted by room then channel.
func (h *Hub) Channels() []*Channel {
	out := make([]*Channel, 0, h.nChans.Load())
	for i := range h.chans {
		sh := &h.chans[i]
		sh.mu.RLock()
		for _, ch := range sh.m {
			out = append(out, ch)
		}
		sh.mu.RUnlock()
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i].Key, out[j].Key
		if a.Room != b.Room {
			return a.Room < b.Room
		}
		return a.Channel < b.Channel
	})
	return out
}

// RoomCount is the number of rooms with at least one channel.
func (h *Hub) RoomCount() int {
	rooms := make(map[string]struct{})
	for i := range h.chans {
		sh := &h.chans[i]
		sh.mu.RLock()
		for k := range sh.m {
			rooms[k.Room] = struct{}{}
		}
		sh.mu.RUnlock()
	}
	return len(rooms)
}

// ChannelCount is the number of channels.
func (h *Hub) ChannelCount() int { return int(h.nChans.Load()) }

// Register binds client id to c; ErrClientIDTaken when another live
// connection holds it.
func (h *Hub) Register(id string, c *engine.Conn) error {
	sh := h.clientShard(id)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if old := sh.m[id]; old != nil && old != c {
		return ErrClientIDTaken
	}
	if sh.m[id] == nil {
		h.nClients.Add(1)
	}
	sh.m[id] = c
	return nil
}

// Replace binds id to c and returns the connection that held it, if any.
func (h *Hub) Replace(id string, c *engine.Conn) (old *engine.Conn) {
	sh := h.clientShard(id)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	old = sh.m[id]
	if old == nil {
		h.nClients.Add(1)
	}
	sh.m[id] = c
	if old == c {
		old = nil
	}
	return old
}

// Unregister drops id if it is bound to c.
func (h *Hub) Unregister(id string, c *engine.Conn) {
	sh := h.clientShard(id)
	sh.mu.Lock()
	if sh.m[id] == c {
		delete(sh.m, id)
		h.nClients.Add(-1)
	}
	sh.mu.Unlock()
}

// Client returns the connection holding id, or nil.
func (h *Hub) Client(id string) *engine.Conn {
	sh := h.clientShard(id)
	sh.mu.RLock()
	c := sh.m[id]
	sh.mu.RUnlock()
	return c
}

// ForEachClient calls fn for each registered client id and its connection,
// shard by shard (fn must not register or unregister).
func (h *Hub) ForEachClient(fn func(id string, c *engine.Conn)) {
	for i := range h.clients {
		sh := &h.clients[i]
		sh.mu.RLock()
		for id, c := range sh.m {
			fn(id, c)
		}
		sh.mu.RUnlock()
	}
}

// ClientCount is the number of registered client ids.
func (h *Hub) ClientCount() int { return int(h.nClients.Load()) }

// SendTo queues frame for the client holding id; it reports false when no
// connection holds it.
func (h *Hub) SendTo(id string, frame []byte) bool {
	c := h.Client(id)
	if c == nil || c.Closed() {
		return false
	}
	c.Send(frame)
	return true
}
