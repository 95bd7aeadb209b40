package bus

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/arqonbus/arqonbus/cluster"
	"github.com/arqonbus/arqonbus/codec"
	"github.com/arqonbus/arqonbus/engine"
	"github.com/arqonbus/arqonbus/fanout"
	"github.com/arqonbus/arqonbus/persist"
)

// mesh is the broker of a clustered bus: one node of several sharing a Redis (package cluster holds the
// Redis side). While Redis is reachable, this node's events go to Redis, which gives each its position
// and sends it to every node with members of its channel, this one included: every node delivers a
// channel's events in the stream's order. Client ids are claimed in Redis; private messages, commands
// for handlers elsewhere and their answers travel through the nodes' inboxes.
//
// While Redis is unreachable, the node is a bus of its own: events reach this node's members only,
// positioned by the channel's clock, and their history waits in the store's outage buffer (written when
// Redis returns, where it lands after what the stream already has). Events on their way through Redis
// when it went away are settled first, in order: an event already sent holds its channel's later
// events until Redis answers or the writer gives up on it, so that none is delivered twice and the
// channel's positions stay those of its stream. When Redis is back, subscriptions
// catch up from the streams, this node's ids are claimed again, the buffer is flushed, and then events
// cross nodes again.
type mesh struct {
	b    *Bus
	node *cluster.Node // set by JoinCluster
	ring ringKeeper
	jobs *jobs

	clustered  atomic.Bool // events go through Redis
	recovering atomic.Bool

	mu         sync.Mutex
	tables     map[string]peerTable // other instances' handler tables
	index      map[fanout.Key]map[string][]remoteHandler
	rr         map[handlerKey]uint64
	known      map[string]bool // live instances at the last heartbeat
	queries    map[string]*query
	querySeq   uint64
	unreleased []string // ids whose release failed for want of Redis

	handlersVersion atomic.Uint64
	handlersTable   atomic.Pointer[[]byte]
	handlersPending atomic.Bool

	stats meshStats
}

// meshStats count what crossed nodes and what could not.
type meshStats struct {
	published   counter // events this node sent through Redis
	received    counter // events delivered here from Redis (this node's own included)
	localOnly   counter // events routed to this node's members only: Redis was unreachable
	uncertain   counter // events whose way through Redis failed midway: routed here only, or stored but delivered here without coming back (other nodes may have missed them)
	refused     counter // events Redis refused
	gaps        counter // catch-ups that found history trimmed before this node read it
	remoteSends counter // private messages, commands and answers sent to other nodes
	remoteFails counter // ... that found no live target or no Redis
	badPeer     counter // malformed messages from other nodes
}

// ringKeeper is a store that keeps each channel's newest history in memory (persist.Redis).
type ringKeeper interface {
	Remember(channel string, e persist.Entry)
	DropRing(channel string)
}

// Bounds of the jobs waiting on Redis (claims, releases, views of this node for others).
const (
	meshWorkers   = 16
	meshJobLimit  = 100000
	remoteTimeout = 3 * time.Second
)

func newMesh(b *Bus) *mesh {
	return &mesh{
		b: b, jobs: newJobs(meshWorkers, meshJobLimit, b.recoverOffLoop),
		tables: map[string]peerTable{}, index: map[fanout.Key]map[string][]remoteHandler{},
		rr: map[handlerKey]uint64{}, known: map[string]bool{}, queries: map[string]*query{},
	}
}

// ClusterHandler is what the cluster node reports to: pass it as cluster.Options.Handler. Nil for a
// standalone bus.
func (b *Bus) ClusterHandler() cluster.Handler {
	if b.mesh == nil {
		return nil
	}
	return b.mesh
}

// ClusterState is what this node advertises in its heartbeats: pass it as cluster.Options.State.
func (b *Bus) ClusterState() cluster.State {
	st := cluster.State{Clients: b.hub.ClientCount()}
	if m := b.mesh; m != nil {
		st.HandlersVersion = m.handlersVersion.Load()
		if t := m.handlersTable.Load(); t != nil {
			st.Handlers = *t
		}
	}
	return st
}

// JoinCluster attaches the cluster node of a Clustered bus; call it before node.Start. The store must keep
// rings (persist.Redis). The auto-join channels stay subscribed for good: every connection joins them.
func (b *Bus) JoinCluster(node *cluster.Node) {
	m := b.mesh
	m.node = node
	m.ring, _ = b.store.(ringKeeper)
	for _, k := range b.cfg.AutoJoin {
		node.Subscribe(k.String(), nil)
	}
}

// Clustered reports whether events cross nodes now (false for a standalone bus, and while Redis is
// unreachable).
func (b *Bus) Clustered() bool { return b.mesh != nil && b.mesh.clustered.Load() }

// CloseCluster stops the jobs waiting on Redis once they ran, or when ctx ends; call it before closing
// the node (which frees this node's client ids in Redis at once).
func (b *Bus) CloseCluster(ctx context.Context) {
	if b.mesh != nil {
		b.mesh.jobs.stop(ctx)
	}
}

func (m *mesh) up() bool { return m.node != nil && m.clustered.Load() }

// ---- events this node publishes ----

// outgoing is one of this node's events on its way through Redis. It waits in its channel's outbox
// until it comes back with the channel's other events (it is then delivered like them, but not to its
// sender), or, while Redis is unreachable, until it is settled here in the outbox's order (see drain).
type outgoing struct {
	m        *mesh
	ch       *fanout.Channel
	sender   *engine.Conn
	env      *codec.Envelope
	received time.Time
	buf      []byte // engine.HeaderRoom, head, tail
	split    int    // head is buf[engine.HeaderRoom:split], tail buf[split:]
	ack      bool
	state    atomic.Int32 // outQueued, outSent or outWithdrawn

	// Under the channel's lock.
	pos     persist.Position // from Redis's reply, once it came
	replied bool
	failed  bool  // Redis's reply was err: not stored (or, for cluster.ErrUncertain, maybe)
	err     error // when failed
}

// Where an outgoing event is: waiting in the writer's queue, handed to Redis (its reply will say how it
// went), or withdrawn from the queue before it was sent (certainly not stored: it is routed here only).
const (
	outQueued int32 = iota
	outSent
	outWithdrawn
)

// Sending is the writer taking o to send it (cluster.Withdrawable).
func (o *outgoing) Sending() bool { return o.state.CompareAndSwap(outQueued, outSent) }

// withdraw takes o off the writer's queue if it is still there.
func (o *outgoing) withdraw() bool { return o.state.CompareAndSwap(outQueued, outWithdrawn) }

func (o *outgoing) head() []byte { return o.buf[engine.HeaderRoom:o.split] }
func (o *outgoing) tail() []byte { return o.buf[o.split:] }

var positionField = []byte(`"position":"`)

// build lays out the routed envelope around the position Redis will choose: the sender's envelope,
// then metadata ending in "position":"<pos>","received_at":<time>.
func (o *outgoing) build() {
	e := o.env
	buf := make([]byte, engine.HeaderRoom, engine.HeaderRoom+len(e.Payload)+len(e.Metadata)+len(e.ID)+len(e.From)+len(e.Room)+len(e.Channel)+len(e.Timestamp)+routedSlack)
	buf = codec.AppendRouted(buf, e, positionField)
	buf = buf[:len(buf)-2] // the closing braces
	o.split = len(buf)
	buf = append(buf, `","received_at":`...)
	buf = codec.AppendTimestamp(buf, o.received)
	o.buf = append(buf, "}}"...)
}

func (m *mesh) publish(s *session, ch *fanout.Channel, env *codec.Envelope, received time.Time) {
	if !m.up() {
		m.stats.localOnly.Add(1)
		if m.drain(ch) { // what left before Redis went away goes first
			m.b.publishLocal(s, ch, env, received)
			return
		}
		// Events that left before are still on their way (Redis's reply will say whether it stored
		// them): this one waits behind them, never sent.
		o := &outgoing{m: m, ch: ch, sender: s.conn, env: env, received: received, ack: wantsAck(env.Metadata)}
		o.state.Store(outWithdrawn)
		o.build()
		queued := false
		cs := stateOf(ch)
		ch.Locked(func() {
			if queued = len(cs.outbox) > 0; queued {
				cs.outbox = append(cs.outbox, o)
			}
		})
		if !queued {
			m.b.publishLocal(s, ch, env, received)
			return
		}
		m.drain(ch) // in case the outbox's head settled meanwhile
		return
	}
	o := &outgoing{m: m, ch: ch, sender: s.conn, env: env, received: received, ack: wantsAck(env.Metadata)}
	o.build()
	st := stateOf(ch)
	// Under the channel's lock, the outbox's order is the order the writer sends in, which is the order
	// Redis runs them in, which is the order they come back in.
	ch.Locked(func() {
		st.outbox = append(st.outbox, o)
		m.node.Publish(st.name, o.head(), o.tail(), o)
	})
	m.stats.published.Add(1)
}

// Published hears Redis's answer to o (cluster.Result), on a writer goroutine.
func (o *outgoing) Published(pos persist.Position, err error) {
	m := o.m
	defer m.b.recoverOffLoop("cluster publish result")
	if !o.state.CompareAndSwap(outQueued, outSent) && o.state.Load() != outSent {
		return // withdrawn, and routed here
	}
	o.ch.Locked(func() {
		if err == nil {
			o.pos, o.replied = pos, true
		} else {
			o.failed, o.err = true, err
		}
	})
	if m.clustered.Load() && m.node.Up() {
		if err == nil {
			return // the usual case: stored, and on its way back with the channel's other events
		}
		// Refused while Redis is up (or a failure not yet seen as an outage): settle it now.
		st := &settling{m: m, target: o}
		st.after(o.ch.Publish(st, &st.attrs))
		return
	}
	// Redis is unreachable: the channel's events are settled here, in the order they were published.
	m.drain(o.ch)
}

// drain settles ch's outbox from its head while Redis is unreachable (or events are waiting behind
// one that is settled): events Redis stored are delivered here at their positions (their way back may
// be lost), events it did not get (withdrawn from the writer's queue, failed, or published meanwhile)
// are routed here only, in the order they were published, and an event still on its way to Redis holds
// the ones behind it until its reply comes (within the writer's timeout): routing it here before
// knowing whether Redis stored it would deliver it twice when Redis answers late. It reports whether
// the outbox is empty.
func (m *mesh) drain(ch *fanout.Channel) (empty bool) {
	for {
		st := &settling{m: m}
		pub := ch.Publish(st, &st.attrs)
		if st.o == nil {
			return st.empty
		}
		st.after(pub)
	}
}

// settling takes one event out of a channel's outbox under the channel's lock: its head when it is
// settled (drain), or target (Published, for a refusal while Redis is up).
type settling struct {
	m      *mesh
	target *outgoing
	o      *outgoing        // the event taken, nil for none
	empty  bool             // nothing was taken because the outbox is empty
	local  *publishing      // routed here only
	sa     *syncAck         // its sync ack
	at     persist.Position // delivered here at this position
	attrs  routedAttrs
}

func (st *settling) Prepare(ch *fanout.Channel) ([]byte, *engine.Conn) {
	m := st.m
	cs := stateOf(ch)
	i := 0
	if st.target != nil {
		if i = cs.outboxIndex(st.target); i < 0 {
			return nil, nil // it came back already
		}
	} else if len(cs.outbox) == 0 {
		st.empty = true
		return nil, nil
	}
	o := cs.outbox[i]
	// While Redis is reachable, the events in the outbox come back through it.
	onOwn := !m.clustered.Load() || !m.node.Up()
	switch {
	case o.replied:
		if !onOwn {
			return nil, nil // it will come back with the channel's other events
		}
		// Stored, but Redis went away: its way back may be lost, so deliver it here now (other nodes
		// may miss it with Redis).
		m.stats.uncertain.Add(1)
		cs.removeOutbox(i)
		st.o, st.at = o, o.pos
		st.attrs.data = o.buf[engine.HeaderRoom:]
		return m.deliver(cs, o.pos, o.spliced(o.pos)), o.sender
	case o.failed && refused(o.err):
		cs.removeOutbox(i)
		st.o = o
		m.stats.refused.Add(1)
		return nil, nil
	case o.failed:
		// The way failed (for cluster.ErrUncertain, maybe after Redis stored it): route it on this node,
		// like any event published while Redis is unreachable, and know it again should Redis bring
		// it back.
		m.stats.uncertain.Add(1)
		if o.err == cluster.ErrUncertain {
			cs.addGhost(o)
		}
	case o.state.Load() == outWithdrawn:
		// Published while Redis was unreachable (and counted then): not in Redis. (An event withdrawn
		// below leaves the outbox at once: only those wait in it withdrawn.)
	case onOwn && o.withdraw():
		// Taken off the writer's queue before it was sent: not in Redis, for sure.
		m.stats.localOnly.Add(1)
	default:
		return nil, nil // on its way to Redis: what follows waits for its reply
	}
	cs.removeOutbox(i)
	st.o = o
	st.local = &publishing{b: m.b, env: o.env, sender: o.sender, now: o.received}
	if o.ack && m.b.cfg.SyncAcks {
		st.sa = m.b.newSyncAck(o.sender, o.env)
		st.local.done = st.sa.stored
	}
	st.attrs.data = o.buf[engine.HeaderRoom:]
	frame, except := st.local.Prepare(ch)
	st.at = st.local.pos
	return frame, except
}

// after answers the sender once the publish is settled.
func (st *settling) after(pub fanout.Published) {
	o, b := st.o, st.m.b
	switch {
	case o == nil:
	case o.failed && refused(o.err):
		b.sendErrorTo(o.sender, o.env.Room, o.env.Channel, o.env.ID, codec.Unavailable("not published: "+o.err.Error()))
	case st.sa != nil:
		st.sa.routed(pub.Recipients(), st.at)
	case o.ack && !st.at.IsZero():
		o.sender.Send(b.responseFrame(o.env, ackResult(pub.Recipients(), st.at, st.local == nil && b.cfg.SyncAcks)))
	}
}

// spliced is the routed envelope at pos, after engine.HeaderRoom.
func (o *outgoing) spliced(pos persist.Position) []byte {
	head, tail := o.head(), o.tail()
	buf := make([]byte, engine.HeaderRoom, engine.HeaderRoom+len(head)+len(tail)+41)
	buf = append(buf, head...)
	buf = pos.AppendTo(buf)
	return append(buf, tail...)
}

// refused reports whether err is Redis refusing a publish (it was not stored), as opposed to the
// way failing.
func refused(err error) bool {
	switch err {
	case nil, cluster.ErrUncertain, cluster.ErrUnreachable, cluster.ErrClosed:
		return false
	}
	return true
}

// ---- events arriving from Redis (cluster.Handler) ----

// Event delivers one event of a channel, in the stream's order, to this node's members: its frame is
// the stored envelope as is.
func (m *mesh) Event(channel string, pos persist.Position, data []byte) {
	defer m.b.recoverOffLoop("cluster event")
	ch := m.channel(channel)
	if ch == nil {
		return
	}
	a := &arrival{m: m, pos: pos, data: data}
	a.attrs.data = data
	pub := ch.Publish(a, &a.attrs)
	if a.own != nil && a.own.ack {
		o := a.own
		o.sender.Send(m.b.responseFrame(o.env, ackResult(pub.Recipients(), pos, m.b.cfg.SyncAcks)))
	}
	if a.drain {
		m.drain(ch)
	}
}

// arrival is one event from Redis, under its channel's lock.
type arrival struct {
	m     *mesh
	pos   persist.Position
	data  []byte
	own   *outgoing   // when this node published it
	drain bool        // the outbox has events to settle
	attrs routedAttrs // for filtered members, in the same allocation
}

func (a *arrival) Prepare(ch *fanout.Channel) ([]byte, *engine.Conn) {
	cs := stateOf(ch)
	if !cs.clock.Last().Less(a.pos) {
		return nil, nil // delivered already (a catch-up overlaps live events)
	}
	if len(cs.ghosts) > 0 && cs.takeGhost(a.data) {
		// Routed here already, when its way to Redis failed: Redis did store it after all.
		cs.clock.Observe(a.pos)
		return nil, nil
	}
	var sender *engine.Conn
	if a.own = cs.takeOwn(a.data); a.own != nil {
		sender = a.own.sender
		// Events published while Redis was unreachable may wait behind it.
		a.drain = len(cs.outbox) > 0 && (cs.outbox[0].state.Load() == outWithdrawn || !a.m.clustered.Load())
	}
	buf := make([]byte, engine.HeaderRoom, engine.HeaderRoom+len(a.data))
	buf = append(buf, a.data...)
	a.m.stats.received.Add(1)
	return a.m.deliver(cs, a.pos, buf), sender
}

// deliver records buf (engine.HeaderRoom, then the envelope at pos) as the channel's newest event on
// this node: the clock follows it and the ring keeps it for replays. It returns buf as a frame. The
// caller holds the channel's lock.
func (m *mesh) deliver(cs *chanState, pos persist.Position, buf []byte) []byte {
	cs.clock.Observe(pos)
	if m.ring != nil {
		m.ring.Remember(cs.name, persist.Entry{Position: pos, Data: buf[engine.HeaderRoom:]})
	}
	return engine.FinishText(buf)
}

// Gap: the stream lost events before this node read them; replays from before must say incomplete.
func (m *mesh) Gap(channel string) {
	defer m.b.recoverOffLoop("cluster gap")
	m.stats.gaps.Add(1)
	if m.ring != nil {
		m.ring.DropRing(channel)
	}
}

// Last is the newest position of channel this node delivered (or assigned, while on its own).
func (m *mesh) Last(channel string) persist.Position {
	ch := m.channel(channel)
	if ch == nil {
		return persist.Position{}
	}
	var last persist.Position
	ch.Locked(func() { last = stateOf(ch).clock.Last() })
	return last
}

func (m *mesh) channel(name string) *fanout.Channel {
	room, channel, ok := strings.Cut(name, ":")
	if !ok {
		return nil
	}
	return m.b.hub.Channel(fanout.Key{Room: room, Channel: channel})
}

// outboxIndex finds o in the outbox; the caller holds the channel's lock.
func (cs *chanState) outboxIndex(o *outgoing) int {
	for i, x := range cs.outbox {
		if x == o {
			return i
		}
	}
	return -1
}

func (cs *chanState) removeOutbox(i int) {
	copy(cs.outbox[i:], cs.outbox[i+1:])
	cs.outbox[len(cs.outbox)-1] = nil
	cs.outbox = cs.outbox[:len(cs.outbox)-1]
}

// ownScan bounds how far into the outbox an arriving event is looked for: this node's events come back
// in the order they left, so it is the first one but after a failure.
const ownScan = 64

// takeOwn finds and removes the outgoing event that data is (same envelope before the position);
// the caller holds the channel's lock.
func (cs *chanState) takeOwn(data []byte) *outgoing {
	for i, o := range cs.outbox[:min(len(cs.outbox), ownScan)] {
		if bytes.HasPrefix(data, o.head()) && o.state.Load() != outWithdrawn {
			cs.removeOutbox(i)
			return o
		}
	}
	return nil
}

// A ghost is an event of this node whose way to Redis failed midway (cluster.ErrUncertain) and that
// was routed here: should Redis have stored it after all, it comes back, and is not delivered twice.
// Redis runs what it received before it answers anything else, so a ghost comes back, if ever, as soon
// as Redis answers again: ghosts are forgotten after ghostTTL, and the newest ghostLimit are kept.
type ghost struct {
	head, tail []byte
	at         time.Time
}

const (
	ghostTTL   = time.Minute
	ghostLimit = 1024
)

// addGhost remembers o as a ghost; the caller holds the channel's lock.
func (cs *chanState) addGhost(o *outgoing) {
	if len(cs.ghosts) >= ghostLimit {
		cs.ghosts = slices.Delete(cs.ghosts, 0, 1)
	}
	cs.ghosts = append(cs.ghosts, ghost{head: o.head(), tail: o.tail(), at: time.Now()})
}

// takeGhost reports whether data (an envelope at some position) is a ghost, and forgets it; the caller
// holds the channel's lock.
func (cs *chanState) takeGhost(data []byte) bool {
	now := time.Now()
	cs.ghosts = slices.DeleteFunc(cs.ghosts, func(g ghost) bool { return now.Sub(g.at) > ghostTTL })
	for i, g := range cs.ghosts {
		if len(data) > len(g.head)+len(g.tail) && bytes.HasPrefix(data, g.head) && bytes.HasSuffix(data, g.tail) {
			cs.ghosts = slices.Delete(cs.ghosts, i, i+1)
			return true
		}
	}
	return false
}

// ---- reachability ----

// Reachable hears that Redis went away or came back.
func (m *mesh) Reachable(up bool) {
	defer m.b.recoverOffLoop("cluster reachability")
	if !up {
		m.clustered.Store(false)
		m.failover()
		return
	}
	go m.recover()
}

// failover settles the events on their way through Redis (see drain): those Redis stored are
// delivered here at their positions (their way back may be lost), those still in the writer's queue
// are withdrawn and routed here only, all in the order they were published, ahead of anything
// published from now on; those Redis has not answered yet hold the rest of their channel's outbox
// until it does (or the writer gives up on it).
func (m *mesh) failover() {
	for _, ch := range m.b.hub.Channels() {
		m.drain(ch)
	}
}

// outboxesEmpty reports whether no channel has events waiting to be settled.
func (m *mesh) outboxesEmpty() bool {
	for _, ch := range m.b.hub.Channels() {
		empty := true
		ch.Locked(func() { empty = len(stateOf(ch).outbox) == 0 })
		if !empty {
			return false
		}
	}
	return true
}

// recoverWait bounds how long recovery waits for the outage buffer to reach Redis.
const recoverWait = 10 * time.Second

// recover makes events cross nodes again once Redis is back: this node's client ids are claimed again
// (Redis may have lost them, or another node taken one), ids whose release failed are released, and the
// history written here meanwhile reaches Redis first, so that positions Redis assigns follow it.
func (m *mesh) recover() {
	defer m.b.recoverOffLoop("cluster recovery")
	if !m.recovering.CompareAndSwap(false, true) {
		return
	}
	defer m.recovering.Store(false)
	ctx, cancel := context.WithTimeout(context.Background(), recoverWait)
	defer cancel()
	if err := m.b.resume.share(ctx, m.node); err != nil {
		m.b.log.Warn("cluster: no shared resume key yet; resume tokens made here work on this node only", "err", err)
	}
	m.mu.Lock()
	unreleased := m.unreleased
	m.unreleased = nil
	m.mu.Unlock()
	for _, id := range unreleased {
		if m.b.hub.Client(id) == nil {
			_ = m.node.ReleaseID(ctx, id)
		}
	}
	type client struct {
		id      string
		conn    *engine.Conn
		replace bool
	}
	var clients []client
	m.b.hub.ForEachClient(func(id string, c *engine.Conn) {
		// A client that resumed with its token keeps its id against the claim of a node that died
		// meanwhile and has not yet timed out (a restarted node sees its own old instance so).
		replace := false
		if s, ok := c.Value.(*session); ok {
			replace = m.b.mayReplace(s, id)
		}
		clients = append(clients, client{id, c, replace})
	})
	for _, c := range clients {
		ok, holder, err := m.node.ClaimID(ctx, c.id, c.replace)
		if err == nil && ok && holder != "" {
			m.send(holder, c.id, &peerMsg{kind: peerKick, client: c.id})
		}
		if err == nil && !ok {
			m.b.log.Warn("cluster: a client id was taken on another node while Redis was unreachable; closing this node's connection",
				"client_id", c.id, "holder", holder)
			c.conn.Close(engine.ClosePolicyViolation, "client id taken on another node")
		}
	}
	// Until this node's subscriptions are back and caught up, events published through Redis would
	// not reach its own members: keep routing here meanwhile. Events published here while Redis was
	// unreachable must be settled and reach the stream before any that Redis positions.
	for (m.b.store.Health().Backlog > 0 || !m.node.Caught() || !m.outboxesEmpty()) && m.node.Up() && ctx.Err() == nil {
		time.Sleep(10 * time.Millisecond)
	}
	if !m.node.Up() {
		return
	}
	m.clustered.Store(true)
	m.b.log.Info("cluster: events cross nodes", "nodes", len(m.node.Nodes()))
	m.publishHandlers()
}

// ---- client ids ----

func (m *mesh) bind(s *session, id string, done func(*codec.Error)) {
	if !m.b.bindLocal(s, id) {
		done(codec.Conflict("client id " + id + " is already connected"))
		return
	}
	if !m.up() {
		done(nil) // unique on this node; claimed in Redis when it is back
		return
	}
	conn, replace := s.conn, m.b.mayReplace(s, id)
	m.jobs.submit(id, true, func() {
		ctx, cancel := context.WithTimeout(context.Background(), remoteTimeout)
		defer cancel()
		won, holder, err := m.node.ClaimID(ctx, id, replace)
		if err == nil && won && holder != "" {
			m.send(holder, id, &peerMsg{kind: peerKick, client: id})
		}
		conn.Run(func() {
			if conn.Closed() {
				return // Close unbinds it
			}
			if err == nil && !won {
				m.b.hub.Unregister(id, conn)
				done(codec.Conflict("client id " + id + " is already connected to node " + nodeOf(holder)))
				return
			}
			done(nil) // claimed, or Redis failed meanwhile: unique on this node
		})
	})
}

// nodeOf is the node id of an instance.
func nodeOf(instance string) string {
	if i := strings.LastIndexByte(instance, '~'); i > 0 {
		return instance[:i]
	}
	return instance
}

func (m *mesh) unbind(s *session, id string) {
	m.b.hub.Unregister(id, s.conn)
	if m.node == nil {
		return
	}
	m.jobs.submit(id, true, func() {
		ctx, cancel := context.WithTimeout(context.Background(), remoteTimeout)
		defer cancel()
		if m.b.hub.Client(id) != nil {
			return // claimed again here meanwhile
		}
		if err := m.node.ReleaseID(ctx, id); err != nil {
			m.mu.Lock()
			m.unreleased = append(m.unreleased, id)
			m.mu.Unlock()
		}
	})
}

// ---- channel interest ----

func (m *mesh) ready(s *session, k fanout.Key, retry func()) bool {
	if !m.up() {
		return true
	}
	name := k.String()
	if m.node.Subscribed(name) {
		return true
	}
	conn := s.conn
	switch m.node.Subscribe(name, func(error) {
		conn.Run(func() {
			if !conn.Closed() {
				retry()
			}
			m.node.Unsubscribe(name)
		})
	}) {
	case cluster.Live, cluster.Unreachable:
		m.node.Unsubscribe(name)
		return true
	}
	return false
}

func (m *mesh) joined(k fanout.Key) {
	if m.node != nil {
		m.node.Subscribe(k.String(), nil)
	}
}

func (m *mesh) left(k fanout.Key) {
	if m.node != nil {
		m.node.Unsubscribe(k.String())
	}
}

func (m *mesh) nodes() []cluster.Info {
	if m.node == nil {
		return nil
	}
	return m.node.Nodes()
}
