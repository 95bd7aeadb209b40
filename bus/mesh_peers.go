package bus

import (
	"context"
	"strconv"
	"time"

	"github.com/bytedance/sonic"

	"github.com/arqonbus/arqonbus/cluster"
	"github.com/arqonbus/arqonbus/codec"
	"github.com/arqonbus/arqonbus/commands"
	"github.com/arqonbus/arqonbus/engine"
	"github.com/arqonbus/arqonbus/fanout"
	"github.com/arqonbus/arqonbus/persist"
)

// What nodes of a cluster say to each other: private messages, commands to handlers elsewhere and
// their answers, cluster-wide views, channel changes and handler tables.

// send puts msg in instance's inbox, in order with the other messages of key (a client id: one
// client's messages keep their order, and different clients' go in parallel).
func (m *mesh) send(instance, key string, msg *peerMsg) {
	msg.from = m.node.Instance()
	m.stats.remoteSends.Add(1)
	m.node.SendToNode(key, instance, msg.encode(), m.counted)
}

// counted counts a message to another node that found no one there.
func (m *mesh) counted(_ string, ok bool, err error) {
	if err != nil || !ok {
		m.stats.remoteFails.Add(1)
	}
}

// broadcast sends msg to every node's control topic.
func (m *mesh) broadcast(msg *peerMsg) {
	if !m.up() {
		return
	}
	msg.from = m.node.Instance()
	m.node.Broadcast(msg.encode())
}

// ---- private messages ----

func (m *mesh) private(s *session, env *codec.Envelope, target string, msg []byte) {
	if !m.up() {
		m.b.sendError(s, env, codec.Unavailable("client "+target+" is not on this node, and the other nodes cannot be reached now"))
		return
	}
	pm := &peerMsg{kind: peerPrivate, from: m.node.Instance(), client: target, sender: s.ID(), req: env.ID, room: env.Room, channel: env.Channel, body: msg}
	conn, ack := s.conn, wantsAck(env.Metadata)
	m.stats.remoteSends.Add(1)
	m.node.SendToClient(target, target, pm.encode(), func(_ string, ok bool, err error) {
		defer m.b.recoverOffLoop("cluster private message")
		switch {
		case err != nil:
			m.stats.remoteFails.Add(1)
			m.b.sendErrorTo(conn, env.Room, env.Channel, env.ID, codec.Unavailable("the other nodes cannot be reached now"))
		case !ok:
			m.b.sendErrorTo(conn, env.Room, env.Channel, env.ID, targetNotFound(target))
		default:
			m.b.stats.privates.Add(1)
			if ack {
				conn.Send(m.b.responseFrame(env, ackResult(1, persist.Position{}, false)))
			}
		}
	})
}

func targetNotFound(target string) *codec.Error {
	return withField(codec.TargetNotFound("client "+target+" is not connected"), "payload.target")
}

// ---- commands to handlers on other nodes ----

// peerTable is one node's command handlers, as it advertises them.
type peerTable struct {
	version  uint64
	handlers []tableEntry
}

type tableEntry struct {
	Room    string   `json:"room"`
	Channel string   `json:"channel"`
	Client  string   `json:"client"`
	Names   []string `json:"names"`
}

type remoteHandler struct{ node, client string }

type handlerKey struct {
	k    fanout.Key
	name string
}

func (m *mesh) pickHandler(k fanout.Key, name string) handlerRef {
	var local []*engine.Conn
	if ch := m.b.hub.Channel(k); ch != nil {
		local = ch.HandlersOf(name)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	var remote []remoteHandler
	if m.up() {
		remote = m.index[k][name]
	}
	n := uint64(len(local) + len(remote))
	if n == 0 {
		return handlerRef{}
	}
	hk := handlerKey{k, name}
	i := m.rr[hk] % n
	m.rr[hk]++
	if i < uint64(len(local)) {
		return handlerRef{conn: local[i]}
	}
	r := remote[i-uint64(len(local))]
	return handlerRef{node: r.node, client: r.client}
}

func (m *mesh) forward(s *session, env *codec.Envelope, name string, msg []byte, h handlerRef) {
	f := &commands.Inflight{RequestID: env.ID, Room: env.Room, Channel: env.Channel, Requester: s.conn, RequesterID: s.ID(),
		RemoteHandler: commands.RemoteHandlerName(h.node, h.client)}
	if !m.b.addPending(s, env, f) {
		return
	}
	m.b.stats.forwarded.Add(1)
	out := &peerMsg{kind: peerCommand, from: m.node.Instance(), client: h.client, sender: s.ID(), name: name, req: env.ID, room: env.Room, channel: env.Channel, body: msg}
	m.stats.remoteSends.Add(1)
	m.node.SendToNode(h.client, h.node, out.encode(), func(_ string, ok bool, err error) {
		defer m.b.recoverOffLoop("cluster command")
		if err != nil || !ok {
			m.stats.remoteFails.Add(1)
			m.commandFailed(f.RemoteHandler, f.RequesterID, f.RequestID, codec.Unavailable("the node of the handler serving this command cannot be reached"))
		}
	})
}

// commandFailed answers requester (a client id) about a command this node forwarded elsewhere with e.
func (m *mesh) commandFailed(remote, requester, requestID string, e *codec.Error) {
	if f := m.b.pending.ResolveRemote(remote, requester, requestID); f != nil {
		m.b.sendErrorTo(f.Requester, f.Room, f.Channel, f.RequestID, e)
	}
}

func (m *mesh) answer(f *commands.Inflight, handlerID string, msg []byte, e *codec.Error) {
	if handlerID == "" && f.Handler != nil {
		handlerID = sessionOf(f.Handler).ID()
	}
	out := &peerMsg{kind: peerResponse, client: f.RequesterID, handler: handlerID, req: f.RequestID, room: f.Room, channel: f.Channel, body: msg}
	if e != nil {
		out.kind, out.code, out.body = peerCommandFailed, e.Code, []byte(e.Message)
	}
	m.send(f.RequesterNode, f.RequesterID, out)
}

// serveCommand hands a command another node forwarded to its handler here (or queues it behind another
// requester's command with the same id, as for a local requester).
func (m *mesh) serveCommand(in *peerMsg) {
	refuse := func(e *codec.Error) {
		m.send(in.from, in.sender, &peerMsg{kind: peerCommandFailed, client: in.sender, handler: in.client, req: in.req, room: in.room, channel: in.channel, code: e.Code, body: []byte(e.Message)})
	}
	conn := m.b.hub.Client(in.client)
	serving := false
	if ch := m.b.hub.Channel(fanout.Key{Room: in.room, Channel: in.channel}); ch != nil && conn != nil {
		for _, c := range ch.HandlersOf(in.name) {
			serving = serving || c == conn
		}
	}
	if !serving {
		refuse(codec.Unavailable("the handler chosen for this command no longer serves it"))
		return
	}
	f := &commands.Inflight{RequestID: in.req, Room: in.room, Channel: in.channel, Handler: conn,
		RequesterNode: in.from, RequesterID: in.sender, Frame: engine.TextFrame(in.body)}
	if m.b.pending.Add(f, nil, 0, nil) == commands.Conflict {
		refuse(codec.Conflict("you have a command with this id in flight to that handler already"))
	}
}

// ---- inbox and control (cluster.Handler) ----

// Inbox handles a message another node sent this one, on the subscription's goroutine.
func (m *mesh) Inbox(raw []byte) {
	defer m.b.recoverOffLoop("cluster inbox")
	in, ok := decodePeer(raw)
	if !ok {
		m.stats.badPeer.Add(1)
		return
	}
	switch in.kind {
	case peerPrivate:
		if !m.b.hub.SendTo(in.client, engine.TextFrame(in.body)) {
			m.send(in.from, in.sender, &peerMsg{kind: peerPrivateLost, client: in.client, sender: in.sender, req: in.req, room: in.room, channel: in.channel})
		}
	case peerPrivateLost:
		if c := m.b.hub.Client(in.sender); c != nil {
			m.b.sendErrorTo(c, in.room, in.channel, in.req, targetNotFound(in.client))
		}
	case peerCommand:
		m.serveCommand(&in)
	case peerResponse:
		if f := m.b.pending.ResolveRemote(commands.RemoteHandlerName(in.from, in.handler), in.client, in.req); f != nil && !f.Requester.Closed() {
			f.Requester.SendRequested(engine.TextFrame(in.body))
		}
	case peerCommandFailed:
		m.commandFailed(commands.RemoteHandlerName(in.from, in.handler), in.client, in.req, codec.NewError(in.code, string(in.body)))
	case peerKick:
		if c := m.b.hub.Client(in.client); c != nil {
			c.Close(engine.ClosePolicyViolation, "replaced by a new connection with the same client id")
		}
	case peerAnswer:
		m.answered(&in)
	default:
		m.stats.badPeer.Add(1)
	}
}

// Control handles a message sent to every node.
func (m *mesh) Control(raw []byte) {
	defer m.b.recoverOffLoop("cluster control")
	in, ok := decodePeer(raw)
	if !ok {
		m.stats.badPeer.Add(1)
		return
	}
	if in.from == m.node.Instance() {
		return // this node's own
	}
	k := fanout.Key{Room: in.room, Channel: in.channel}
	switch in.kind {
	case peerHandlers:
		v, _ := strconv.ParseUint(in.req, 10, 64)
		m.setTable(in.from, v, in.body)
	case peerCreated:
		// Kept like this node's own create_channel channels, and made even
		// at the channel cap: the cluster has it already.
		if codec.ValidName(k.Room) && codec.ValidName(k.Channel) {
			_, _ = m.b.hub.CreateAt(k, time.Now())
		}
	case peerDeleted:
		// The deleting node deleted the stream and the registry entry.
		_ = m.b.hub.DeleteElsewhere(k)
	case peerQuery:
		// Off the subscription's goroutine: a view walks this node's channels.
		from, req, name, arg := in.from, in.req, in.name, append([]byte(nil), in.body...)
		m.jobs.submit(from, false, func() {
			view := commands.LocalView(m.b.deps, name, k, arg)
			m.send(from, from, &peerMsg{kind: peerAnswer, req: req, body: view})
		})
	default:
		m.stats.badPeer.Add(1)
	}
}

// NodesChanged takes the live nodes' handler tables and lets go of what waited on nodes that died.
func (m *mesh) NodesChanged(nodes []cluster.Info) {
	defer m.b.recoverOffLoop("cluster nodes")
	self := m.node.Instance()
	live := make(map[string]bool, len(nodes))
	for _, in := range nodes {
		live[in.Instance] = true
		if in.Instance != self {
			m.setTable(in.Instance, in.HandlersVersion, in.Handlers)
		}
	}
	m.mu.Lock()
	var dead []string
	for inst := range m.known {
		if !live[inst] {
			dead = append(dead, inst)
		}
	}
	m.known = live
	changed := false
	for inst := range m.tables {
		if !live[inst] {
			delete(m.tables, inst)
			changed = true
		}
	}
	if changed {
		m.reindex()
	}
	for _, q := range m.queries {
		for _, inst := range dead {
			q.gone(inst)
		}
	}
	m.mu.Unlock()
	for _, inst := range dead {
		m.b.log.Warn("cluster: node gone", "node", nodeOf(inst), "instance", inst)
		for _, f := range m.b.pending.DropNode(inst) {
			if f.Requester != nil {
				m.b.sendErrorTo(f.Requester, f.Room, f.Channel, f.RequestID, codec.Unavailable("the node serving this command stopped"))
			}
		}
	}
}

// setTable takes an instance's handler table if it is newer than the one held.
func (m *mesh) setTable(instance string, version uint64, body []byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if old, ok := m.tables[instance]; ok && old.version >= version {
		return
	}
	var t []tableEntry
	if len(body) > 0 && sonic.ConfigDefault.Unmarshal(body, &t) != nil {
		m.stats.badPeer.Add(1)
		return
	}
	m.tables[instance] = peerTable{version: version, handlers: t}
	m.reindex()
}

// reindex rebuilds the handler index from the tables; m.mu is held.
func (m *mesh) reindex() {
	idx := make(map[fanout.Key]map[string][]remoteHandler)
	for inst, t := range m.tables {
		for _, e := range t.handlers {
			k := fanout.Key{Room: e.Room, Channel: e.Channel}
			byName := idx[k]
			if byName == nil {
				byName = map[string][]remoteHandler{}
				idx[k] = byName
			}
			for _, name := range e.Names {
				byName[name] = append(byName[name], remoteHandler{inst, e.Client})
			}
		}
	}
	m.index = idx
}

// HandlersChanged hears that a channel's handlers on this node changed (fanout.Options.OnHandlers): the
// node's table is rebuilt and sent to the others, coalesced.
func (b *Bus) HandlersChanged(*fanout.Channel) {
	if m := b.mesh; m != nil && m.handlersPending.CompareAndSwap(false, true) {
		time.AfterFunc(10*time.Millisecond, m.publishHandlers)
	}
}

// publishHandlers rebuilds this node's handler table and broadcasts it.
func (m *mesh) publishHandlers() {
	defer m.b.recoverOffLoop("cluster handler table")
	m.handlersPending.Store(false)
	var table []tableEntry
	for _, ch := range m.b.hub.Channels() {
		byClient := map[string]*tableEntry{}
		ch.ForEachHandler(func(name string, c *engine.Conn) {
			id := sessionOf(c).ID()
			e := byClient[id]
			if e == nil {
				table = append(table, tableEntry{Room: ch.Key.Room, Channel: ch.Key.Channel, Client: id})
				e = &table[len(table)-1]
				byClient[id] = e
			}
			e.Names = append(e.Names, name)
		})
	}
	body, err := sonic.ConfigDefault.Marshal(table)
	if err != nil {
		return
	}
	m.handlersTable.Store(&body)
	v := m.handlersVersion.Add(1)
	m.broadcast(&peerMsg{kind: peerHandlers, req: strconv.FormatUint(v, 10), body: body})
}

// ChannelChanged tells the other nodes that a channel was created or deleted here.
func (m *mesh) channelChanged(k fanout.Key, created bool) {
	kind := peerDeleted
	if created {
		kind = peerCreated
	}
	m.broadcast(&peerMsg{kind: kind, room: k.Room, channel: k.Channel})
}

// ---- cluster-wide views (commands.Remote) ----

// query is a Gather waiting for the other nodes.
type query struct {
	want    map[string]bool
	answers [][]byte
	done    chan struct{}
}

func (q *query) gone(instance string) {
	if q.want[instance] {
		delete(q.want, instance)
		if len(q.want) == 0 {
			close(q.done)
		}
	}
}

// Gather asks every other live node for its view and waits for their answers, or for ctx.
// Handlers counts k's handlers on other nodes by name, from the tables routing uses.
func (m *mesh) Handlers(k fanout.Key) map[string]int {
	self := m.node.Instance()
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[string]int{}
	for name, hs := range m.index[k] {
		for _, h := range hs {
			if h.node != self {
				out[name]++
			}
		}
	}
	return out
}

func (m *mesh) Gather(ctx context.Context, kind string, k fanout.Key, arg []byte) [][]byte {
	if !m.up() {
		return nil
	}
	self := m.node.Instance()
	q := &query{want: map[string]bool{}, done: make(chan struct{})}
	for _, in := range m.node.Nodes() {
		if in.Instance != self {
			q.want[in.Instance] = true
		}
	}
	if len(q.want) == 0 {
		return nil
	}
	m.mu.Lock()
	m.querySeq++
	id := strconv.FormatUint(m.querySeq, 10)
	m.queries[id] = q
	m.mu.Unlock()
	m.broadcast(&peerMsg{kind: peerQuery, req: id, name: kind, room: k.Room, channel: k.Channel, body: arg})
	select {
	case <-q.done:
	case <-ctx.Done():
	}
	m.mu.Lock()
	delete(m.queries, id)
	answers := q.answers
	m.mu.Unlock()
	return answers
}

func (m *mesh) answered(in *peerMsg) {
	m.mu.Lock()
	defer m.mu.Unlock()
	q := m.queries[in.req]
	if q == nil || !q.want[in.from] {
		return
	}
	q.answers = append(q.answers, append([]byte(nil), in.body...))
	q.gone(in.from)
}
