// Package ops serves the HTTP side of ArqonBus: health, readiness, version, Prometheus metrics and the
// live dashboard page.
//
// It is a pure reader of the running bus: everything it shows comes from one Source.Snapshot per request
// (or per Prometheus scrape), plus the routing-latency histogram that the engine observes directly. It
// runs on plain net/http with its own prometheus.Registry, never on the event loops.
package ops

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Source is what ops reads from the running bus. Every method is cheap and safe from any goroutine.
type Source interface {
	Snapshot() Snapshot
}

// StorageState is the persistence layer as ops sees it.
type StorageState struct {
	Mode      string `json:"mode"`   // "memory" | "redis"
	Status    string `json:"status"` // "ok" | "degraded" | "failing"
	Backlog   int    `json:"backlog"`
	Dropped   uint64 `json:"dropped"`
	LastError string `json:"last_error,omitempty"`
}

// Degraded reports whether storage is anything but healthy ("" counts as ok: no storage configured).
func (st StorageState) Degraded() bool { return st.Status != "" && st.Status != StorageOK }

// Storage statuses.
const (
	StorageOK       = "ok"
	StorageDegraded = "degraded"
	StorageFailing  = "failing"
)

// Snapshot is a consistent-enough picture of the bus at one instant. Counters are monotonic totals since
// start; gauges are current values.
type Snapshot struct {
	NodeID    string    `json:"node_id"`
	Version   string    `json:"version"`
	Protocol  string    `json:"protocol"`
	Commit    string    `json:"commit"`
	BuildDate string    `json:"build_date"`
	Started   time.Time `json:"started"`

	Ready      bool `json:"ready"`       // started and not draining
	Draining   bool `json:"draining"`    // shutting down
	LoopsAlive bool `json:"loops_alive"` // event loops responsive

	Storage StorageState `json:"storage"`

	ClientsByType        map[string]int64 `json:"clients_by_type"` // human, ai-agent, dashboard, service
	ActiveClients        int64            `json:"active_clients"`
	WebSocketConnections int64            `json:"websocket_connections"`
	TelemetryConnections int64            `json:"telemetry_connections"`
	Rooms                int              `json:"rooms"`
	Channels             int              `json:"channels"`

	MessagesReceived uint64            `json:"messages_received"`
	MessagesSent     uint64            `json:"messages_sent"` // deliveries
	ErrorsByCode     map[string]uint64 `json:"errors_by_code"`

	Commands          uint64 `json:"commands"`
	CommandErrors     uint64 `json:"command_errors"`
	StorageWrites     uint64 `json:"storage_writes"`
	StorageErrors     uint64 `json:"storage_errors"`
	PersistQueueDepth int    `json:"persist_queue_depth"`
	TelemetryDropped  uint64 `json:"telemetry_dropped"`
	SlowConsumers     uint64 `json:"slow_consumers"`
	LoopInboxDropped  uint64 `json:"loop_inbox_dropped"` // frames dropped by full event-loop inboxes
	FramesWritten     uint64 `json:"frames_written"`     // frames written to client sockets
	SocketWrites      uint64 `json:"socket_writes"`      // write/writev calls on client sockets
	LoopWakeups       uint64 `json:"loop_wakeups"`       // event loops woken by work from elsewhere
	ChannelsEvicted   uint64 `json:"channels_evicted"`   // idle channels removed (--channel-idle-ttl)
	// LimitRefusals counts refusals by limit (the names in Limits).
	LimitRefusals map[string]uint64 `json:"limit_refusals"`
	// Panics counts panics recovered (on the event loops and off them): each one a bug, logged with
	// its stack, that did not take the process down.
	Panics uint64 `json:"panics"`

	// Cluster is this node's part in a cluster; nil for a standalone bus.
	Cluster *ClusterState `json:"cluster,omitempty"`
}

// ClusterState is a clustered node's view: the live nodes, and what crossed nodes from here.
type ClusterState struct {
	Reachable bool          `json:"reachable"` // events cross nodes now (Redis reachable)
	Nodes     []ClusterNode `json:"nodes"`
	// Events this node published through Redis and received from it; routed on this node only
	// because Redis was unreachable (LocalOnly) or failed midway (Uncertain); catch-ups that found
	// history trimmed (Gaps); messages to other nodes and those that found no one.
	EventsPublished uint64 `json:"events_published"`
	EventsReceived  uint64 `json:"events_received"`
	LocalOnly       uint64 `json:"events_local_only"`
	Uncertain       uint64 `json:"events_uncertain"`
	Gaps            uint64 `json:"gaps"`
	RemoteSends     uint64 `json:"remote_sends"`
	RemoteFailures  uint64 `json:"remote_failures"`
	QueueRefused    uint64 `json:"queue_refused"` // refused: too much was waiting for Redis
}

// ClusterNode is one live node.
type ClusterNode struct {
	NodeID  string    `json:"node_id"`
	Clients int       `json:"clients"`
	Started time.Time `json:"started"`
	Self    bool      `json:"self,omitempty"`
}

// Options configure a Server.
type Options struct {
	Addr   string // host:port to listen on
	Source Source
	Logger *slog.Logger // nil: slog.Default()
	// TelemetryWSURL gives the URL the dashboard page connects to for live events, e.g. ws://<host>:9101/.
	// nil: ws (or wss) on the request's host name, port 9101.
	TelemetryWSURL func(r *http.Request) string
	AllowOrigin    string // Access-Control-Allow-Origin for the read-only endpoints; "" means "*"
}

// Server is the HTTP operations server.
type Server struct {
	opts    Options
	log     *slog.Logger
	reg     *prometheus.Registry
	latency prometheus.Histogram
	handler http.Handler
	rates   rateSampler

	mu   sync.Mutex
	srv  *http.Server
	ln   net.Listener
	done chan struct{}
}

// Limits name the limits whose refusals are counted: message or command
// rates and commands in flight, violation-budget closes, refused tokens or
// origins, and connections over the cap.
var Limits = []string{"rate", "violations", "auth", "connections"}

// LatencyBuckets are the routing-latency histogram's upper bounds in seconds: 18 exponential buckets
// from 50µs to 5s (each about twice the one before).
var LatencyBuckets = []float64{
	50e-6, 100e-6, 200e-6, 400e-6, 800e-6, 0.0016, 0.0032, 0.0064, 0.0128, 0.025, 0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5,
}

// New builds a Server and its registry. It does not listen; see Start.
func New(o Options) *Server {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.AllowOrigin == "" {
		o.AllowOrigin = "*"
	}
	if o.TelemetryWSURL == nil {
		o.TelemetryWSURL = defaultTelemetryURL
	}
	if o.Source == nil {
		o.Source = emptySource{}
	}
	s := &Server{opts: o, log: o.Logger.With("component", "ops")}
	s.reg = newRegistry(o.Source)
	s.latency = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "arqonbus_routing_latency_seconds",
		Help:    "Time from a message's arrival to its frames being written, per message per event loop.",
		Buckets: LatencyBuckets,
	})
	s.reg.MustRegister(s.latency)
	s.handler = s.routes()
	return s
}

// Registry is the server's own Prometheus registry; callers may register more collectors on it.
func (s *Server) Registry() *prometheus.Registry { return s.reg }

// RoutingLatency is the routing-latency histogram (seconds, from a message's arrival to its frames being
// written), exponential buckets from 50µs to ~5s; the engine observes it once per message per event loop.
func (s *Server) RoutingLatency() prometheus.Observer { return s.latency }

// Handler is the server's HTTP handler (all endpoints), for tests or to mount elsewhere.
func (s *Server) Handler() http.Handler { return s.handler }

// Start listens on Options.Addr (failing fast on a bad or busy address) and serves in a goroutine.
func (s *Server) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv != nil {
		return errors.New("ops: already started")
	}
	tcp, err := net.Listen("tcp", s.opts.Addr)
	if err != nil {
		return fmt.Errorf("ops: listen %q: %w", s.opts.Addr, err)
	}
	ln := newLimitListener(tcp, MaxConnections)
	srv := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       90 * time.Second,
		MaxHeaderBytes:    32 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	s.srv, s.ln, s.done = srv, ln, make(chan struct{})
	go func(done chan struct{}) {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("ops http server stopped", "err", err)
		}
	}(s.done)
	s.log.Info("ops http listening", "addr", ln.Addr().String())
	return nil
}

// Addr is the address the server listens on once started ("" before), useful with port 0.
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return ""
	}
	return s.ln.Addr().String()
}

// Shutdown stops accepting, waits for in-flight requests until ctx ends, then closes what is left.
// It is a no-op before Start.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	srv, done := s.srv, s.done
	s.mu.Unlock()
	if srv == nil {
		return nil
	}
	err := srv.Shutdown(ctx)
	if err != nil {
		_ = srv.Close()
	}
	select {
	case <-done:
	case <-ctx.Done():
	}
	return err
}

type emptySource struct{}

func (emptySource) Snapshot() Snapshot { return Snapshot{} }

func defaultTelemetryURL(r *http.Request) string {
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	if host == "" {
		host = "localhost"
	}
	scheme := "ws"
	if r.TLS != nil {
		scheme = "wss"
	}
	return scheme + "://" + net.JoinHostPort(host, "9101") + "/"
}
