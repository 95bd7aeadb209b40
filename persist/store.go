package persist

import (
	"context"
	"errors"
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
	// SaveChannel, DeleteChannel and LoadChannels keep the registry of channels made with
	// create_channel (name to creation time), restored at start.
	SaveChannel(ctx context.Context, channel string, created time.Time) error
	DeleteChannel(ctx context.Context, channel string) error
	LoadChannels(ctx context.Context) (map[string]time.Time, error)
	// Health reports the store's state.
	Health() Health
	// Close flushes queued writes (bounded by ctx) and stops. Writes not flushed by then, and Appends
	// after Close, get done(ErrClosed).
	Close(ctx context.Context) error
}

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
	ring  *Ring
	key   string // Redis stream key
	shard *shard // Redis writer shard
}

// channelTable maps channels to their state, created on first use.
type channelTable struct {
	mu   sync.RWMutex
	m    map[string]*channelState
	make func(channel string) *channelState
}

func newChannelTable(mk func(channel string) *channelState) *channelTable {
	return &channelTable{m: make(map[string]*channelState), make: mk}
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
	}
	return cs
}

// Memory is a Store that keeps history in per-channel rings only. Its channel registry is empty.
type Memory struct {
	channels *channelTable
	written  atomic.Uint64
}

var _ Store = (*Memory)(nil)

// NewMemory returns a Memory store keeping historySize entries per channel.
func NewMemory(historySize int) *Memory {
	return &Memory{channels: newChannelTable(func(string) *channelState {
		return &channelState{ring: NewRing(historySize)}
	})}
}

// Append adds e to the channel's ring and calls done(nil) before returning.
func (m *Memory) Append(channel string, e Entry, done func(error)) {
	m.channels.getOrCreate(channel).ring.Append(e)
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
	return recent(m.channels.get(channel), q, true)
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
func (m *Memory) SaveChannel(context.Context, string, time.Time) error { return nil }

// DeleteChannel does nothing.
func (m *Memory) DeleteChannel(context.Context, string) error { return nil }

// LoadChannels returns an empty registry.
func (m *Memory) LoadChannels(context.Context) (map[string]time.Time, error) {
	return map[string]time.Time{}, nil
}

// Health reports memory mode, always ok.
func (m *Memory) Health() Health {
	return Health{Mode: ModeMemory, Status: StatusOK, Written: m.written.Load()}
}

// Close does nothing.
func (m *Memory) Close(context.Context) error { return nil }
