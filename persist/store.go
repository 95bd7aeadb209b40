package persist

import (
	"context"
	"errors"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// Store is the history of all channels. Channel names are "room:channel".
type Store interface {
	// Append records e for channel; it never blocks on I/O (it is called from event loops). Positions
	// must increase per channel. done, if not nil, is called exactly once: with nil when the entry is
	// durable in the store (Memory: at once, before Append returns; Redis: from a writer goroutine once
	// Redis acknowledged it), or with an error when it was dropped.
	Append(channel string, e Entry, done func(error))
	// Range reads history oldest first (see Query). The Redis store reads Redis while it is healthy and
	// falls back to its memory rings while degraded.
	Range(ctx context.Context, channel string, q Query) ([]Entry, error)
	// Recent answers q from the channel's memory ring, without I/O, so that it can run under the
	// channel's lock (join_channel's replay: nothing is published between the read and the join).
	// complete is false when the answer may lack entries: some after Since are no longer in the ring
	// (overwritten, or from before this process; the Redis store still has them, up to its history
	// size), or the limit left some out (the caller may page on from the last entry).
	Recent(channel string, q Query) (entries []Entry, complete bool)
	// Last returns the channel's newest stored position, to seed a Clock after a restart.
	Last(ctx context.Context, channel string) (Position, bool, error)
	// SaveChannel and DeleteChannel write the registry of channels made with create_channel (name to
	// creation time), which LoadChannels reads at start. They never block on I/O: the writes of one
	// channel (its history, its registry entry) reach the store in the order they were made, so a
	// channel created then deleted stays deleted. DeleteChannel also drops the channel's history (the
	// memory ring, and the Redis stream). done, if not nil, is called once, like Append's.
	SaveChannel(channel string, created time.Time, done func(error))
	DeleteChannel(channel string, done func(error))
	LoadChannels(ctx context.Context) (map[string]time.Time, error)
	// Forget drops what the store keeps of the channel in memory (its ring), for a channel that left
	// the bus (evicted when idle); what a Redis store holds stays (see README: the stream is trimmed by
	// count, and read by history). A replay from before the forgotten entries is incomplete.
	Forget(channel string)
	// Health reports the store's state.
	Health() Health
	// Close flushes queued writes (bounded by ctx) and stops. Writes not flushed by then, and Appends
	// after Close, get done(ErrClosed).
	Close(ctx context.Context) error
}

// Sizer is a store that can tell what its memory rings hold.
type Sizer interface {
	// Channels is how many channels the store keeps rings of, and the bytes those hold (by the measure
	// of Limits).
	Channels() (channels int, bytes int64)
}

var (
	_ Sizer = (*Memory)(nil)
	_ Sizer = (*Redis)(nil)
)

// Health is a store's state.
type Health struct {
	Mode      string    // "memory" or "redis"
	Status    string    // "ok" or "degraded"
	Backlog   int       // writes waiting for Redis (queued, in flight or buffered through an outage)
	Dropped   uint64    // writes given up: the oldest beyond the buffer, or rejected by Redis
	Written   uint64    // writes made durable
	LastError string    // the last write or connection error, kept after recovery
	Since     time.Time // when the current degraded state began; zero when ok
}

// Modes and statuses in Health.
const (
	ModeMemory     = "memory"
	ModeRedis      = "redis"
	StatusOK       = "ok"
	StatusDegraded = "degraded"
)

// ErrClosed is given to done for writes that the store could not persist before it closed.
var ErrClosed = errors.New("persist: store closed")

// channelState is one channel's history state.
type channelState struct {
	ring      *Ring
	key       string        // Redis stream key
	shard     *shard        // Redis writer shard
	lastWrite atomic.Uint64 // the table's write tick of the channel's newest entry
}

// Limits bound the memory rings of a store.
type Limits struct {
	Entries      int   // entries per channel
	ChannelBytes int64 // bytes per channel (0: no byte bound); the newest entry is kept whatever its size
	// TotalBytes bounds all rings together (0: no bound). Beyond it, the oldest entries of the channels
	// written least recently are dropped until the rings are a tenth below it.
	TotalBytes int64
}

// budget is the byte bound of all of a store's rings together; a nil budget bounds nothing.
type budget struct {
	limit int64
	used  atomic.Int64
}

func newBudget(limit int64) *budget {
	if limit <= 0 {
		return nil
	}
	return &budget{limit: limit}
}

func (b *budget) add(n int64) {
	if b != nil && n != 0 {
		b.used.Add(n)
	}
}

func (b *budget) over() bool { return b != nil && b.used.Load() > b.limit }

// channelTable maps channels to their state, created on first use.
type channelTable struct {
	mu     sync.RWMutex
	m      map[string]*channelState
	peak   int // the map's largest size since it was last rebuilt
	make   func(channel string) *channelState
	budget *budget

	writes   atomic.Uint64 // ticks for channelState.lastWrite
	trimming atomic.Bool   // one trim at a time
}

func newChannelTable(l Limits, mk func(channel string, ring *Ring) *channelState) *channelTable {
	t := &channelTable{m: make(map[string]*channelState), budget: newBudget(l.TotalBytes)}
	t.make = func(channel string) *channelState {
		r := NewRingBytes(l.Entries, l.ChannelBytes)
		r.budget = t.budget
		return mk(channel, r)
	}
	return t
}

func (t *channelTable) get(channel string) *channelState {
	t.mu.RLock()
	cs := t.m[channel]
	t.mu.RUnlock()
	return cs
}

func (t *channelTable) getOrCreate(channel string) *channelState {
	if cs := t.get(channel); cs != nil {
		return cs
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	cs := t.m[channel]
	if cs == nil {
		cs = t.make(channel)
		t.m[channel] = cs
		t.peak = max(t.peak, len(t.m))
	}
	return cs
}

// append adds e to the channel's ring and keeps the total bound.
func (t *channelTable) append(channel string, e Entry) *channelState {
	cs := t.getOrCreate(channel)
	cs.ring.Append(e)
	cs.lastWrite.Store(t.writes.Add(1))
	if t.budget.over() && t.trimming.CompareAndSwap(false, true) {
		t.trim()
		t.trimming.Store(false)
	}
	return cs
}

// trim brings the rings a tenth below the total bound, shedding the oldest entries of the channels
// written least recently first. It runs once per tenth of the bound written, at most: its sort of the
// channels is paid for by that many bytes of appends.
func (t *channelTable) trim() {
	target := t.budget.limit - t.budget.limit/10
	t.mu.RLock()
	list := make([]*channelState, 0, len(t.m))
	for _, cs := range t.m {
		list = append(list, cs)
	}
	t.mu.RUnlock()
	sort.Slice(list, func(i, j int) bool { return list[i].lastWrite.Load() < list[j].lastWrite.Load() })
	for _, cs := range list {
		over := t.budget.used.Load() - target
		if over <= 0 {
			return
		}
		cs.ring.shed(over)
	}
}

// forget removes the channel's state and empties its ring; it returns the state, or nil.
func (t *channelTable) forget(channel string) *channelState {
	t.mu.Lock()
	cs := t.m[channel]
	if cs != nil {
		delete(t.m, channel)
		// Maps never shrink: rebuilt when far below their peak, so a churn of channels leaves no
		// buckets behind.
		if t.peak >= tableShrinkPeak && len(t.m) < t.peak/8 {
			m := make(map[string]*channelState, len(t.m))
			for k, v := range t.m {
				m[k] = v
			}
			t.m, t.peak = m, len(m)
		}
	}
	t.mu.Unlock()
	if cs != nil {
		cs.ring.Drop()
	}
	return cs
}

// tableShrinkPeak is the smallest table worth rebuilding.
const tableShrinkPeak = 1024

// len is the number of channels the table holds.
func (t *channelTable) len() int {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return len(t.m)
}

// bytes is what all rings hold, by the measure of the total bound.
func (t *channelTable) bytes() int64 {
	if t.budget != nil {
		return t.budget.used.Load()
	}
	var n int64
	t.mu.RLock()
	defer t.mu.RUnlock()
	for _, cs := range t.m {
		n += cs.ring.Bytes()
	}
	return n
}

// Memory is a Store that keeps history in per-channel rings only. Its channel registry is empty.
type Memory struct {
	channels *channelTable
	written  atomic.Uint64

	// forgotten is the newest position of any channel forgotten (or deleted): a channel's ring made
	// afterwards counts everything up to it as lost, so that a replay from before it is incomplete.
	forgottenMu  sync.Mutex
	forgotten    Position
	hasForgotten bool
}

var _ Store = (*Memory)(nil)

// NewMemory returns a Memory store keeping historySize entries per channel.
func NewMemory(historySize int) *Memory { return NewMemoryLimits(Limits{Entries: historySize}) }

// NewMemoryLimits returns a Memory store whose rings keep within l.
func NewMemoryLimits(l Limits) *Memory {
	m := &Memory{}
	m.channels = newChannelTable(l, func(_ string, r *Ring) *channelState {
		m.forgottenMu.Lock()
		if m.hasForgotten {
			r.lost, r.hasLost = m.forgotten, true
		}
		m.forgottenMu.Unlock()
		return &channelState{ring: r}
	})
	return m
}

// Append adds e to the channel's ring and calls done(nil) before returning.
func (m *Memory) Append(channel string, e Entry, done func(error)) {
	m.channels.append(channel, e)
	m.written.Add(1)
	if done != nil {
		done(nil)
	}
}

// Range returns the channel's entries matching q, oldest first.
func (m *Memory) Range(_ context.Context, channel string, q Query) ([]Entry, error) {
	cs := m.channels.get(channel)
	if cs == nil {
		return nil, nil
	}
	return cs.ring.Range(q), nil
}

// Recent is Range without a context: the ring is the memory store's whole history.
func (m *Memory) Recent(channel string, q Query) ([]Entry, bool) {
	cs := m.channels.get(channel)
	if cs == nil {
		// No ring: the channel never had history, unless it was forgotten.
		sp, ok := q.span()
		if !ok {
			return nil, true
		}
		m.forgottenMu.Lock()
		lost := m.hasForgotten && !m.forgotten.Less(sp.lo)
		m.forgottenMu.Unlock()
		return nil, !lost
	}
	return recent(cs, q, true)
}

func recent(cs *channelState, q Query, startsHere bool) ([]Entry, bool) {
	sp, ok := q.span()
	switch {
	case !ok:
		return nil, true
	case cs == nil:
		return nil, startsHere
	}
	return cs.ring.rangeCovered(sp, startsHere)
}

// Last returns the channel's newest position.
func (m *Memory) Last(_ context.Context, channel string) (Position, bool, error) {
	cs := m.channels.get(channel)
	if cs == nil {
		return Position{}, false, nil
	}
	p, ok := cs.ring.Last()
	return p, ok, nil
}

// SaveChannel does nothing: memory mode restores no channels.
func (m *Memory) SaveChannel(_ string, _ time.Time, done func(error)) {
	if done != nil {
		done(nil)
	}
}

// DeleteChannel drops the channel's history.
func (m *Memory) DeleteChannel(channel string, done func(error)) {
	m.Forget(channel)
	if done != nil {
		done(nil)
	}
}

// Forget drops the channel's history: memory mode keeps none elsewhere.
func (m *Memory) Forget(channel string) {
	cs := m.channels.forget(channel)
	if cs == nil {
		return
	}
	cs.ring.mu.Lock()
	last, ok := cs.ring.lost, cs.ring.hasLost
	cs.ring.mu.Unlock()
	if !ok {
		return
	}
	m.forgottenMu.Lock()
	if !m.hasForgotten || m.forgotten.Less(last) {
		m.forgotten, m.hasForgotten = last, true
	}
	m.forgottenMu.Unlock()
}

// LoadChannels returns an empty registry.
func (m *Memory) LoadChannels(context.Context) (map[string]time.Time, error) {
	return map[string]time.Time{}, nil
}

// Channels is how many channels the store keeps history of, and the bytes their rings hold.
func (m *Memory) Channels() (channels int, bytes int64) { return m.channels.len(), m.channels.bytes() }

// Health reports memory mode, always ok.
func (m *Memory) Health() Health {
	return Health{Mode: ModeMemory, Status: StatusOK, Written: m.written.Load()}
}

// Close does nothing.
func (m *Memory) Close(context.Context) error { return nil }
