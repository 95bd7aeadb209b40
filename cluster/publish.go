package cluster

import (
	"context"
	"hash/maphash"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/rueidis"

	"github.com/arqonbus/arqonbus/persist"
)

// Result hears how a publish went.
type Result interface {
	// Published is called once, from a writer goroutine, with the event's position, or with
	// ErrUncertain (the connection failed on the way: Redis may have it), ErrUnreachable or ErrClosed
	// (not sent), or Redis's refusal (not stored).
	Published(pos persist.Position, err error)
}

// Withdrawable is a Result whose publish may be called off while it waits in the queue, so that its
// sender knows for sure it never reached Redis. The writer calls Sending just before it sends the
// publish: false drops it, and no Published follows; true means it is on its way and Published will
// say how it went.
type Withdrawable interface {
	Result
	Sending() bool
}

// Publish queues an event of channel for the cluster: the Lua call stores head+position+tail in the
// channel's stream and publishes it to every subscribed node, this one included. head and tail must not
// change until res hears the outcome. Publish never blocks on I/O (it is called under the channel's
// lock), and publishes of one channel keep their order (one writer per channel, one connection per
// Redis node).
func (n *Node) Publish(channel string, head, tail []byte, res Result) {
	n.out.push(channel, &publishing{channel: channel, head: head, tail: tail, res: res})
}

// Sent hears where a message for another node went: to instance, or nowhere (ok false: no live node
// holds the client, or nothing listens on that node's inbox), or err when Redis could not be asked.
type Sent func(instance string, ok bool, err error)

// SendToNode queues msg for instance's inbox; SendToClient for the inbox of the live node holding client
// id. Messages queued with the same key (a client id) leave in order; both return at once, and done (if
// not nil) runs on a writer goroutine.
func (n *Node) SendToNode(key, instance string, msg []byte, done Sent) {
	n.out.push(key, &mail{instance: instance, msg: msg, done: done})
}

// SendToClient: see SendToNode.
func (n *Node) SendToClient(key, id string, msg []byte, done Sent) {
	n.out.push(key, &mail{client: id, msg: msg, done: done})
}

// Broadcast queues msg for the control topic, which every node (this one included) hears.
func (n *Node) Broadcast(msg []byte) { n.out.push("control", &mail{broadcast: true, msg: msg}) }

// outgoing is what a writer sends: its command, and what to do with Redis's answer.
type outgoing interface {
	command(n *Node, c rueidis.Client) rueidis.Completed
	size() int                                 // bytes it holds while queued
	settle(res rueidis.RedisResult, err error) // err is the failure to send, else nil
	scripted() bool                            // a Lua script: on NOSCRIPT it did not run and is sent again
	claim() bool                               // false: withdrawn, drop it unsent and unsettled
}

type publishing struct {
	channel    string
	head, tail []byte
	res        Result
}

func (p *publishing) claim() bool {
	if w, ok := p.res.(Withdrawable); ok {
		return w.Sending()
	}
	return true
}

func (p *publishing) command(n *Node, c rueidis.Client) rueidis.Completed {
	return publishScript.cmd(c, []string{n.k.stream(p.channel), n.k.events(p.channel)},
		n.out.maxlen, rueidis.BinaryString(p.head), rueidis.BinaryString(p.tail))
}

func (p *publishing) scripted() bool { return true }

func (p *publishing) size() int { return len(p.head) + len(p.tail) + len(p.channel) }

func (p *publishing) settle(res rueidis.RedisResult, err error) {
	if err != nil {
		p.res.Published(persist.Position{}, err)
		return
	}
	pos, err := res.ToString()
	switch {
	case err == nil:
		if pp, ok := persist.ParsePosition(pos); ok {
			p.res.Published(pp, nil)
			return
		}
		p.res.Published(persist.Position{}, ErrUncertain)
	case isRedisErr(err):
		p.res.Published(persist.Position{}, err)
	default:
		p.res.Published(persist.Position{}, ErrUncertain)
	}
}

type mail struct {
	instance, client string
	broadcast        bool
	msg              []byte
	done             Sent
}

func (m *mail) command(n *Node, c rueidis.Client) rueidis.Completed {
	switch {
	case m.broadcast:
		return c.B().Spublish().Channel(n.k.control).Message(rueidis.BinaryString(m.msg)).Build()
	case m.client != "":
		return sendToClientScript.cmd(c, []string{n.k.clients, n.k.nodes}, m.client, n.ttlMs(), n.k.inboxPrefix(), rueidis.BinaryString(m.msg))
	}
	return c.B().Spublish().Channel(n.k.inbox(m.instance)).Message(rueidis.BinaryString(m.msg)).Build()
}

func (m *mail) scripted() bool { return m.client != "" }

func (m *mail) claim() bool { return true }

func (m *mail) size() int { return len(m.msg) + len(m.instance) + len(m.client) }

func (m *mail) settle(res rueidis.RedisResult, err error) {
	if m.done == nil {
		return
	}
	if err == nil {
		err = res.Error()
	}
	switch {
	case isRedisNil(err):
		m.done("", false, nil)
	case err != nil:
		m.done("", false, err)
	case m.client != "":
		inst, _ := res.ToString()
		m.done(inst, true, nil)
	default:
		got, _ := res.AsInt64()
		m.done(m.instance, got > 0, nil)
	}
}

// writer sends what is queued in pipelined batches: each shard's goroutine takes everything queued (up
// to a batch) and sends it at once, without waiting for more, so a lone message leaves at once and a
// busy channel's (or client's) rate is bounded by Redis, not by one round trip per message.
type writer struct {
	n        *Node
	seed     maphash.Seed
	shards   []*outShard
	maxlen   string
	maxBytes int // queued bytes one shard holds before it refuses
	wg       sync.WaitGroup
	quit     chan struct{}
	refused  atomic.Uint64
}

type outShard struct {
	mu     sync.Mutex
	q      []outgoing
	bytes  int // held by q
	kick   chan struct{}
	closed bool

	// Refused messages are settled off the caller's goroutine (it may hold a channel's lock) by one
	// goroutine at a time per shard, however many are refused.
	refusals []refusal
	settling bool
}

type refusal struct {
	it  outgoing
	err error
}

func newWriter(n *Node) *writer {
	w := &writer{n: n, seed: maphash.MakeSeed(), maxlen: strconv.Itoa(n.o.HistorySize), quit: make(chan struct{}),
		maxBytes: max(n.o.MaxQueuedBytes/n.o.Shards, 1)}
	for range n.o.Shards {
		w.shards = append(w.shards, &outShard{kick: make(chan struct{}, 1)})
	}
	return w
}

func (w *writer) start() {
	for _, sh := range w.shards {
		w.wg.Add(1)
		go w.run(sh)
	}
}

func (w *writer) push(key string, it outgoing) {
	sh := w.shards[maphash.String(w.seed, key)%uint64(len(w.shards))]
	size := it.size()
	sh.mu.Lock()
	switch {
	case sh.closed:
		w.refuse(sh, it, ErrClosed)
		sh.mu.Unlock()
		return
	case sh.bytes+size > w.maxBytes && len(sh.q) > 0:
		// Redis is slower than the publishers: refuse rather than hold an unbounded backlog.
		w.refused.Add(1)
		w.refuse(sh, it, ErrOverloaded)
		sh.mu.Unlock()
		return
	}
	sh.q = append(sh.q, it)
	sh.bytes += size
	first := len(sh.q) == 1
	sh.mu.Unlock()
	if first {
		select {
		case sh.kick <- struct{}{}:
		default:
		}
	}
}

// refuse settles it with err on the shard's settling goroutine. Called with sh.mu held.
func (w *writer) refuse(sh *outShard, it outgoing, err error) {
	sh.refusals = append(sh.refusals, refusal{it, err})
	if sh.settling {
		return
	}
	sh.settling = true
	go func() {
		for {
			sh.mu.Lock()
			batch := sh.refusals
			sh.refusals = nil
			if len(batch) == 0 {
				sh.settling = false
				sh.mu.Unlock()
				return
			}
			sh.mu.Unlock()
			for _, r := range batch {
				r.it.settle(rueidis.RedisResult{}, r.err)
			}
		}
	}()
}

// stop sends what is queued and stops the writers.
func (w *writer) stop() {
	close(w.quit)
	w.wg.Wait()
}

func (w *writer) run(sh *outShard) {
	defer w.wg.Done()
	var batch []outgoing
	for {
		sh.mu.Lock()
		n := min(len(sh.q), w.n.o.BatchSize)
		batch = append(batch[:0], sh.q[:n]...)
		for _, it := range batch {
			sh.bytes -= it.size()
		}
		rest := copy(sh.q, sh.q[n:])
		clear(sh.q[rest:])
		sh.q = sh.q[:rest]
		if n == 0 && isDone(w.quit) {
			sh.closed = true
		}
		sh.mu.Unlock()
		if n == 0 {
			if isDone(w.quit) {
				return
			}
			select {
			case <-sh.kick:
			case <-w.quit:
			}
			continue
		}
		w.send(batch)
		clear(batch)
	}
}

func isDone(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// sendTimeout bounds one batch's round trip.
const sendTimeout = 5 * time.Second

// send runs one batch and settles each message (but those withdrawn before they were sent).
func (w *writer) send(batch []outgoing) {
	claimed := batch[:0]
	for _, it := range batch {
		if it.claim() {
			claimed = append(claimed, it)
		}
	}
	batch = claimed
	if len(batch) == 0 {
		return
	}
	c := w.n.client()
	if c == nil || !w.n.Up() {
		for _, it := range batch {
			it.settle(rueidis.RedisResult{}, ErrUnreachable)
		}
		return
	}
	// A new slice each batch, never cleared or reused: when DoMulti gives up (its context ends,
	// the connection breaks) it returns while rueidis's writer may still be reading the commands
	// from this very slice.
	cmds := make(rueidis.Commands, 0, len(batch))
	for _, it := range batch {
		cmds = append(cmds, it.command(w.n, c))
	}
	ctx, cancel := context.WithTimeout(context.Background(), sendTimeout)
	defer cancel()
	results := c.DoMulti(ctx, cmds...)
	// Redis lost its scripts (a restart): the scripted messages did not run. Load and send those again.
	var again []int
	for i, it := range batch {
		if it.scripted() && isNoScript(results[i].Error()) {
			again = append(again, i)
		}
	}
	if len(again) > 0 {
		_ = publishScript.load(ctx, c)
		_ = sendToClientScript.load(ctx, c)
		retry := make(rueidis.Commands, len(again))
		for j, i := range again {
			retry[j] = batch[i].command(w.n, c)
		}
		for j, res := range c.DoMulti(ctx, retry...) {
			results[again[j]] = res
		}
	}
	// Connection trouble is reported before any outcome, so that whoever hears ErrUncertain already
	// knows Redis is unreachable.
	for i := range results {
		if err := results[i].Error(); err != nil && !isRedisErr(err) && !isRedisNil(err) {
			w.n.lost(err)
			break
		}
	}
	for i, it := range batch {
		it.settle(results[i], nil)
	}
}

// isRedisErr reports an error reply of Redis (not a nil reply, not connection trouble).
func isRedisErr(err error) bool {
	_, ok := rueidis.IsRedisErr(err)
	return ok
}

func isRedisNil(err error) bool { return rueidis.IsRedisNil(err) }

// QueueRefused counts publishes and messages refused with ErrOverloaded.
func (n *Node) QueueRefused() uint64 { return n.out.refused.Load() }
