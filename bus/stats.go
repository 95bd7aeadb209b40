package bus

import (
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/arqonbus/arqonbus/codec"
	"github.com/arqonbus/arqonbus/commands"
	"github.com/arqonbus/arqonbus/fanout"
	"github.com/arqonbus/arqonbus/internal/rtstat"
	"github.com/arqonbus/arqonbus/persist"
)

// stats are the bus's own counters; the engine counts bytes and frames.
type stats struct {
	byType          [codec.TypeError + 1]counter // envelopes received, by type
	commands        counter
	commandErrors   counter
	commandTimeouts counter
	forwarded       counter // commands handed to client handlers
	privates        counter
	violationCloses counter
	rateLimited     counter
	authRefused     counter
	panics          counter             // recovered off the event loops (recoverOffLoop)
	evicted         counter             // idle channels removed
	errors          map[string]*counter // by code; the map is fixed at start
	clients         map[string]*atomic.Int64

	mu         sync.Mutex // guards the rate samples
	lastSample time.Time
	lastIn     uint64
	lastOut    uint64
	rateIn     float64
	rateOut    float64
}

var errorCodes = []string{
	codec.CodeValidation, codec.CodeUnauthorized, codec.CodeForbidden, codec.CodeNotFound,
	codec.CodeTargetNotFound, codec.CodeCommandNotFound, codec.CodeConflict, codec.CodeRateLimited,
	codec.CodeTimeout, codec.CodeUnavailable, codec.CodeInternal,
}

func (s *stats) init() {
	s.errors = make(map[string]*counter)
	s.clients = make(map[string]*atomic.Int64)
	for _, code := range errorCodes {
		s.errors[code] = new(counter)
	}
	for _, t := range clientTypes {
		s.clients[t] = new(atomic.Int64)
	}
}

func (s *stats) received(t codec.Type) { s.byType[t].Add(1) }

func (s *stats) errored(code string) {
	if c := s.errors[code]; c != nil {
		c.Add(1)
	}
}

func (s *stats) clientConnected(t string)    { s.clients[t].Add(1) }
func (s *stats) clientDisconnected(t string) { s.clients[t].Add(-1) }

// ErrorCounts returns how many errors of each code were sent.
func (b *Bus) ErrorCounts() map[string]uint64 {
	out := make(map[string]uint64, len(b.stats.errors))
	for code, c := range b.stats.errors {
		out[code] = c.Load()
	}
	return out
}

func (b *Bus) sampleRates(now time.Time) {
	if b.engine == nil {
		return
	}
	es := b.engine.Stats()
	st := &b.stats
	st.mu.Lock()
	defer st.mu.Unlock()
	if !st.lastSample.IsZero() {
		secs := now.Sub(st.lastSample).Seconds()
		st.rateIn = float64(es.MessagesIn-st.lastIn) / secs
		st.rateOut = float64(es.Deliveries-st.lastOut) / secs
	}
	st.lastSample, st.lastIn, st.lastOut = now, es.MessagesIn, es.Deliveries
}

type statusChannel struct {
	Room      string `json:"room"`
	Channel   string `json:"channel"`
	Members   int    `json:"members"`
	Published uint64 `json:"published"`
	Bootstrap bool   `json:"bootstrap"`
}

type statusResult struct {
	NodeID          string            `json:"node_id"`
	Version         string            `json:"version"`
	ProtocolVersion string            `json:"protocol_version"`
	UptimeSeconds   float64           `json:"uptime_seconds"`
	Clients         map[string]int64  `json:"clients"`
	ClientsTotal    int               `json:"clients_total"`
	Connections     int64             `json:"connections"`
	Rooms           int               `json:"rooms"`
	ChannelsTotal   int               `json:"channels_total"` // every channel on this node
	Channels        []statusChannel   `json:"channels"`       // at most StatusChannels: the most members first
	Messages        statusMessages    `json:"messages"`
	Errors          map[string]uint64 `json:"errors"`
	Storage         statusStorage     `json:"storage"`
	MemoryBytes     uint64            `json:"memory_bytes"`
	Goroutines      int               `json:"goroutines"`
	Commands        statusCommands    `json:"commands"`
	Limits          statusLimits      `json:"limits"`
	// In a cluster: every live node, and what crossed nodes from this one.
	Nodes   []NodeStatus   `json:"nodes,omitempty"`
	Cluster *ClusterStatus `json:"cluster,omitempty"`
}

// NodeStatus is one live node of a cluster.
type NodeStatus struct {
	NodeID  string    `json:"node_id"`
	Clients int       `json:"clients"`
	Started time.Time `json:"started"`
	Self    bool      `json:"self,omitempty"`
}

// ClusterStatus is this node's part in a cluster.
type ClusterStatus struct {
	Reachable       bool   `json:"reachable"` // events cross nodes now
	EventsPublished uint64 `json:"events_published"`
	EventsReceived  uint64 `json:"events_received"`
	LocalOnly       uint64 `json:"events_local_only"` // routed on this node only: Redis was unreachable
	Uncertain       uint64 `json:"events_uncertain"`  // the way through Redis failed midway: routed (or delivered) here only
	Refused         uint64 `json:"events_refused"`
	Gaps            uint64 `json:"gaps"`
	RemoteSends     uint64 `json:"remote_sends"`
	RemoteFailures  uint64 `json:"remote_failures"`
	QueueRefused    uint64 `json:"queue_refused"` // refused: too much was waiting for Redis
}

// Cluster returns the live nodes (this one marked Self, with its current client count) and this node's
// cluster counters; nil, nil for a standalone bus.
func (b *Bus) Cluster() ([]NodeStatus, *ClusterStatus) {
	m := b.mesh
	if m == nil || m.node == nil {
		return nil, nil
	}
	self := m.node.Instance()
	var nodes []NodeStatus
	for _, in := range m.node.Nodes() {
		ns := NodeStatus{NodeID: in.NodeID, Clients: in.Clients, Started: in.Started.UTC()}
		if in.Instance == self {
			ns.Clients, ns.Self = b.hub.ClientCount(), true
		}
		nodes = append(nodes, ns)
	}
	sort.Slice(nodes, func(i, j int) bool { return nodes[i].NodeID < nodes[j].NodeID })
	st := &m.stats
	return nodes, &ClusterStatus{
		Reachable: m.clustered.Load(), EventsPublished: st.published.Load(), EventsReceived: st.received.Load(),
		LocalOnly: st.localOnly.Load(), Uncertain: st.uncertain.Load(), Refused: st.refused.Load(),
		Gaps: st.gaps.Load(), RemoteSends: st.remoteSends.Load(), RemoteFailures: st.remoteFails.Load(),
		QueueRefused: m.node.QueueRefused(),
	}
}

type statusCommands struct {
	Received  uint64 `json:"received"`
	Errors    uint64 `json:"errors"`
	Forwarded uint64 `json:"forwarded_to_handlers"`
	Timeouts  uint64 `json:"timeouts"`
	InFlight  int    `json:"in_flight"`
}

type statusLimits struct {
	RateLimited        uint64 `json:"rate_limited"`
	ViolationCloses    uint64 `json:"violation_closes"`
	AuthRefused        uint64 `json:"auth_refused"`
	ConnectionsRefused uint64 `json:"connections_refused"`
}

type statusMessages struct {
	Received      uint64            `json:"received"`
	Sent          uint64            `json:"sent"`
	ReceivedRate  float64           `json:"received_per_second"`
	SentRate      float64           `json:"sent_per_second"`
	ByType        map[string]uint64 `json:"by_type"`
	SlowConsumers uint64            `json:"slow_consumers_closed"`
}

type statusStorage struct {
	Mode      string `json:"mode"`
	Health    string `json:"health"`
	Backlog   int    `json:"backlog"`
	Dropped   uint64 `json:"dropped"`
	Written   uint64 `json:"written"`
	LastError string `json:"last_error,omitempty"`
}

// status reports the bus's state, enough to debug a live bus.
func (b *Bus) status() any {
	r := statusResult{
		NodeID:          b.cfg.NodeID,
		Version:         Version,
		ProtocolVersion: codec.Version,
		UptimeSeconds:   time.Since(b.started).Seconds(),
		Clients:         make(map[string]int64, len(clientTypes)),
		ClientsTotal:    b.hub.ClientCount(),
		Errors:          b.ErrorCounts(),
		Storage:         storageStatus(b.store.Health()),
	}
	for t, n := range b.stats.clients {
		r.Clients[t] = n.Load()
	}
	r.Channels, r.Rooms, r.ChannelsTotal = b.topChannels(StatusChannels)
	r.Messages.ByType = make(map[string]uint64)
	for t := codec.TypeEvent; t <= codec.TypeTelemetry; t++ {
		r.Messages.ByType[t.String()] = b.stats.byType[t].Load()
	}
	if b.engine != nil {
		es := b.engine.Stats()
		r.Connections = es.Connections
		r.Messages.Received = es.MessagesIn
		r.Messages.Sent = es.Deliveries
		r.Messages.SlowConsumers = es.SlowConsumers
		r.Limits.ConnectionsRefused = es.Refused
	}
	b.stats.mu.Lock()
	r.Messages.ReceivedRate, r.Messages.SentRate = b.stats.rateIn, b.stats.rateOut
	b.stats.mu.Unlock()
	rt := rtstat.Read()
	r.MemoryBytes, r.Goroutines = rt.MemoryBytes, rt.Goroutines
	r.Commands = statusCommands{
		Received: b.stats.commands.Load(), Errors: b.stats.commandErrors.Load(),
		Forwarded: b.stats.forwarded.Load(), Timeouts: b.stats.commandTimeouts.Load(), InFlight: b.pending.Len(),
	}
	r.Limits.RateLimited = b.stats.rateLimited.Load()
	r.Limits.ViolationCloses = b.stats.violationCloses.Load()
	r.Limits.AuthRefused = b.stats.authRefused.Load()
	if r.Nodes, r.Cluster = b.Cluster(); r.Nodes != nil {
		r.ClientsTotal = 0
		for _, n := range r.Nodes {
			r.ClientsTotal += n.Clients
		}
	}
	return r
}

// StatusChannels bounds the channels status lists: the ones with the most members (list_channels
// pages through all of a room's).
const StatusChannels = 100

// topChannels walks the channels once: the n with the most members (ties by name), the number of
// rooms and of channels. It neither copies nor sorts the whole list: status runs on an event loop.
func (b *Bus) topChannels(n int) (top []statusChannel, rooms, channels int) {
	best := commands.NewBest(n, func(x, y *fanout.Channel) bool {
		if mx, my := x.Members(), y.Members(); mx != my {
			return mx > my
		}
		if x.Key.Room != y.Key.Room {
			return x.Key.Room < y.Key.Room
		}
		return x.Key.Channel < y.Key.Channel
	})
	roomSet := map[string]struct{}{}
	b.hub.WalkChannels(func(ch *fanout.Channel) {
		roomSet[ch.Key.Room] = struct{}{}
		channels++
		best.Offer(ch)
	})
	for _, ch := range best.Sorted() {
		top = append(top, statusChannel{
			Room: ch.Key.Room, Channel: ch.Key.Channel, Members: ch.Members(),
			Published: ch.Published(), Bootstrap: ch.Bootstrap,
		})
	}
	return top, len(roomSet), channels
}

func appendInt(dst []byte, v int64) []byte { return strconv.AppendInt(dst, v, 10) }

// Counters are the bus's numbers for metrics and telemetry.
type Counters struct {
	ClientsByType   map[string]int64
	RateLimited     uint64 // messages, commands and pending commands refused by a limit
	ViolationCloses uint64
	AuthRefused     uint64
	ActiveClients   int64
	Rooms           int
	Channels        int
	Commands        uint64
	CommandErrors   uint64
	ErrorsByCode    map[string]uint64
	ReceivedPerSec  float64
	SentPerSec      float64
	Panics          uint64 // recovered off the event loops (the engine counts the loops' own)
}

// Counters reads the bus's counters.
func (b *Bus) Counters() Counters {
	c := Counters{
		ClientsByType: make(map[string]int64, len(clientTypes)),
		ActiveClients: int64(b.hub.ClientCount()),
		Channels:      b.hub.ChannelCount(),
		Commands:      b.stats.commands.Load(),
		CommandErrors: b.stats.commandErrors.Load(),
		ErrorsByCode:  b.ErrorCounts(),

		RateLimited:     b.stats.rateLimited.Load(),
		ViolationCloses: b.stats.violationCloses.Load(),
		AuthRefused:     b.stats.authRefused.Load(),
		Panics:          b.stats.panics.Load(),
	}
	for t, n := range b.stats.clients {
		c.ClientsByType[t] = n.Load()
	}
	c.Rooms = b.hub.RoomCount()
	b.stats.mu.Lock()
	c.ReceivedPerSec, c.SentPerSec = b.stats.rateIn, b.stats.rateOut
	b.stats.mu.Unlock()
	return c
}

// Storage reports the store's health.
func (b *Bus) Storage() persist.Health { return b.store.Health() }

func storageStatus(h persist.Health) statusStorage {
	return statusStorage{Mode: h.Mode, Health: h.Status, Backlog: h.Backlog, Dropped: h.Dropped, Written: h.Written, LastError: h.LastError}
}

// ChannelUse is one channel's utilisation, for telemetry.
type ChannelUse struct {
	Room      string `json:"room"`
	Channel   string `json:"channel"`
	Members   int    `json:"members"`
	Published uint64 `json:"published"`
}

// ChannelUtilisation lists at most n channels, the busiest by members first.
func (b *Bus) ChannelUtilisation(n int) []ChannelUse {
	top, _, _ := b.topChannels(n)
	out := make([]ChannelUse, len(top))
	for i, c := range top {
		out[i] = ChannelUse{c.Room, c.Channel, c.Members, c.Published}
	}
	return out
}
