// Command arqonbus runs the ArqonBus WebSocket message bus.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/arqonbus/arqonbus/bus"
	"github.com/arqonbus/arqonbus/cluster"
	"github.com/arqonbus/arqonbus/codec"
	"github.com/arqonbus/arqonbus/engine"
	"github.com/arqonbus/arqonbus/fanout"
	"github.com/arqonbus/arqonbus/ops"
	"github.com/arqonbus/arqonbus/persist"
	"github.com/arqonbus/arqonbus/telemetry"
)

const defaultBootstrap = bus.DefaultBootstrap

// Build information, set with -ldflags "-X main.commit=... -X main.buildDate=..." (scripts/ldflags.sh,
// as `make build` and `make run` do). A plain `go build` in a checkout falls back on the commit Go
// records itself (vcsStamp).
var (
	commit    = ""
	buildDate = ""
)

func main() {
	if commit == "" {
		commit, buildDate = vcsStamp()
	}
	cfg, err := parseConfig(os.Args[1:], os.Getenv, os.Stderr)
	if errors.Is(err, errHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "arqonbus:", err)
		os.Exit(2)
	}
	if err := run(cfg); err != nil {
		fmt.Fprintln(os.Stderr, "arqonbus:", err)
		os.Exit(1)
	}
}

func newLogger(cfg *config) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.LogLevel))
	opts := &slog.HandlerOptions{Level: level}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}

// node is one running bus and everything wired around it.
type node struct {
	cfg       *config
	log       *slog.Logger
	hub       *fanout.Hub
	store     persist.Store
	bus       *bus.Bus
	clients   *engine.Server
	telSrv    *engine.Server
	tel       *telemetry.Emitter
	peers     *cluster.Node // with storage=redis: the registry entry, and in a cluster the way to the other nodes
	http      *ops.Server
	started   time.Time
	ready     atomic.Bool
	draining  atomic.Bool
	clientErr chan error
	telErr    chan error
}

func run(cfg *config) error {
	n := &node{cfg: cfg, log: newLogger(cfg), started: time.Now(), clientErr: make(chan error, 1), telErr: make(chan error, 1)}
	if cfg.NodeID == "" {
		b := make([]byte, 3)
		_, _ = rand.Read(b)
		cfg.NodeID = hostname() + "-" + hex.EncodeToString(b)
	}
	bootstrap, err := bus.ParseKeys(cfg.BootstrapChannels)
	if err != nil {
		return fmt.Errorf("invalid ARQONBUS_BOOTSTRAP_CHANNELS: %w", err)
	}
	autoJoin, err := bus.ParseKeys(cfg.AutoJoin)
	if err != nil {
		return fmt.Errorf("invalid ARQONBUS_AUTO_JOIN: %w", err)
	}

	n.spareProc()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := n.openStore(ctx); err != nil {
		return err
	}
	n.hub = fanout.NewHub(fanout.Options{Bootstrap: bootstrap, AutoCreate: cfg.AutoCreate, NewState: bus.NewChannelState,
		MaxChannels: cfg.MaxChannels,
		OnHandlers:  func(ch *fanout.Channel) { n.bus.HandlersChanged(ch) },
		OnRemoved:   func(ch *fanout.Channel, why fanout.Removal) { n.bus.ChannelRemoved(ch, why) }})
	// Every connection joins the auto-join channels: they are kept, never evicted.
	for _, k := range autoJoin {
		_, _ = n.hub.CreateAt(k, time.Now())
	}
	n.restoreChannels(ctx)

	n.tel = telemetry.New(telemetry.Options{
		NodeID: cfg.NodeID, Hub: n.hub, Logger: n.log,
		StreamChannel: bus.TelemetryChannel, DashboardChannel: bus.DashboardChannel,
		SnapshotEvery: cfg.TelemetrySnapshotEvery,
		Snapshot:      n.telemetrySnapshot,
	})
	n.bus = bus.New(bus.Config{
		NodeID:             cfg.NodeID,
		MaxViolations:      cfg.MaxViolations,
		ReplaceDuplicate:   cfg.ReplaceDuplicate,
		AutoJoin:           autoJoin,
		JWTSecret:          cfg.JWTSecret,
		ResumeSecret:       cfg.ResumeSecret,
		AdminToken:         cfg.AdminToken,
		AllowedOrigins:     splitList(cfg.AllowedOrigins),
		RateLimit:          cfg.RateLimit,
		RateBurst:          cfg.RateBurst,
		CommandRate:        cfg.CommandRate,
		CommandBurst:       cfg.CommandBurst,
		MaxSubscriptions:   cfg.MaxSubscriptions,
		MaxPendingCommands: cfg.MaxPending,
		CommandTimeout:     cfg.CommandTimeout,
		AnswerBytes:        cfg.MaxOutboundBytes / 2,
		ChannelIdleTTL:     cfg.ChannelIdleTTL,
		Store:              n.store,
		SyncAcks:           cfg.Persist == "sync",
		Telemetry:          n.tel,
		Clustered:          cfg.clustered(),
		Logger:             n.log,
	}, n.hub)
	if err := n.joinPeers(ctx); err != nil {
		_ = n.store.Close(ctx)
		return err
	}
	// A node that fails after registering (a port taken, an engine that stops) leaves the registry
	// at once: otherwise its id counts as live for the node TTL and a restart under the same
	// --node-id is refused. After a graceful shutdown this is a no-op.
	defer func() {
		if n.peers != nil {
			cctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_ = n.peers.Close(cctx)
			cancel()
		}
	}()

	n.http = ops.New(ops.Options{
		Addr:   net.JoinHostPort(cfg.Host, strconv.Itoa(cfg.HTTPPort)),
		Source: n,
		Logger: n.log,
		TelemetryWSURL: func(r *http.Request) string {
			host, _, err := net.SplitHostPort(r.Host)
			if err != nil {
				host = r.Host
			}
			return "ws://" + net.JoinHostPort(host, strconv.Itoa(cfg.TelemetryPort)) + "/"
		},
	})
	latency := n.http.RoutingLatency()
	addr := net.JoinHostPort(cfg.Host, strconv.Itoa(cfg.Port))
	n.clients = engine.New(engine.Config{
		Addr:              addr,
		Loops:             cfg.Loops,
		MaxConnections:    cfg.MaxConnections,
		MaxMessageSize:    cfg.MaxMessageSize,
		MaxOutboundBytes:  cfg.MaxOutboundBytes,
		MaxRequestedBytes: cfg.MaxRequestedBytes,
		HandshakeTimeout:  cfg.HandshakeTimeout,
		PingInterval:      cfg.PingInterval,
		IdleTimeout:       cfg.IdleTimeout,
		FrameTimeout:      cfg.FrameTimeout,
		MaxLoopInboxBytes: cfg.MaxLoopInboxBytes,
		WriteCoalesce:     coalesce(cfg.WriteCoalesce),
		Logger:            n.log,
		OnRouted:          func(d time.Duration) { latency.Observe(d.Seconds()) },
	}, n.bus)
	n.bus.AttachEngine(n.clients)
	telAddr := net.JoinHostPort(cfg.Host, strconv.Itoa(cfg.TelemetryPort))
	n.telSrv = engine.New(engine.Config{
		Addr:             telAddr,
		Loops:            1,
		MaxConnections:   cfg.TelemetryMaxConnections + 64, // the handler closes the excess with 1013
		MaxOutboundBytes: cfg.MaxOutboundBytes,
		HandshakeTimeout: cfg.HandshakeTimeout,
		PingInterval:     cfg.PingInterval,
		IdleTimeout:      cfg.IdleTimeout,
		FrameTimeout:     cfg.FrameTimeout,
		Logger:           n.log,
	}, n.tel.WSHandler(cfg.TelemetryMaxConnections))

	// Before anything accepts: a SIGTERM that comes while the engines start (a client may already
	// be connected) must wait its turn and shut down gracefully, not kill the process.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	if err := n.http.Start(); err != nil {
		return fmt.Errorf("http on port %d: %w", cfg.HTTPPort, err)
	}
	go n.bus.Run(ctx)
	telDone := make(chan struct{})
	go func() { n.tel.Run(ctx); close(telDone) }()
	go func() { n.clientErr <- n.clients.Run() }()
	go func() { n.telErr <- n.telSrv.Run() }()
	for _, s := range []struct {
		srv  *engine.Server
		errc chan error
	}{{n.clients, n.clientErr}, {n.telSrv, n.telErr}} {
		select {
		case <-s.srv.Ready():
		case err := <-s.errc:
			return err
		}
	}
	n.ready.Store(true)
	h := n.store.Health()
	mode := "standalone"
	if cfg.clustered() {
		mode = "cluster"
	}
	n.log.Info("arqonbus listening", "addr", "ws://"+addr, "telemetry", "ws://"+telAddr,
		"http", "http://"+net.JoinHostPort(cfg.Host, strconv.Itoa(cfg.HTTPPort)), "node_id", cfg.NodeID,
		"version", bus.Version, "max_connections", cfg.MaxConnections, "file_limit", cfg.FileLimit, "storage", h.Mode, "storage_status", h.Status, "mode", mode, "gomaxprocs", runtime.GOMAXPROCS(0))
	if cfg.MaxConnectionsAsked != 0 {
		n.log.Warn("max-connections lowered to what the file limit holds: an engine that runs out of descriptors stops accepting for good",
			"asked", cfg.MaxConnectionsAsked, "max_connections", cfg.MaxConnections, "file_limit", cfg.FileLimit)
	}

	select {
	case err := <-n.clientErr:
		return err
	case err := <-n.telErr:
		return err
	case s := <-sig:
		n.log.Info("shutting down", "signal", s.String())
	}
	err = n.shutdown()
	cancel()
	<-telDone
	return err
}

// shutdown drains: /ready turns 503 while the node keeps serving for the
// drain grace (a load balancer stops sending it new clients), then it stops
// accepting, clients get a system notice and close 1001 (reconnect: in a
// cluster, to another node), the engines stop, the node leaves the cluster
// and the store flushes, all within the deadline after the grace.
func (n *node) shutdown() error {
	n.draining.Store(true)
	if g := n.cfg.DrainGrace; g > 0 {
		n.log.Info("draining: /ready says 503; serving on", "grace", g)
		time.Sleep(g)
	}
	sctx, scancel := context.WithTimeout(context.Background(), n.cfg.ShutdownTimeout)
	defer scancel()
	n.clients.StopAccepting()
	n.clients.CloseAll(n.bus.ShutdownNotice(), engine.CloseGoingAway, "server shutting down")
	n.telSrv.CloseAll(nil, engine.CloseGoingAway, "server shutting down")
	time.Sleep(100 * time.Millisecond) // let the close frames leave before the loops stop
	// Both engines stop together: gnet takes at least 500 ms each.
	var errs []error
	stopped := make(chan error, 2)
	for _, s := range []struct {
		srv  *engine.Server
		errc chan error
	}{{n.clients, n.clientErr}, {n.telSrv, n.telErr}} {
		go func() {
			if err := s.srv.Stop(sctx); err != nil {
				n.log.Warn("engine stop", "err", err)
			}
			select {
			case err := <-s.errc:
				stopped <- err
			case <-sctx.Done():
				stopped <- errors.New("shutdown deadline passed stopping the engines")
			}
		}()
	}
	for range 2 {
		if err := <-stopped; err != nil {
			errs = append(errs, err)
		}
	}
	n.bus.CloseCluster(sctx)
	if n.peers != nil {
		if err := n.peers.Close(sctx); err != nil {
			n.log.Warn("leaving the cluster", "err", err)
		}
	}
	if err := n.store.Close(sctx); err != nil {
		errs = append(errs, fmt.Errorf("flushing storage: %w", err))
	}
	_ = n.http.Shutdown(sctx)
	if len(errs) == 0 {
		n.log.Info("stopped")
	}
	return errors.Join(errs...)
}

// spareProc gives the Go scheduler one P more than there are event loops when the node talks to
// Redis. Busy gnet loops hold every P, polling epoll themselves, and the runtime's own network poller
// (rueidis's connections, timers) is then only polled by sysmon, every 10 ms: measured, cross-node
// command round trips had a 6-10 ms p50 at 1,000/s with GOMAXPROCS = loops, 1.1 ms with one P more.
// A GOMAXPROCS set in the environment is left as it is.
func (n *node) spareProc() {
	if n.cfg.Storage != "redis" || os.Getenv("GOMAXPROCS") != "" {
		return
	}
	loops := n.cfg.Loops
	if loops <= 0 {
		loops = engine.DefaultLoops()
	}
	if runtime.GOMAXPROCS(0) <= loops {
		runtime.GOMAXPROCS(loops + 1)
	}
}

// joinPeers registers the node in Redis (storage=redis): in a cluster it joins
// the other nodes as one bus; standalone, it makes sure no other node uses the
// same key prefix. A node that may not start next to the live ones is refused
// here. Once started, it waits (a little) for events to cross nodes before
// the node serves.
func (n *node) joinPeers(ctx context.Context) error {
	if n.cfg.Storage != "redis" {
		return nil
	}
	clustered := n.cfg.clustered()
	opts := cluster.Options{
		URL: n.cfg.RedisURL, KeyPrefix: n.cfg.RedisKeyPrefix, NodeID: n.cfg.NodeID, HistorySize: n.cfg.HistorySize,
		Standalone: !clustered, Heartbeat: n.cfg.ClusterHeartbeat, NodeTTL: n.cfg.ClusterNodeTTL, Logger: n.log,
		State: n.bus.ClusterState,
	}
	if clustered {
		opts.Handler = n.bus.ClusterHandler()
	}
	peers, err := cluster.New(ctx, opts)
	if err != nil {
		return err
	}
	n.peers = peers
	if clustered {
		n.bus.JoinCluster(peers)
	}
	peers.Start()
	if clustered && peers.Up() {
		deadline := time.Now().Add(3 * time.Second)
		for !n.bus.Clustered() && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
	}
	return nil
}

// openStore opens the history store. Redis unreachable at start is not
// fatal: the store starts degraded, in memory, and keeps trying.
func (n *node) openStore(ctx context.Context) error {
	limits := persist.Limits{Entries: n.cfg.HistorySize, ChannelBytes: int64(n.cfg.HistoryChanBytes), TotalBytes: int64(n.cfg.HistoryMaxBytes)}
	if n.cfg.Storage != "redis" {
		n.store = persist.NewMemoryLimits(limits)
		return nil
	}
	r, err := persist.NewRedis(ctx, persist.RedisOptions{
		URL:          n.cfg.RedisURL,
		HistorySize:  limits.Entries,
		ChannelBytes: limits.ChannelBytes,
		TotalBytes:   limits.TotalBytes,
		Buffer:       n.cfg.PersistBuffer,
		KeyPrefix:    n.cfg.RedisKeyPrefix,
		Logger:       n.log,
		OnStateChange: func(h persist.Health) {
			if n.tel == nil {
				return
			}
			ev := "storage_recovered"
			if h.Status == persist.StatusDegraded {
				ev = "storage_degraded"
			}
			n.tel.Emit(ev, map[string]any{"mode": h.Mode, "status": h.Status, "backlog": h.Backlog, "last_error": h.LastError})
		},
	})
	if err != nil {
		return fmt.Errorf("storage: %w", err)
	}
	n.store = r
	return nil
}

// restoreChannels recreates the channels made with create_channel before a
// restart and seeds every known channel's history clock.
func (n *node) restoreChannels(ctx context.Context) {
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	saved, err := n.store.LoadChannels(rctx)
	if err != nil {
		n.log.Warn("could not restore channels", "err", err)
	}
	for name, created := range saved {
		room, channel, ok := strings.Cut(name, ":")
		if !ok || !codec.ValidName(room) || !codec.ValidName(channel) {
			continue
		}
		_, _ = n.hub.CreateAt(fanout.Key{Room: room, Channel: channel}, created)
	}
	if len(saved) > 0 {
		n.log.Info("restored channels", "count", len(saved))
	}
	w, ok := n.store.(persist.Warmer)
	if !ok || n.store.Health().Status != persist.StatusOK {
		return
	}
	// Load each channel's newest history into memory before serving: join
	// replays read only the rings, and each channel's clock must continue
	// above what its stream already holds.
	wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
	defer wcancel()
	names, err := w.Warm(wctx)
	if err != nil {
		n.log.Warn("could not load all history from storage", "err", err, "channels_loaded", len(names))
	}
	refused := false
	for _, name := range names {
		room, channel, ok := strings.Cut(name, ":")
		if !ok || !codec.ValidName(room) || !codec.ValidName(channel) {
			n.store.Forget(name)
			continue
		}
		// Evicted once idle, like a channel a join made; beyond the channel
		// cap, only its stream keeps its history.
		ch, err := n.hub.CreateTransient(fanout.Key{Room: room, Channel: channel})
		if ch == nil {
			n.store.Forget(name)
			if !refused {
				refused = true
				n.log.Warn("more channels in storage than --max-channels: the rest are left to history reads", "err", err)
			}
			continue
		}
		if newest, _ := n.store.Recent(name, persist.Query{Limit: 1}); len(newest) == 1 {
			bus.SeedClock(ch, newest[0].Position)
		}
	}
	if len(names) > 0 {
		n.log.Info("loaded history", "channels", len(names))
	}
}

// Snapshot is what the HTTP side reads (ops.Source).
func (n *node) Snapshot() ops.Snapshot {
	c := n.bus.Counters()
	es := n.clients.Stats()
	h := n.store.Health()
	return ops.Snapshot{
		NodeID: n.cfg.NodeID, Version: bus.Version, Protocol: codec.Version, Commit: commit, BuildDate: buildDate,
		Started:    n.started,
		Ready:      n.ready.Load() && !n.draining.Load(),
		Draining:   n.draining.Load(),
		LoopsAlive: n.clients.LoopsAlive() && n.telSrv.LoopsAlive(),
		Storage: ops.StorageState{Mode: h.Mode, Status: h.Status, Backlog: h.Backlog, Dropped: h.Dropped,
			LastError: h.LastError},
		ClientsByType:        c.ClientsByType,
		ActiveClients:        c.ActiveClients,
		WebSocketConnections: es.Connections,
		TelemetryConnections: n.tel.WSConnections(),
		Rooms:                c.Rooms,
		Channels:             c.Channels,
		MessagesReceived:     es.MessagesIn,
		MessagesSent:         es.Deliveries,
		ErrorsByCode:         c.ErrorsByCode,
		Commands:             c.Commands,
		CommandErrors:        c.CommandErrors,
		StorageWrites:        h.Written,
		StorageErrors:        h.Dropped,
		PersistQueueDepth:    h.Backlog,
		TelemetryDropped:     n.tel.Dropped(),
		SlowConsumers:        es.SlowConsumers,
		LoopInboxDropped:     es.InboxDropped + n.telSrv.Stats().InboxDropped,
		FramesWritten:        es.FramesOut,
		SocketWrites:         es.Writes,
		LoopWakeups:          es.Wakeups,
		ChannelsEvicted:      n.bus.ChannelsEvicted(),
		LimitRefusals: map[string]uint64{
			"rate": c.RateLimited, "violations": c.ViolationCloses, "auth": c.AuthRefused, "connections": es.Refused,
		},
		Cluster: n.clusterState(),
		Panics:  es.Panics + n.telSrv.Stats().Panics + c.Panics,
	}
}

// clusterState is the cluster part of the snapshot; nil when standalone.
func (n *node) clusterState() *ops.ClusterState {
	nodes, st := n.bus.Cluster()
	if st == nil {
		return nil
	}
	cs := &ops.ClusterState{
		Reachable: st.Reachable, EventsPublished: st.EventsPublished, EventsReceived: st.EventsReceived,
		LocalOnly: st.LocalOnly, Uncertain: st.Uncertain, Gaps: st.Gaps, RemoteSends: st.RemoteSends,
		RemoteFailures: st.RemoteFailures, QueueRefused: st.QueueRefused, Nodes: []ops.ClusterNode{},
	}
	for _, nd := range nodes {
		cs.Nodes = append(cs.Nodes, ops.ClusterNode{NodeID: nd.NodeID, Clients: nd.Clients, Started: nd.Started, Self: nd.Self})
	}
	return cs
}

// telemetrySnapshot is the payload of the periodic metrics_snapshot event.
func (n *node) telemetrySnapshot() map[string]any {
	c := n.bus.Counters()
	h := n.store.Health()
	return map[string]any{
		"clients":                      c.ClientsByType,
		"active_clients":               c.ActiveClients,
		"messages_received_per_second": c.ReceivedPerSec,
		"messages_sent_per_second":     c.SentPerSec,
		"rooms":                        c.Rooms,
		"channels":                     n.bus.ChannelUtilisation(100),
		"channels_total":               c.Channels,
		"storage":                      map[string]any{"mode": h.Mode, "status": h.Status, "backlog": h.Backlog},
	}
}

// vcsStamp is the commit (and its time) that `go build` recorded from the checkout, or "dev".
func vcsStamp() (rev, when string) {
	rev = "dev"
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return rev, ""
	}
	dirty := false
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value[:min(12, len(s.Value))]
		case "vcs.time":
			when = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if dirty && rev != "dev" {
		rev += "-dirty"
	}
	return rev, when
}

// coalesce maps --write-coalesce to engine.Config.WriteCoalesce, where 0 means the default and a
// negative value means never hold.
func coalesce(d time.Duration) time.Duration {
	if d == 0 {
		return -1
	}
	return d
}
