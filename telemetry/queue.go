package telemetry

import "sync"

// queue is the bounded multi-producer, single-consumer queue between the
// producers and Run. A push is a short critical section and an append; the
// consumer takes everything queued at once (swapping buffers), and is woken
// through a one-slot channel only when it was idle, so a burst of events
// costs one wake-up, not one per event as a channel send to a parked
// receiver would.
type queue struct {
	mu      sync.Mutex
	buf     []item
	size    int
	waiting bool // the consumer found the queue empty and may be parked
	wake    chan struct{}
}

func newQueue(size int) *queue {
	return &queue{size: size, wake: make(chan struct{}, 1), buf: make([]item, 0, min(size, 64))}
}

// push queues it, or reports false when the queue is full. Never blocks
// beyond the short critical section.
func (q *queue) push(it item) bool {
	q.mu.Lock()
	if len(q.buf) >= q.size {
		q.mu.Unlock()
		return false
	}
	q.buf = append(q.buf, it)
	w := q.waiting
	q.waiting = false
	q.mu.Unlock()
	if w {
		select {
		case q.wake <- struct{}{}:
		default:
		}
	}
	return true
}

// take returns everything queued, handing spare (emptied) over as the next
// buffer. When nothing is queued it marks the consumer waiting: wait on
// q.wake before calling take again.
func (q *queue) take(spare []item) []item {
	q.mu.Lock()
	b := q.buf
	if len(b) == 0 {
		q.waiting = true
		q.mu.Unlock()
		return b
	}
	q.buf = spare[:0]
	q.mu.Unlock()
	return b
}

func (q *queue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.buf)
}
