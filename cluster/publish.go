package cluster

import (
	"context"
	"hash/maphash"
	"strconv"
	"sync"
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

// Publish queues an event of channel for the cluster: the Lua call stores head+position+tail in the
// channel's stream and publishes it to every subscribed node, this one included. head and tail must not
// change until res hears the outcome. Publish never blocks on I/O (it is called under the channel's
// lock), and publishes of one channel keep their order (one writer per channel, one connection per
// Redis node).
func (n *Node) Publish(channel string, head, tail []byte, res Result) {
	n.pub.push(channel, publishing{channel: channel, head: head, tail: tail, res: res})
}

type publishing struct {
	channel    string
	head, tail []byte
	res        Result
}

// publisher sends queued publishes in pipelined batches: each writer takes everything queued (up to a
// batch) and sends it at once, without waiting for more, so a lone publish leaves at once and a busy
// channel's rate is bounded by Redis, not by one round trip per event.
type publisher struct {
	n      *Node
	seed   maphash.Seed
	shards []*pubShard
	maxlen string
	wg     sync.WaitGroup
	quit   chan struct{}
}

type pubShard struct {
	mu     sync.Mutex
	q      []publishing
	kick   chan struct{}
	closed bool
}

func newPublisher(n *Node) *publisher {
	p := &publisher{n: n, seed: maphash.MakeSeed(), maxlen: strconv.Itoa(n.o.HistorySize), quit: make(chan struct{})}
	for range n.o.Shards {
		p.shards = append(p.shards, &pubShard{kick: make(chan struct{}, 1)})
	}
	return p
}

func (p *publisher) start() {
	for _, sh := range p.shards {
		p.wg.Add(1)
		go p.writer(sh)
	}
}

func (p *publisher) push(channel string, m publishing) {
	sh := p.shards[maphash.String(p.seed, channel)%uint64(len(p.shards))]
	sh.mu.Lock()
	if sh.closed {
		sh.mu.Unlock()
		go m.res.Published(persist.Position{}, ErrClosed) // the caller holds the channel's lock
		return
	}
	sh.q = append(sh.q, m)
	first := len(sh.q) == 1
	sh.mu.Unlock()
	if first {
		select {
		case sh.kick <- struct{}{}:
		default:
		}
	}
}

// stop sends what is queued (within a few seconds) and stops the writers.
func (p *publisher) stop() {
	close(p.quit)
	p.wg.Wait()
}

func (p *publisher) writer(sh *pubShard) {
	defer p.wg.Done()
	var batch []publishing
	var cmds rueidis.Commands
	for {
		sh.mu.Lock()
		n := min(len(sh.q), p.n.o.BatchSize)
		batch = append(batch[:0], sh.q[:n]...)
		rest := copy(sh.q, sh.q[n:])
		clear(sh.q[rest:])
		sh.q = sh.q[:rest]
		if n == 0 && isDone(p.quit) {
			sh.closed = true
		}
		sh.mu.Unlock()
		if n == 0 {
			if isDone(p.quit) {
				return
			}
			select {
			case <-sh.kick:
			case <-p.quit:
			}
			continue
		}
		cmds = p.send(batch, cmds)
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

// publishTimeout bounds one batch's round trip.
const publishTimeout = 5 * time.Second

// send runs one batch and settles each publish.
func (p *publisher) send(batch []publishing, cmds rueidis.Commands) rueidis.Commands {
	c := p.n.client()
	if c == nil || !p.n.Up() {
		for i := range batch {
			batch[i].res.Published(persist.Position{}, ErrUnreachable)
		}
		return cmds
	}
	build := func() rueidis.Commands {
		cmds = cmds[:0]
		for i := range batch {
			m := &batch[i]
			cmds = append(cmds, publishScript.cmd(c, []string{p.n.k.stream(m.channel), p.n.k.events(m.channel)},
				p.maxlen, rueidis.BinaryString(m.head), rueidis.BinaryString(m.tail)))
		}
		return cmds
	}
	ctx, cancel := context.WithTimeout(context.Background(), publishTimeout)
	defer cancel()
	results := c.DoMulti(ctx, build()...)
	// Redis lost its scripts (a restart): nothing of this batch ran. Load and send it again.
	if len(results) > 0 && isNoScript(results[0].Error()) {
		_ = publishScript.load(ctx, c)
		results = c.DoMulti(ctx, build()...)
	}
	clear(cmds)
	// Connection trouble is reported before any outcome, so that whoever hears ErrUncertain already
	// knows Redis is unreachable.
	for i := range results {
		if err := results[i].Error(); err != nil && !isRedisErr(err) {
			p.n.lost(err)
			break
		}
	}
	for i := range batch {
		pos, err := results[i].ToString()
		switch {
		case err == nil:
			if pp, ok := persist.ParsePosition(pos); ok {
				batch[i].res.Published(pp, nil)
				continue
			}
			batch[i].res.Published(persist.Position{}, ErrUncertain)
		case isRedisErr(err):
			batch[i].res.Published(persist.Position{}, err)
		default:
			batch[i].res.Published(persist.Position{}, ErrUncertain)
		}
	}
	return cmds
}

func isRedisErr(err error) bool {
	_, ok := rueidis.IsRedisErr(err)
	return ok
}

func isRedisNil(err error) bool { return rueidis.IsRedisNil(err) }
