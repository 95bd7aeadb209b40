package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bytedance/sonic"
	"github.com/redis/rueidis"

	"github.com/arqonbus/arqonbus/persist"
)

// Options configure a Node. Zero values take the defaults.
type Options struct {
	URL         string // redis:// URL of Redis, or of any node of a Redis Cluster
	KeyPrefix   string // default "arqonbus"
	NodeID      string // this node's id, unique among live nodes
	HistorySize int    // entries a stream keeps (MAXLEN ~); default 500
	// Standalone registers the node without joining a bus: it refuses to start next to other nodes on
	// the same prefix, and they refuse to start next to it.
	Standalone bool
	Heartbeat  time.Duration // default 1s
	NodeTTL    time.Duration // a node unseen this long is dead; default 3s
	Linger     time.Duration // a channel without local members stays subscribed this long; default 5s
	Shards     int           // publish writer goroutines; default 4
	BatchSize  int           // publishes per pipelined round trip; default 256
	// MaxQueuedBytes bounds what waits for Redis (publishes and messages to other nodes, in all
	// shards); beyond it a publish or message is refused with ErrOverloaded. Default 256 MiB.
	MaxQueuedBytes int
	Logger         *slog.Logger
	// Handler hears what arrives. Required unless Standalone.
	Handler Handler
	// State, if set, returns what this node advertises in each heartbeat (client count, handlers).
	State func() State
}

// Defaults of Options.
const (
	DefaultHeartbeat = time.Second
	DefaultNodeTTL   = 3 * time.Second
	DefaultLinger    = 5 * time.Second
)

func (o *Options) setDefaults() {
	if o.URL == "" {
		o.URL = persist.DefaultRedisURL
	}
	if o.KeyPrefix == "" {
		o.KeyPrefix = persist.DefaultKeyPrefix
	}
	if o.HistorySize <= 0 {
		o.HistorySize = persist.DefaultHistorySize
	}
	if o.Heartbeat <= 0 {
		o.Heartbeat = DefaultHeartbeat
	}
	if o.NodeTTL <= 0 {
		o.NodeTTL = DefaultNodeTTL
	}
	if o.Linger <= 0 {
		o.Linger = DefaultLinger
	}
	if o.Shards <= 0 {
		o.Shards = 4
	}
	if o.BatchSize <= 0 {
		o.BatchSize = 256
	}
	if o.MaxQueuedBytes <= 0 {
		o.MaxQueuedBytes = 256 << 20
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
}

// Handler is the bus's side of a Node. Its methods must not block: they run on the goroutines that
// read Redis.
type Handler interface {
	// Event is one event of a subscribed channel: called per channel in stream order, from one goroutine
	// at a time per channel, after the subscription has caught up with the stream. Positions may repeat
	// what the handler already has (a catch-up overlaps live delivery): the handler drops those. data is
	// valid during the call only.
	Event(channel string, pos persist.Position, data []byte)
	// Gap says that events of channel after Last and before the next Event were trimmed from the stream
	// before this node could read them.
	Gap(channel string)
	// Last is the newest position of channel this node has: a catch-up reads the stream after it.
	Last(channel string) persist.Position
	// Inbox is a message another node (or this one) sent to this node.
	Inbox(msg []byte)
	// Control is a message sent to every node.
	Control(msg []byte)
	// Reachable reports a change of Redis's reachability: false once a publish, a heartbeat or a
	// subscription finds Redis gone, true once a heartbeat succeeds again.
	Reachable(up bool)
	// NodesChanged reports the live nodes after a heartbeat that found a change.
	NodesChanged(nodes []Info)
}

// State is what a node advertises besides its identity.
type State struct {
	Clients int `json:"clients"`
	// Handlers is the bus's table of command handlers on this node (opaque here), and HandlersVersion
	// counts its changes, so that other nodes take a newer table only.
	HandlersVersion uint64                 `json:"handlers_version,omitempty"`
	Handlers        sonic.NoCopyRawMessage `json:"handlers,omitempty"`
}

// Info is one live node as the registry knows it.
type Info struct {
	NodeID   string    `json:"node_id"`
	Instance string    `json:"instance"` // this process's run of the node: node id plus a random suffix
	Mode     string    `json:"mode"`     // "cluster" or "standalone"
	Started  time.Time `json:"started"`
	State
}

// Modes in Info.
const (
	ModeCluster    = "cluster"
	ModeStandalone = "standalone"
)

// Errors.
var (
	// ErrUnreachable: Redis cannot be reached now.
	ErrUnreachable = errors.New("cluster: redis unreachable")
	// ErrUncertain: the connection failed while a publish was on its way; Redis may or may not have it.
	ErrUncertain = errors.New("cluster: outcome unknown, the connection to redis failed")
	// ErrClosed: the node is closing.
	ErrClosed = errors.New("cluster: closed")
	// ErrOverloaded: more is waiting for Redis than Options.MaxQueuedBytes; not sent.
	ErrOverloaded = errors.New("cluster: too much waiting for redis")
)

// ConflictError says why a node may not start next to the nodes already on the prefix.
type ConflictError struct{ msg string }

func (e *ConflictError) Error() string { return e.msg }

// Node is this process's membership of the bus: its registry entry and heartbeat, its publishers and
// subscriptions, its inbox.
type Node struct {
	o        Options
	log      *slog.Logger
	k        keys
	instance string
	started  time.Time
	copt     rueidis.ClientOption

	cmd  atomic.Pointer[clientBox] // commands: publishes, scripts, reads
	subc atomic.Pointer[clientBox] // subscriptions only (one connection per Redis node)

	up       atomic.Bool // Redis reachable as far as we know
	upMu     sync.Mutex  // orders Reachable calls
	reported bool        // under upMu: the last state told to the handler

	viewMu sync.RWMutex
	view   map[string]Info // live instances

	out  *writer // publishes and inbox mail, batched
	subs *subscriptions

	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	closing atomic.Bool
	once    sync.Once
}

type clientBox struct{ c rueidis.Client }

// Instance ids are the node id and a random suffix: a restarted node is a new instance, so nothing
// its previous run held (client ids, handlers) is taken for its own.
func newInstance(nodeID string) string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return nodeID + "~" + hex.EncodeToString(b)
}

// New connects to Redis and checks that this node may start: another live node with the same node id,
// or a standalone node next to cluster nodes (either way round), is a *ConflictError. Redis unreachable
// is not an error: the node starts unreachable, checks nothing, and keeps connecting.
func New(ctx context.Context, o Options) (*Node, error) {
	o.setDefaults()
	if o.Handler == nil && !o.Standalone {
		return nil, errors.New("cluster: a Handler is required")
	}
	copt, err := persist.ClientOption(o.URL)
	if err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	n := &Node{
		o: o, log: o.Logger, k: newKeys(o.KeyPrefix), instance: newInstance(o.NodeID), started: time.Now(),
		copt: copt, view: map[string]Info{},
	}
	n.ctx, n.cancel = context.WithCancel(context.Background())
	n.out = newWriter(n)
	n.subs = newSubscriptions(n)
	if err := n.connect(); err == nil {
		if err := n.checkPeers(ctx); err != nil {
			n.closeClients()
			return nil, err
		}
	} else {
		n.log.Warn("cluster: redis unreachable at start; routing stays on this node until it answers", "err", err)
	}
	return n, nil
}

// connect makes the command client and the subscription client (one connection per Redis node, so
// that a channel's SUNSUBSCRIBE travels the connection its SSUBSCRIBE did).
func (n *Node) connect() error {
	c, err := rueidis.NewClient(n.copt)
	if err != nil {
		return err
	}
	sopt := n.copt
	sopt.PipelineMultiplex = -1
	// A lost connection ends each Receive at once instead of being retried inside rueidis: the
	// subscription then knows it is not live, and subscribes again (and catches up) on its own
	// schedule, at once when Redis is reachable again.
	sopt.DisableRetry = true
	sc, err := rueidis.NewClient(sopt)
	if err != nil {
		c.Close()
		return err
	}
	n.subc.Store(&clientBox{sc})
	n.cmd.Store(&clientBox{c})
	return nil
}

func (n *Node) closeClients() {
	if c := n.client(); c != nil {
		c.Close()
	}
	if c := n.subClient(); c != nil {
		c.Close()
	}
}

func (n *Node) subClient() rueidis.Client {
	if b := n.subc.Load(); b != nil {
		return b.c
	}
	return nil
}

// Instance is this process's id in the registry.
func (n *Node) Instance() string { return n.instance }

// Up reports whether Redis is reachable as far as this node knows.
func (n *Node) Up() bool { return n.up.Load() }

func (n *Node) client() rueidis.Client {
	if b := n.cmd.Load(); b != nil {
		return b.c
	}
	return nil
}

// checkPeers refuses to start next to incompatible live nodes.
func (n *Node) checkPeers(ctx context.Context) error {
	c := n.client()
	cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	live, err := n.readLive(cctx, c)
	if err != nil {
		n.log.Warn("cluster: could not read the node registry at start", "err", err)
		return nil
	}
	for _, in := range live {
		switch {
		case in.NodeID == n.o.NodeID:
			return &ConflictError{fmt.Sprintf("node id %q is already running on this Redis (prefix %q): give each node its own --node-id", in.NodeID, n.o.KeyPrefix)}
		case n.o.Standalone:
			return &ConflictError{fmt.Sprintf("node %q already uses Redis prefix %q (%s): run this node with --cluster auto to join it, or give it its own --redis-key-prefix", in.NodeID, n.o.KeyPrefix, in.Mode)}
		case in.Mode == ModeStandalone:
			return &ConflictError{fmt.Sprintf("standalone node %q (--cluster false) already uses Redis prefix %q: start it with --cluster auto, or give this bus its own --redis-key-prefix", in.NodeID, n.o.KeyPrefix)}
		}
	}
	return nil
}

// readLive reads the live instances without registering.
func (n *Node) readLive(ctx context.Context, c rueidis.Client) ([]Info, error) {
	now, err := c.Do(ctx, c.B().Time().Build()).AsIntSlice()
	if err != nil || len(now) != 2 {
		return nil, fmt.Errorf("cluster: redis time: %w", err)
	}
	ms := now[0]*1000 + now[1]/1000
	ids, err := c.Do(ctx, c.B().Zrangebyscore().Key(n.k.nodes).Min(strconv.FormatInt(ms-n.o.NodeTTL.Milliseconds(), 10)).Max("+inf").Build()).AsStrSlice()
	if err != nil || len(ids) == 0 {
		return nil, err
	}
	vals, err := c.Do(ctx, c.B().Hmget().Key(n.k.info).Field(ids...).Build()).ToArray()
	if err != nil {
		return nil, err
	}
	out := make([]Info, 0, len(ids))
	for i := range vals {
		s, err := vals[i].ToString()
		if err != nil {
			continue
		}
		var in Info
		if sonic.ConfigDefault.UnmarshalFromString(s, &in) == nil {
			out = append(out, in)
		}
	}
	return out, nil
}

// Start runs the heartbeat, the publishers and (in cluster mode) the inbox and control subscriptions.
func (n *Node) Start() {
	n.wg.Add(1)
	go n.heartbeatLoop()
	if n.o.Standalone {
		return
	}
	n.out.start()
	n.subs.startFixed()
}

func (n *Node) mode() string {
	if n.o.Standalone {
		return ModeStandalone
	}
	return ModeCluster
}

// heartbeatLoop announces this node every Heartbeat and refreshes the view of live nodes; while Redis
// is unreachable it retries every quarter of that.
func (n *Node) heartbeatLoop() {
	defer n.wg.Done()
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-t.C:
		}
		err := n.heartbeat()
		if err != nil {
			n.setUp(false, err)
			t.Reset(n.o.Heartbeat / 4)
			continue
		}
		n.setUp(true, nil)
		t.Reset(n.o.Heartbeat)
	}
}

func (n *Node) heartbeat() error {
	if n.client() == nil {
		if err := n.connect(); err != nil {
			return err
		}
		n.log.Info("cluster: connected to redis")
	}
	c := n.client()
	in := Info{NodeID: n.o.NodeID, Instance: n.instance, Mode: n.mode(), Started: n.started}
	if n.o.State != nil {
		in.State = n.o.State()
	}
	body, err := sonic.ConfigDefault.Marshal(in)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(n.ctx, n.o.Heartbeat)
	defer cancel()
	res, err := heartbeatScript.do(ctx, c, []string{n.k.nodes, n.k.info, n.k.clients},
		n.instance, string(body), strconv.FormatInt(n.o.NodeTTL.Milliseconds(), 10), n.k.ownedPrefix()).AsStrSlice()
	if err != nil {
		return err
	}
	view := make(map[string]Info, len(res)/2)
	for i := 0; i+1 < len(res); i += 2 {
		var in Info
		if sonic.ConfigDefault.UnmarshalFromString(res[i+1], &in) == nil {
			view[res[i]] = in
		}
	}
	n.setView(view)
	return nil
}

// setView installs the live nodes and tells the handler when the set or a node's state changed.
func (n *Node) setView(view map[string]Info) {
	n.viewMu.Lock()
	changed := len(view) != len(n.view)
	for inst, in := range view {
		old, ok := n.view[inst]
		if !ok || old.HandlersVersion != in.HandlersVersion || old.Clients != in.Clients {
			changed = true
		}
	}
	n.view = view
	n.viewMu.Unlock()
	if changed && n.o.Handler != nil {
		n.o.Handler.NodesChanged(n.Nodes())
	}
}

// Nodes returns the live nodes as of the last heartbeat, this one included.
func (n *Node) Nodes() []Info {
	n.viewMu.RLock()
	defer n.viewMu.RUnlock()
	out := make([]Info, 0, len(n.view))
	for _, in := range n.view {
		out = append(out, in)
	}
	return out
}

// setUp records Redis's reachability and reports changes to the handler, in order.
func (n *Node) setUp(up bool, err error) {
	if n.closing.Load() {
		return
	}
	n.up.Store(up)
	n.upMu.Lock()
	defer n.upMu.Unlock()
	if n.reported == up {
		return
	}
	n.reported = up
	if up {
		n.log.Info("cluster: redis reachable")
		n.subs.kick()
	} else {
		n.log.Warn("cluster: redis unreachable: events stay on this node", "err", err)
	}
	if n.o.Handler != nil {
		n.o.Handler.Reachable(up)
	}
}

// lost reports a failure of Redis seen by a publish or a subscription: the node is unreachable until
// the next heartbeat succeeds.
func (n *Node) lost(err error) { n.setUp(false, err) }

// Close leaves the registry (the node's client ids become free at once), stops every goroutine and
// closes the connections. Queued publishes get ErrClosed.
func (n *Node) Close(ctx context.Context) error {
	var err error
	n.once.Do(func() {
		n.closing.Store(true)
		if c := n.client(); c != nil {
			lctx, cancel := context.WithTimeout(ctx, time.Second)
			err = leaveScript.do(lctx, c, []string{n.k.nodes, n.k.info, n.k.clients, n.k.owned(n.instance)}, n.instance).Error()
			cancel()
		}
		n.cancel()
		n.out.stop()
		n.subs.stop()
		n.wg.Wait()
		n.closeClients()
	})
	if err != nil {
		return fmt.Errorf("cluster: leave: %w", err)
	}
	return nil
}
