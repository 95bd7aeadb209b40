package persist

import (
	"sync"
	"sync/atomic"
)

// pending is a write waiting for Redis: a history entry (XADD to key), or a change to the channel
// registry or the channel's stream.
type pending struct {
	op   pendingOp
	key  string
	e    Entry
	done func(error)
	// field and value of a registry write (the channel, its creation time)
	field, value string
	// sent is true once an attempt may have reached Redis without us learning the outcome (a connection
	// error or timeout). A later XADD rejected as "equal or smaller than the top item" then means the
	// earlier attempt went through; for an entry never sent it means a newer entry got there first.
	sent bool
}

// pendingOp is what a pending write does.
type pendingOp uint8

const (
	opAppend pendingOp = iota // XADD e to the stream key
	opSave                    // HSET field value in the registry key
	opUnsave                  // HDEL field from the registry key
	opDrop                    // DEL the stream key
)

// deque is a FIFO of pending writes in a growable ring buffer.
type deque struct {
	buf  []pending
	head int
	n    int
}

func (d *deque) len() int { return d.n }

func (d *deque) grow() {
	nb := make([]pending, max(2*len(d.buf), 64))
	if d.n > 0 {
		k := copy(nb, d.buf[d.head:min(d.head+d.n, len(d.buf))])
		copy(nb[k:], d.buf[:d.n-k])
	}
	d.buf, d.head = nb, 0
}

func (d *deque) pushBack(p pending) {
	if d.n == len(d.buf) {
		d.grow()
	}
	d.buf[(d.head+d.n)%len(d.buf)] = p
	d.n++
}

func (d *deque) pushFront(p pending) {
	if d.n == len(d.buf) {
		d.grow()
	}
	d.head = (d.head - 1 + len(d.buf)) % len(d.buf)
	d.buf[d.head] = p
	d.n++
}

func (d *deque) popFront() pending {
	p := d.buf[d.head]
	d.buf[d.head] = pending{}
	d.head = (d.head + 1) % len(d.buf)
	d.n--
	return p
}

// shard is one writer goroutine's queue. Channels map to shards by hash, so one channel's writes stay in
// order. The queue holds everything not yet acknowledged by Redis except the batch in flight; its bound
// is RedisOptions.Buffer across all shards together (total), so one busy channel may use all of it.
type shard struct {
	mu    sync.Mutex
	q     deque
	limit int           // writes queued across all shards
	total *atomic.Int64 // writes queued across all shards, shared

	dropped []func(error) // done callbacks of entries dropped by Append, called by the writer
	kick    chan struct{} // wakes the writer; one slot
	backlog atomic.Int64  // queued plus in flight
	closed  bool          // the writer has stopped: push refuses
	failing bool          // owned by the writer goroutine
}

type pushResult int

const (
	pushed pushResult = iota
	pushedDroppedOldest
	pushClosed
)

func newShard(limit int, total *atomic.Int64) *shard {
	return &shard{limit: max(limit, 1), total: total, kick: make(chan struct{}, 1)}
}

func (sh *shard) wake() {
	select {
	case sh.kick <- struct{}{}:
	default:
	}
}

// push queues p, dropping the oldest queued write when full (its done is left for the writer to call).
func (sh *shard) push(p pending, batchSize int) pushResult {
	res := pushed
	sh.mu.Lock()
	if sh.closed {
		sh.mu.Unlock()
		return pushClosed
	}
	// Over the shared bound, this shard gives up its own oldest write: it
	// keeps per-channel order, and the total overshoots by at most one write
	// a shard.
	if sh.total.Load() >= int64(sh.limit) && sh.q.len() > 0 {
		old := sh.q.popFront()
		if old.done != nil {
			sh.dropped = append(sh.dropped, old.done)
		}
		res = pushedDroppedOldest
	} else {
		sh.backlog.Add(1)
		sh.total.Add(1)
	}
	sh.q.pushBack(p)
	n := sh.q.len()
	sh.mu.Unlock()
	if n == 1 || n == batchSize || res == pushedDroppedOldest {
		sh.wake()
	}
	return res
}

// take moves up to max queued writes into dst.
func (sh *shard) take(dst []pending, max int) []pending {
	sh.mu.Lock()
	for sh.q.len() > 0 && len(dst) < max {
		dst = append(dst, sh.q.popFront())
		sh.total.Add(-1)
	}
	sh.mu.Unlock()
	return dst
}

// requeue puts failed writes back at the front, in order, and drops the oldest beyond the limit;
// it returns the dropped writes.
func (sh *shard) requeue(ps []pending) (dropped []pending) {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	for i := len(ps) - 1; i >= 0; i-- {
		sh.q.pushFront(ps[i])
	}
	sh.total.Add(int64(len(ps)))
	for sh.total.Load() > int64(sh.limit) && sh.q.len() > 0 {
		dropped = append(dropped, sh.q.popFront())
		sh.total.Add(-1)
	}
	return dropped
}

// queued returns the number of queued writes (not counting a batch in flight).
func (sh *shard) queued() int {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	return sh.q.len()
}

// takeDropped returns the done callbacks of writes dropped by push.
func (sh *shard) takeDropped() []func(error) {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	d := sh.dropped
	sh.dropped = nil
	return d
}

// closeIfEmpty stops the shard if nothing is queued.
func (sh *shard) closeIfEmpty() bool {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if sh.q.len() == 0 {
		sh.closed = true
	}
	return sh.closed
}

// closeAndDrain stops the shard and removes every queued write.
func (sh *shard) closeAndDrain() []pending {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	sh.closed = true
	out := make([]pending, 0, sh.q.len())
	for sh.q.len() > 0 {
		out = append(out, sh.q.popFront())
	}
	sh.total.Add(-int64(len(out)))
	return out
}
