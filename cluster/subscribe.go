package cluster

import (
	"context"
	"strings"
	"sync"
	"time"
	"unsafe"

	"github.com/redis/rueidis"

	"github.com/arqonbus/arqonbus/persist"
)

// Subscriptions. Each subscribed channel has one goroutine that owns its SSUBSCRIBE: it subscribes,
// receives until the subscription ends, and decides whether to subscribe again (the connection was lost,
// or members came back while it was leaving) or to forget the channel. rueidis calls a subscription's
// message callback on that goroutine, so one channel's events are handled in order, one at a time.
//
// Every confirmed (re)subscription starts a catch-up: events that arrive meanwhile are held, the stream
// is read after the handler's Last position, its entries are handed over, then the held events, and
// only then is the subscription live. Events published while no subscription was in place are in the
// stream, so a node's members miss nothing across a reconnect, up to the history size.

// Interest is what Subscribe says about a channel's subscription.
type Interest int

const (
	// Live: the channel's events reach this node now.
	Live Interest = iota
	// Pending: the subscription is on its way; the ready callback will say when it is live or failed.
	Pending
	// Unreachable: Redis cannot be reached; the subscription will be made when it can. ready is not called.
	Unreachable
)

// heldLimit bounds the events held while a catch-up reads the stream; beyond it they are dropped and
// the catch-up reads the stream again, which has them.
const heldLimit = 10000

type subscriptions struct {
	n     *Node
	mu    sync.Mutex
	m     map[string]*sub
	fixed []*sub
	wg    sync.WaitGroup
	// retry is closed (and replaced) when Redis is reachable again, so that subscriptions waiting to
	// try again do so at once rather than at the end of their backoff.
	retry chan struct{}
}

type sub struct {
	channel, topic string
	fixed          func([]byte) // inbox or control: no catch-up, never left

	// Under subscriptions.mu.
	interest      int
	live          bool
	leaving       bool // SUNSUBSCRIBE sent: the goroutine decides what next
	waiters       []func(error)
	stopReceiving context.CancelFunc

	// mu orders delivery: live events against a catch-up.
	mu       sync.Mutex
	catching bool
	gen      uint64 // counts confirmations: a catch-up of an older one gives way
	held     []heldEvent
	overflow bool
}

type heldEvent struct {
	pos  persist.Position
	data []byte
}

func newSubscriptions(n *Node) *subscriptions {
	return &subscriptions{n: n, m: make(map[string]*sub), retry: make(chan struct{})}
}

// kick wakes the subscriptions waiting to try again.
func (ss *subscriptions) kick() {
	ss.mu.Lock()
	close(ss.retry)
	ss.retry = make(chan struct{})
	ss.mu.Unlock()
}

// pause waits d, or until kicked, or until the node closes (false).
func (ss *subscriptions) pause(d time.Duration) bool {
	ss.mu.Lock()
	retry := ss.retry
	ss.mu.Unlock()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ss.n.ctx.Done():
		return false
	case <-t.C:
	case <-retry:
	}
	return true
}

// Caught reports whether every subscription this node wants is live: confirmed by Redis and caught
// up with the streams.
func (n *Node) Caught() bool {
	ss := n.subs
	ss.mu.Lock()
	defer ss.mu.Unlock()
	for _, s := range ss.fixed {
		if !s.live {
			return false
		}
	}
	for _, s := range ss.m {
		if s.interest > 0 && !s.live {
			return false
		}
	}
	return true
}

// Subscribe declares one more local reason to receive channel's events (a member, or a join on its way).
// When it returns Pending, ready (if not nil) is called once, from another goroutine, when the
// subscription is live (nil) or could not be made (an error; the subscription keeps trying in the
// background).
func (n *Node) Subscribe(channel string, ready func(error)) Interest {
	ss := n.subs
	ss.mu.Lock()
	defer ss.mu.Unlock()
	s := ss.m[channel]
	if s == nil {
		s = &sub{channel: channel, topic: n.k.events(channel)}
		ss.m[channel] = s
		ss.wg.Add(1)
		go ss.run(s)
	}
	s.interest++
	switch {
	case s.live:
		return Live
	case !n.Up():
		return Unreachable
	}
	s.waiters = append(s.waiters, ready)
	return Pending
}

// Unsubscribe drops one reason given to Subscribe. A channel without any stays subscribed for Linger, so
// that members coming and going do not churn subscriptions.
func (n *Node) Unsubscribe(channel string) {
	ss := n.subs
	ss.mu.Lock()
	defer ss.mu.Unlock()
	s := ss.m[channel]
	if s == nil || s.interest == 0 {
		return
	}
	if s.interest--; s.interest == 0 {
		time.AfterFunc(n.o.Linger, func() { ss.leave(s) })
	}
}

// Subscribed reports whether channel's events reach this node now.
func (n *Node) Subscribed(channel string) bool {
	n.subs.mu.Lock()
	defer n.subs.mu.Unlock()
	s := n.subs.m[channel]
	return s != nil && s.live
}

// startFixed subscribes to this node's inbox and the control topic.
func (ss *subscriptions) startFixed() {
	h := ss.n.o.Handler
	for _, s := range []*sub{
		{channel: "inbox", topic: ss.n.k.inbox(ss.n.instance), fixed: h.Inbox},
		{channel: "control", topic: ss.n.k.control, fixed: h.Control},
	} {
		s.interest = 1
		ss.mu.Lock()
		ss.fixed = append(ss.fixed, s)
		ss.mu.Unlock()
		ss.wg.Add(1)
		go ss.run(s)
	}
}

// leave unsubscribes s if nothing wants it any more.
func (ss *subscriptions) leave(s *sub) {
	ss.mu.Lock()
	if s.interest > 0 || s.leaving || ss.m[s.channel] != s {
		ss.mu.Unlock()
		return
	}
	s.leaving, s.live = true, false
	stop := s.stopReceiving
	ss.mu.Unlock()
	if c := ss.n.subClient(); c != nil {
		ctx, cancel := context.WithTimeout(ss.n.ctx, time.Second)
		_ = c.Do(ctx, c.B().Sunsubscribe().Channel(s.topic).Build()).Error()
		cancel()
	}
	if stop != nil {
		stop() // in case the SUNSUBSCRIBE did not end the Receive
	}
}

// run owns s's subscription until s is left or the node closes.
func (ss *subscriptions) run(s *sub) {
	defer ss.wg.Done()
	n := ss.n
	backoff := 50 * time.Millisecond
	for n.ctx.Err() == nil {
		c := n.subClient()
		if c == nil {
			if !ss.pause(backoff) {
				break
			}
			backoff = min(2*backoff, time.Second)
			continue
		}
		ctx, cancel := context.WithCancel(n.ctx)
		ss.mu.Lock()
		s.stopReceiving = cancel
		ss.mu.Unlock()
		hooked := rueidis.WithOnSubscriptionHook(ctx, func(ps rueidis.PubSubSubscription) {
			if ps.Kind == "ssubscribe" && ps.Channel == s.topic {
				ss.confirmed(s)
			}
		})
		err := c.Receive(hooked, c.B().Ssubscribe().Channel(s.topic).Build(), func(m rueidis.PubSubMessage) {
			ss.message(s, m.Message)
		})
		cancel()
		ss.mu.Lock()
		s.live, s.stopReceiving = false, nil
		if s.leaving {
			s.leaving = false
			if s.interest == 0 {
				delete(ss.m, s.channel)
				ss.mu.Unlock()
				ss.fail(s, ErrClosed) // nobody waits on a channel without interest; be safe
				return
			}
			ss.mu.Unlock()
			continue // members came back while it was leaving
		}
		ss.mu.Unlock()
		if n.ctx.Err() != nil {
			break
		}
		// The connection failed, or Redis ended the subscription (a slot moved): subscribe again. A
		// lost connection is not reported to the node: publishes and heartbeats notice an outage, and a
		// subscription that comes back catches up from the stream.
		if err == nil {
			err = ErrUnreachable
		}
		ss.fail(s, err)
		if !ss.pause(backoff) {
			break
		}
		backoff = min(2*backoff, time.Second)
	}
	ss.fail(s, ErrClosed)
}

// fail tells the joins waiting on s that it could not be made now.
func (ss *subscriptions) fail(s *sub, err error) {
	ss.mu.Lock()
	ws := s.waiters
	s.waiters = nil
	ss.mu.Unlock()
	for _, w := range ws {
		if w != nil {
			w(err)
		}
	}
}

// confirmed runs on rueidis's reader when Redis confirms s's subscription: hold events, and catch up.
func (ss *subscriptions) confirmed(s *sub) {
	if s.fixed != nil {
		ss.markLive(s)
		return
	}
	s.mu.Lock()
	s.catching = true
	s.gen++
	gen := s.gen
	s.held, s.overflow = s.held[:0], false
	s.mu.Unlock()
	go ss.catchUp(s, gen)
}

func (ss *subscriptions) markLive(s *sub) {
	ss.mu.Lock()
	s.live = true
	ws := s.waiters
	s.waiters = nil
	ss.mu.Unlock()
	for _, w := range ws {
		if w != nil {
			w(nil)
		}
	}
}

// message handles one published message of s.
func (ss *subscriptions) message(s *sub, msg string) {
	if s.fixed != nil {
		s.fixed(bytesOf(msg))
		return
	}
	posText, data, ok := strings.Cut(msg, " ")
	pos, ok2 := persist.ParsePosition(posText)
	if !ok || !ok2 {
		ss.n.log.Warn("cluster: malformed event message", "channel", s.channel)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.catching {
		if len(s.held) >= heldLimit {
			s.overflow = true
			clear(s.held)
			s.held = s.held[:0]
		}
		if !s.overflow {
			s.held = append(s.held, heldEvent{pos, []byte(data)})
		}
		return
	}
	ss.n.o.Handler.Event(s.channel, pos, bytesOf(data))
}

// bytesOf views s as bytes without copying; the bytes must not be modified.
func bytesOf(s string) []byte { return unsafe.Slice(unsafe.StringData(s), len(s)) }

// catchUp reads what the stream has after the handler's last position, hands it over with the held
// events, and makes s live. It retries until it succeeds or a newer confirmation takes over.
func (ss *subscriptions) catchUp(s *sub, gen uint64) {
	n := ss.n
	backoff := 50 * time.Millisecond
	for n.ctx.Err() == nil {
		done, err := ss.catchUpOnce(s, gen)
		if done {
			return
		}
		if err == nil {
			continue // held events overflowed: read again
		}
		s.mu.Lock()
		stale := s.gen != gen
		s.mu.Unlock()
		if stale || !ss.pause(backoff) {
			return
		}
		backoff = min(2*backoff, time.Second)
	}
}

// catchUpOnce reports done once s is live (or the catch-up is stale); with done false and a nil error
// it must run again.
func (ss *subscriptions) catchUpOnce(s *sub, gen uint64) (done bool, err error) {
	n := ss.n
	h := n.o.Handler
	entries, gap, err := n.readAfter(s.channel, h.Last(s.channel))
	if err != nil {
		return false, err
	}
	s.mu.Lock()
	if s.gen != gen {
		s.mu.Unlock()
		return true, nil
	}
	if gap {
		h.Gap(s.channel)
	}
	for _, e := range entries {
		h.Event(s.channel, e.Position, e.Data)
	}
	if s.overflow {
		s.overflow = false
		s.mu.Unlock()
		return false, nil
	}
	for i := range s.held {
		h.Event(s.channel, s.held[i].pos, s.held[i].data)
	}
	clear(s.held)
	s.held = s.held[:0]
	s.catching = false
	s.mu.Unlock()
	ss.markLive(s)
	return true, nil
}

// readAfter reads channel's stream after pos (all of it for the zero position), at most the history
// size; gap is true when more was there than that, and entries are then the newest HistorySize.
func (n *Node) readAfter(channel string, pos persist.Position) (entries []persist.Entry, gap bool, err error) {
	c := n.client()
	if c == nil {
		return nil, false, ErrUnreachable
	}
	ctx, cancel := context.WithTimeout(n.ctx, 3*time.Second)
	defer cancel()
	key := n.k.stream(channel)
	start := "-"
	if !pos.IsZero() {
		start = "(" + pos.String()
	}
	limit := int64(n.o.HistorySize)
	entries, err = persist.ParseStream(c.Do(ctx, c.B().Xrange().Key(key).Start(start).End("+").Count(limit+1).Build()), false)
	if err != nil || int64(len(entries)) <= limit {
		return entries, false, err
	}
	entries, err = persist.ParseStream(c.Do(ctx, c.B().Xrevrange().Key(key).End("+").Start(start).Count(limit).Build()), true)
	return entries, true, err
}

// stop ends every subscription; the node's context is already canceled.
func (ss *subscriptions) stop() { ss.wg.Wait() }
