package ops

import (
	"encoding/json"
	"math"
	"net/http"
	"runtime"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	ro := func(pattern string, h http.HandlerFunc) { mux.Handle(pattern, s.readOnly(h)) }
	ro("/health", s.health)
	ro("/ready", s.ready)
	ro("/version", s.version)
	ro("/metrics", promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{
		ErrorLog:            promLogger{s},
		ErrorHandling:       promhttp.ContinueOnError,
		MaxRequestsInFlight: 4,
		Timeout:             10 * time.Second,
	}).ServeHTTP)
	ro("/api/config", s.apiConfig)
	ro("/api/snapshot", s.apiSnapshot)
	// Browsers ask for a favicon whatever the page says; answer it quietly.
	mux.Handle("/favicon.ico", getOnly(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusNoContent)
	})))
	mux.Handle("/", getOnly(staticHandler()))
	return mux
}

type promLogger struct{ s *Server }

func (l promLogger) Println(v ...any) { l.s.log.Warn("metrics scrape", "err", v) }

// readOnly adds CORS for the read-only endpoints, answers OPTIONS preflights and refuses other methods.
func (s *Server) readOnly(h http.Handler) http.Handler {
	origin := s.opts.AllowOrigin
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Access-Control-Allow-Origin", origin)
		if origin != "*" {
			hd.Add("Vary", "Origin")
		}
		switch r.Method {
		case http.MethodGet, http.MethodHead:
			h.ServeHTTP(w, r)
		case http.MethodOptions:
			hd.Set("Access-Control-Allow-Methods", "GET, HEAD, OPTIONS")
			hd.Set("Access-Control-Allow-Headers", "Accept, Content-Type, Cache-Control")
			hd.Set("Access-Control-Max-Age", "600")
			hd.Set("Allow", "GET, HEAD, OPTIONS")
			w.WriteHeader(http.StatusNoContent)
		default:
			hd.Set("Allow", "GET, HEAD, OPTIONS")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		}
	})
}

func getOnly(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		h.ServeHTTP(w, r)
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, `{"error":"encoding"}`, http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/json; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

func uptimeOf(s Snapshot, now time.Time) float64 {
	if s.Started.IsZero() {
		return 0
	}
	return math.Round(now.Sub(s.Started).Seconds()*1000) / 1000
}

// Health statuses.
const (
	HealthOK           = "ok"
	HealthDegraded     = "degraded"
	HealthFailing      = "failing"
	HealthShuttingDown = "shutting_down"
)

type healthStorage struct {
	Mode      string `json:"mode"`
	Status    string `json:"status"`
	Backlog   int    `json:"backlog"`
	LastError string `json:"last_error,omitempty"`
}

type healthChecks struct {
	EventLoops string         `json:"event_loops"`
	Storage    healthStorage  `json:"storage"`
	Cluster    *healthCluster `json:"cluster,omitempty"`
	Draining   bool           `json:"draining"`
}

type healthCluster struct {
	Status string `json:"status"` // "ok", or "degraded" while events cannot cross nodes
	Nodes  int    `json:"nodes"`
}

type healthBody struct {
	Status        string       `json:"status"`
	UptimeSeconds float64      `json:"uptime_seconds"`
	Version       string       `json:"version"`
	NodeID        string       `json:"node_id"`
	Checks        healthChecks `json:"checks"`
}

// healthOf decides /health: draining → 503 shutting_down; event loops unresponsive → 503 failing;
// storage degraded or failing → 200 degraded (the bus still routes, storage falls behind); else 200 ok.
func healthOf(s Snapshot, now time.Time) (int, healthBody) {
	b := healthBody{
		Status:        HealthOK,
		UptimeSeconds: uptimeOf(s, now),
		Version:       s.Version,
		NodeID:        s.NodeID,
		Checks: healthChecks{
			EventLoops: "ok",
			Storage: healthStorage{
				Mode: s.Storage.Mode, Status: s.Storage.Status, Backlog: s.Storage.Backlog,
				LastError: lastErrorIfDegraded(s.Storage),
			},
			Draining: s.Draining,
		},
	}
	if b.Checks.Storage.Status == "" {
		b.Checks.Storage.Status = StorageOK
	}
	if !s.LoopsAlive {
		b.Checks.EventLoops = "failing"
	}
	if c := s.Cluster; c != nil {
		b.Checks.Cluster = &healthCluster{Status: StorageOK, Nodes: len(c.Nodes)}
		if !c.Reachable {
			b.Checks.Cluster.Status = HealthDegraded
		}
	}
	switch {
	case s.Draining:
		b.Status = HealthShuttingDown
		return http.StatusServiceUnavailable, b
	case !s.LoopsAlive:
		b.Status = HealthFailing
		return http.StatusServiceUnavailable, b
	case s.Storage.Degraded(), s.Cluster != nil && !s.Cluster.Reachable:
		b.Status = HealthDegraded
	}
	return http.StatusOK, b
}

func (s *Server) health(w http.ResponseWriter, r *http.Request) {
	code, body := healthOf(s.opts.Source.Snapshot(), time.Now())
	writeJSON(w, code, body)
}

type readyBody struct {
	Ready  bool   `json:"ready"`
	Reason string `json:"reason,omitempty"`
}

func (s *Server) ready(w http.ResponseWriter, r *http.Request) {
	snap := s.opts.Source.Snapshot()
	switch {
	case snap.Draining:
		writeJSON(w, http.StatusServiceUnavailable, readyBody{Reason: "draining"})
	case !snap.Ready:
		writeJSON(w, http.StatusServiceUnavailable, readyBody{Reason: "starting"})
	case !snap.LoopsAlive:
		// A load balancer checking /ready must stop sending clients to a node whose loops are stuck.
		writeJSON(w, http.StatusServiceUnavailable, readyBody{Reason: "event loops unresponsive"})
	default:
		writeJSON(w, http.StatusOK, readyBody{Ready: true})
	}
}

type versionBody struct {
	Name      string `json:"name"`
	Version   string `json:"version"`
	Protocol  string `json:"protocol"`
	Commit    string `json:"commit"`
	BuildDate string `json:"build_date"`
	Go        string `json:"go"`
	NodeID    string `json:"node_id"`
}

func (s *Server) version(w http.ResponseWriter, r *http.Request) {
	snap := s.opts.Source.Snapshot()
	writeJSON(w, http.StatusOK, versionBody{
		Name: "arqonbus", Version: snap.Version, Protocol: protocolOf(snap), Commit: snap.Commit,
		BuildDate: snap.BuildDate, Go: runtime.Version(), NodeID: snap.NodeID,
	})
}

func (s *Server) apiConfig(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"telemetry_ws": s.opts.TelemetryWSURL(r)})
}

// SnapshotBody is what GET /api/snapshot returns: the Snapshot plus values computed from it.
type SnapshotBody struct {
	Snapshot
	UptimeSeconds             float64   `json:"uptime_seconds"`
	HealthStatus              string    `json:"health_status"`
	MessagesReceivedPerSecond float64   `json:"messages_received_per_second"`
	MessagesSentPerSecond     float64   `json:"messages_sent_per_second"`
	ServerTime                time.Time `json:"server_time"`
}

func (s *Server) apiSnapshot(w http.ResponseWriter, r *http.Request) {
	snap := s.opts.Source.Snapshot()
	now := time.Now()
	if snap.ClientsByType == nil {
		snap.ClientsByType = map[string]int64{}
	}
	if snap.ErrorsByCode == nil {
		snap.ErrorsByCode = map[string]uint64{}
	}
	for _, t := range ClientTypes {
		if _, ok := snap.ClientsByType[t]; !ok {
			snap.ClientsByType[t] = 0
		}
	}
	snap.Protocol = protocolOf(snap)
	_, h := healthOf(snap, now)
	in, out := s.rates.rate(now, snap.MessagesReceived, snap.MessagesSent)
	writeJSON(w, http.StatusOK, SnapshotBody{
		Snapshot: snap, UptimeSeconds: uptimeOf(snap, now), HealthStatus: h.Status,
		MessagesReceivedPerSecond: in, MessagesSentPerSecond: out, ServerTime: now.UTC(),
	})
}

// rateSampler turns the monotonic message counters into per-second rates for /api/snapshot. It samples
// lazily (at most one sample per second, taken when a request comes) and measures over the newest sample
// that is at least rateWindow old, so several pollers do not disturb each other's rates.
type rateSampler struct {
	mu      sync.Mutex
	samples [rateSamples]rateSample // ring, oldest overwritten
	n, next int
}

type rateSample struct {
	at      time.Time
	in, out uint64
}

const (
	rateSamples = 16
	rateWindow  = 2 * time.Second
	rateEvery   = time.Second
)

func (rs *rateSampler) rate(now time.Time, in, out uint64) (float64, float64) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	// Base: the newest sample at least rateWindow old, else the oldest one we have.
	var base *rateSample
	for i := 1; i <= rs.n; i++ {
		sm := &rs.samples[(rs.next-i+rateSamples)%rateSamples]
		base = sm
		if now.Sub(sm.at) >= rateWindow {
			break
		}
	}
	if rs.n == 0 || now.Sub(rs.samples[(rs.next-1+rateSamples)%rateSamples].at) >= rateEvery {
		rs.samples[rs.next] = rateSample{at: now, in: in, out: out}
		rs.next = (rs.next + 1) % rateSamples
		if rs.n < rateSamples {
			rs.n++
		}
	}
	if base == nil {
		return 0, 0
	}
	secs := now.Sub(base.at).Seconds()
	if secs < 0.2 || in < base.in || out < base.out {
		return 0, 0
	}
	return round2(float64(in-base.in) / secs), round2(float64(out-base.out) / secs)
}

func round2(f float64) float64 { return math.Round(f*100) / 100 }

// lastErrorIfDegraded shows the storage's last error only while it matters:
// after a recovery it is history, not health.
func lastErrorIfDegraded(st StorageState) string {
	if st.Degraded() {
		return st.LastError
	}
	return ""
}
