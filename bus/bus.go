// Package bus is ArqonBus's application layer: it turns engine connections
// into identified sessions and dispatches their envelopes to fan-out and to
// the built-in commands.
package bus

import (
	"context"
	"log/slog"
	"runtime/debug"
	"strings"
	"sync/atomic"
	"time"

	"github.com/arqonbus/arqonbus/codec"
	"github.com/arqonbus/arqonbus/commands"
	"github.com/arqonbus/arqonbus/engine"
	"github.com/arqonbus/arqonbus/fanout"
	"github.com/arqonbus/arqonbus/persist"
	"github.com/arqonbus/arqonbus/telemetry"
)

// Version is the server version reported in welcome and status.
const Version = "1.0.0"

// Config holds the bus's settings.
type Config struct {
	NodeID           string
	MaxViolations    int           // protocol violations allowed per ViolationWindow before close 1008
	ViolationWindow  time.Duration // default one minute
	ReplaceDuplicate bool          // a second connection with a live id replaces the first
	AutoJoin         []fanout.Key  // channels every new connection joins

	JWTSecret      string   // when set, every upgrade needs an HS256 token
	ResumeSecret   string   // keys resume tokens on every node; default: from JWTSecret, or the cluster's
	AdminToken     string   // without JWT, admin_token=<this> grants admin
	AllowedOrigins []string // when set, browser origins outside it are refused

	RateLimit, RateBurst      float64 // messages a second per client (0: unlimited), and burst
	CommandRate, CommandBurst float64 // commands a second per client, and burst
	MaxSubscriptions          int     // channels one client may join
	MaxPendingCommands        int     // commands one client may have in flight to handlers
	CommandTimeout            time.Duration
	MaxBlockingCommands       int // commands waiting on storage at once
	// AnswerBytes bounds one join_channel replay and one history answer, in bytes (at least one entry
	// goes): what is left out is paged with history. Half the outbound bound keeps a client that asked
	// for a lot from being cut as a slow consumer (the engine's allowance for requested frames takes
	// the rest). Default 2 MiB.
	AnswerBytes int

	// ChannelIdleTTL, if positive, evicts channels made by joins once they
	// have had no members and no traffic for that long (see fanout.Hub.Evict).
	ChannelIdleTTL time.Duration

	// Store keeps history (default: memory rings of 500). With SyncAcks an
	// event's ack waits until the store has it.
	Store    persist.Store
	SyncAcks bool

	// Telemetry, if set, hears connects, joins, commands and agent activity.
	Telemetry *telemetry.Emitter

	// Clustered makes the bus one node of several: attach the cluster node
	// with JoinCluster before serving. Needs a store that keeps rings
	// (persist.Redis).
	Clustered bool

	Logger *slog.Logger
}

// Bus is the engine.Handler of the client port.
type Bus struct {
	cfg     Config
	hub     *fanout.Hub
	ids     *codec.IDGen
	log     *slog.Logger
	started time.Time
	engine  *engine.Server // for its counters; set by AttachEngine
	stats   stats

	store    persist.Store
	broker   broker
	mesh     *mesh // the broker of a clustered bus, else nil
	tel      *telemetry.Emitter
	builtins *commands.Set
	deps     *commands.Deps
	pending  *commands.Pending
	blocking chan struct{} // slots for commands running off the loops
	resume   *resumeKeys
}

// New makes a bus routing through hub.
func New(cfg Config, hub *fanout.Hub) *Bus {
	if cfg.MaxViolations <= 0 {
		cfg.MaxViolations = 10
	}
	if cfg.ViolationWindow <= 0 {
		cfg.ViolationWindow = time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.CommandTimeout <= 0 {
		cfg.CommandTimeout = 5 * time.Second
	}
	if cfg.MaxPendingCommands <= 0 {
		cfg.MaxPendingCommands = 100
	}
	if cfg.AnswerBytes <= 0 {
		cfg.AnswerBytes = 2 << 20
	}
	if cfg.MaxBlockingCommands <= 0 {
		cfg.MaxBlockingCommands = 256
	}
	if cfg.Store == nil {
		cfg.Store = persist.NewMemory(500)
	}
	b := &Bus{
		cfg:     cfg,
		hub:     hub,
		ids:     codec.NewIDGen(cfg.NodeID),
		log:     cfg.Logger,
		started: time.Now(),
	}
	b.stats.init()
	b.resume = newResumeKeys(cfg.ResumeSecret, cfg.JWTSecret)
	b.store = cfg.Store
	b.tel = cfg.Telemetry
	b.builtins = commands.Builtins(historyReader{b})
	b.deps = &commands.Deps{Hub: hub, MaxSubscriptions: cfg.MaxSubscriptions, AnswerBytes: cfg.AnswerBytes, Status: b.status, Replayer: replayer{b}, Position: channelPosition, Events: events{b}, NodeID: cfg.NodeID}
	b.broker = solo{b}
	if cfg.Clustered {
		b.mesh = newMesh(b)
		b.broker = b.mesh
		b.deps.Remote = b.mesh
	}
	b.pending = commands.NewPending(cfg.CommandTimeout, b.commandTimedOut, b.sendToHandler)
	b.blocking = make(chan struct{}, cfg.MaxBlockingCommands)
	return b
}

// AttachEngine gives the bus the engine whose counters status reports.
func (b *Bus) AttachEngine(e *engine.Server) { b.engine = e }

// Hub is the bus's channel and client registry.
func (b *Bus) Hub() *fanout.Hub { return b.hub }

// Run samples message rates once a second, and evicts idle channels, until
// ctx ends.
func (b *Bus) Run(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	var ev eviction
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			b.sampleRates(now)
			// A tenth of slack: ticks a second apart may be a hair under.
			if ttl := b.cfg.ChannelIdleTTL; ttl > 0 && now.Sub(ev.last) >= evictionEvery(ttl)*9/10 {
				b.evict(&ev, now, ttl)
			}
		}
	}
}

// eviction is Run's state between eviction passes.
type eviction struct {
	last     time.Time // the last pass
	freed    int64     // history bytes evicted since memory was last given back to the OS
	returned time.Time // when it was
}

// Giving evicted history back to the OS: once this much was freed, at most
// every returnEvery.
const (
	returnAfter = 16 << 20
	returnEvery = 10 * time.Second
)

// evict removes the channels idle for ttl. When that freed a lot of history,
// the memory goes back to the OS now: an idle server would otherwise hold it
// until its next garbage collection, minutes away when nothing allocates.
func (b *Bus) evict(ev *eviction, now time.Time, ttl time.Duration) {
	ev.last = now
	sizer, _ := b.store.(persist.Sizer)
	var before int64
	if sizer != nil {
		_, before = sizer.Channels()
	}
	if n := b.hub.Evict(now.Add(-ttl)); n > 0 {
		if sizer != nil {
			_, after := sizer.Channels()
			ev.freed += max(before-after, 0)
		}
		b.log.Debug("evicted idle channels", "count", n, "channels", b.hub.ChannelCount(), "history_bytes_freed", ev.freed)
	}
	// Checked on passes that evict nothing too: the last pass of a churn
	// may come too soon after the previous return.
	if ev.freed >= returnAfter && now.Sub(ev.returned) >= returnEvery {
		ev.freed, ev.returned = 0, now
		debug.FreeOSMemory()
	}
}

// evictionEvery is how often idle channels are looked for: a quarter of the
// idle time, between one second and one minute, so a channel goes at most a
// quarter later than its time.
func evictionEvery(ttl time.Duration) time.Duration {
	return min(max(ttl/4, time.Second), time.Minute)
}

// ChannelsEvicted is how many idle channels were evicted.
func (b *Bus) ChannelsEvicted() uint64 { return b.stats.evicted.Load() }

// ParseKeys parses a comma-separated list of "room:channel" names.
func ParseKeys(list string) ([]fanout.Key, error) {
	var keys []fanout.Key
	for _, item := range strings.Split(list, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		room, channel, ok := strings.Cut(item, ":")
		if !ok || !codec.ValidName(room) || !codec.ValidName(channel) {
			return nil, &keyError{item}
		}
		keys = append(keys, fanout.Key{Room: room, Channel: channel})
	}
	return keys, nil
}

type keyError struct{ item string }

func (e *keyError) Error() string {
	return "bad channel " + `"` + e.item + `"` + ": want room:channel, each [a-z0-9][a-z0-9_.-]{0,63}"
}

// DefaultBootstrap is the SPEC's list of bootstrap channels.
const DefaultBootstrap = "science:general,science:explore,science:hypothesize,science:design," +
	"science:execute,science:interpret,science:share,integriguard:telemetry-stream,integriguard:dashboard-events"

// TelemetryChannel is where telemetry, the server's and the clients', is broadcast.
var TelemetryChannel = fanout.Key{Room: "integriguard", Channel: "telemetry-stream"}

// DashboardChannel carries agent activity for dashboards.
var DashboardChannel = fanout.Key{Room: "integriguard", Channel: "dashboard-events"}

// counter is a named atomic counter.
type counter = atomic.Uint64
