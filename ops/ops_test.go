package ops

import (
	"context"
	"encoding/json"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// fakeSource is a settable Source.
type fakeSource struct {
	mu    sync.Mutex
	snap  Snapshot
	calls int
}

func (f *fakeSource) Snapshot() Snapshot {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	s := f.snap
	// copy the maps, as a real source returns fresh ones
	s.ClientsByType = make(map[string]int64, len(f.snap.ClientsByType))
	for k, v := range f.snap.ClientsByType {
		s.ClientsByType[k] = v
	}
	s.ErrorsByCode = make(map[string]uint64, len(f.snap.ErrorsByCode))
	for k, v := range f.snap.ErrorsByCode {
		s.ErrorsByCode[k] = v
	}
	return s
}

func (f *fakeSource) update(fn func(s *Snapshot)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(&f.snap)
}

func (f *fakeSource) callCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

func normalSnapshot() Snapshot {
	return Snapshot{
		NodeID: "node-1", Version: "0.3.0", Protocol: "1.0", Commit: "abc1234", BuildDate: "2025-01-02",
		Started: time.Now().Add(-90 * time.Second), Ready: true, LoopsAlive: true,
		Storage:       StorageState{Mode: "memory", Status: "ok"},
		ClientsByType: map[string]int64{"human": 3, "ai-agent": 2, "dashboard": 1, "service": 0},
		ActiveClients: 6, WebSocketConnections: 6, TelemetryConnections: 1, Rooms: 2, Channels: 3,
		MessagesReceived: 100, MessagesSent: 250,
		ErrorsByCode: map[string]uint64{"VALIDATION_ERROR": 4, "RATE_LIMITED": 1},
		Commands:     7, CommandErrors: 1, StorageWrites: 90, StorageErrors: 0, PersistQueueDepth: 2,
		TelemetryDropped: 0, SlowConsumers: 0,
	}
}

func newTest(t testing.TB, snap Snapshot) (*Server, *fakeSource) {
	t.Helper()
	src := &fakeSource{snap: snap}
	s := New(Options{
		Addr: "127.0.0.1:0", Source: src,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		TelemetryWSURL: func(r *http.Request) string {
			return "ws://telemetry.test:9101/"
		},
	})
	return s, src
}

func do(t testing.TB, h http.Handler, method, path string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(method, path, nil)
	req.Header.Set("Origin", "http://elsewhere.example")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func decode(t testing.TB, rec *httptest.ResponseRecorder) map[string]any {
	t.Helper()
	if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Fatalf("content-type %q", ct)
	}
	var m map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &m); err != nil {
		t.Fatalf("json %q: %v", rec.Body.String(), err)
	}
	return m
}

func get(m map[string]any, path string) any {
	var v any = m
	for _, k := range strings.Split(path, ".") {
		mm, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = mm[k]
	}
	return v
}

func TestHealth(t *testing.T) {
	cases := []struct {
		name     string
		mod      func(*Snapshot)
		code     int
		status   string
		loops    string
		storage  string
		draining bool
	}{
		{"normal", func(*Snapshot) {}, 200, "ok", "ok", "ok", false},
		{"degraded", func(s *Snapshot) {
			s.Storage = StorageState{Mode: "redis", Status: "degraded", Backlog: 42, LastError: "dial tcp: refused"}
		}, 200, "degraded", "ok", "degraded", false},
		{"storage failing", func(s *Snapshot) { s.Storage = StorageState{Mode: "redis", Status: "failing"} },
			200, "degraded", "ok", "failing", false},
		{"draining", func(s *Snapshot) { s.Ready, s.Draining = false, true }, 503, "shutting_down", "ok", "ok", true},
		{"loops dead", func(s *Snapshot) { s.LoopsAlive = false }, 503, "failing", "failing", "ok", false},
		{"starting", func(s *Snapshot) { s.Ready = false; s.LoopsAlive = false }, 503, "failing", "failing", "ok", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			snap := normalSnapshot()
			c.mod(&snap)
			s, _ := newTest(t, snap)
			rec := do(t, s.Handler(), "GET", "/health")
			if rec.Code != c.code {
				t.Fatalf("code %d, want %d: %s", rec.Code, c.code, rec.Body)
			}
			m := decode(t, rec)
			if get(m, "status") != c.status || get(m, "checks.event_loops") != c.loops ||
				get(m, "checks.storage.status") != c.storage || get(m, "checks.draining") != c.draining {
				t.Fatalf("body %s", rec.Body)
			}
			if get(m, "version") != "0.3.0" || get(m, "node_id") != "node-1" {
				t.Fatalf("body %s", rec.Body)
			}
			if up, _ := get(m, "uptime_seconds").(float64); up < 89 || up > 200 {
				t.Fatalf("uptime %v", get(m, "uptime_seconds"))
			}
			if get(m, "checks.storage.mode") == nil || get(m, "checks.storage.backlog") == nil {
				t.Fatalf("storage check incomplete: %s", rec.Body)
			}
			if c.name == "degraded" && (get(m, "checks.storage.backlog") != 42.0 || get(m, "checks.storage.mode") != "redis") {
				t.Fatalf("degraded body %s", rec.Body)
			}
		})
	}
}

func TestReady(t *testing.T) {
	cases := []struct {
		name string
		mod  func(*Snapshot)
		code int
		body string
	}{
		{"normal", func(*Snapshot) {}, 200, `{"ready":true}`},
		{"degraded", func(s *Snapshot) { s.Storage.Status = "degraded" }, 200, `{"ready":true}`},
		{"starting", func(s *Snapshot) { s.Ready = false }, 503, `{"ready":false,"reason":"starting"}`},
		{"draining", func(s *Snapshot) { s.Ready, s.Draining = false, true }, 503, `{"ready":false,"reason":"draining"}`},
		{"draining flag wins", func(s *Snapshot) { s.Draining = true }, 503, `{"ready":false,"reason":"draining"}`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			snap := normalSnapshot()
			c.mod(&snap)
			s, _ := newTest(t, snap)
			rec := do(t, s.Handler(), "GET", "/ready")
			if rec.Code != c.code || strings.TrimSpace(rec.Body.String()) != c.body {
				t.Fatalf("got %d %s, want %d %s", rec.Code, rec.Body, c.code, c.body)
			}
		})
	}
}

func TestVersion(t *testing.T) {
	for _, mod := range []func(*Snapshot){
		func(*Snapshot) {},
		func(s *Snapshot) { s.Ready, s.Draining, s.Storage.Status = false, true, "degraded" },
	} {
		snap := normalSnapshot()
		mod(&snap)
		s, _ := newTest(t, snap)
		rec := do(t, s.Handler(), "GET", "/version")
		if rec.Code != 200 {
			t.Fatalf("code %d", rec.Code)
		}
		m := decode(t, rec)
		want := map[string]any{"name": "arqonbus", "version": "0.3.0", "protocol": "1.0", "commit": "abc1234",
			"build_date": "2025-01-02", "go": runtime.Version()}
		for k, v := range want {
			if m[k] != v {
				t.Fatalf("%s = %v, want %v (%s)", k, m[k], v, rec.Body)
			}
		}
	}
	// protocol defaults to 1.0
	snap := normalSnapshot()
	snap.Protocol = ""
	s, _ := newTest(t, snap)
	if m := decode(t, do(t, s.Handler(), "GET", "/version")); m["protocol"] != "1.0" {
		t.Fatalf("protocol %v", m["protocol"])
	}
}

func TestCORS(t *testing.T) {
	s, _ := newTest(t, normalSnapshot())
	h := s.Handler()
	for _, p := range []string{"/health", "/ready", "/version", "/metrics", "/api/snapshot", "/api/config"} {
		rec := do(t, h, "GET", p)
		if rec.Code != 200 || rec.Header().Get("Access-Control-Allow-Origin") != "*" {
			t.Fatalf("GET %s: %d, ACAO %q", p, rec.Code, rec.Header().Get("Access-Control-Allow-Origin"))
		}
		rec = do(t, h, "OPTIONS", p)
		if rec.Code != http.StatusNoContent || rec.Header().Get("Access-Control-Allow-Origin") != "*" ||
			!strings.Contains(rec.Header().Get("Access-Control-Allow-Methods"), "GET") {
			t.Fatalf("OPTIONS %s: %d %v", p, rec.Code, rec.Header())
		}
		rec = do(t, h, "POST", p)
		if rec.Code != http.StatusMethodNotAllowed {
			t.Fatalf("POST %s: %d", p, rec.Code)
		}
	}
	// a configured origin
	s2 := New(Options{Source: &fakeSource{snap: normalSnapshot()}, AllowOrigin: "https://ops.example",
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	rec := do(t, s2.Handler(), "GET", "/health")
	if rec.Header().Get("Access-Control-Allow-Origin") != "https://ops.example" || rec.Header().Get("Vary") != "Origin" {
		t.Fatalf("headers %v", rec.Header())
	}
}

// scrape parses /metrics with the Prometheus text parser.
func scrape(t testing.TB, h http.Handler) map[string]*dto.MetricFamily {
	t.Helper()
	rec := do(t, h, "GET", "/metrics")
	if rec.Code != 200 {
		t.Fatalf("metrics %d: %s", rec.Code, rec.Body)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(rec.Body)
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	return fams
}

func value(t testing.TB, fams map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	t.Helper()
	f := fams[name]
	if f == nil {
		t.Fatalf("no metric %s", name)
	}
next:
	for _, m := range f.Metric {
		for i := 0; i+1 < len(labels); i += 2 {
			found := false
			for _, lp := range m.Label {
				if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		switch f.GetType() {
		case dto.MetricType_COUNTER:
			return m.GetCounter().GetValue()
		case dto.MetricType_GAUGE:
			return m.GetGauge().GetValue()
		case dto.MetricType_HISTOGRAM:
			return float64(m.GetHistogram().GetSampleCount())
		}
	}
	t.Fatalf("no %s%v", name, labels)
	return 0
}

func TestMetrics(t *testing.T) {
	s, src := newTest(t, normalSnapshot())
	h := s.Handler()
	fams := scrape(t, h)

	want := map[string]dto.MetricType{
		"arqonbus_active_clients":          dto.MetricType_GAUGE,
		"arqonbus_clients":                 dto.MetricType_GAUGE,
		"arqonbus_rooms_total":             dto.MetricType_GAUGE,
		"arqonbus_channels_total":          dto.MetricType_GAUGE,
		"arqonbus_websocket_connections":   dto.MetricType_GAUGE,
		"arqonbus_telemetry_connections":   dto.MetricType_GAUGE,
		"arqonbus_messages_received_total": dto.MetricType_COUNTER,
		"arqonbus_messages_sent_total":     dto.MetricType_COUNTER,
		"arqonbus_errors_total":            dto.MetricType_COUNTER,
		"arqonbus_uptime_seconds":          dto.MetricType_GAUGE,
		"arqonbus_memory_usage_bytes":      dto.MetricType_GAUGE,
		"arqonbus_routing_latency_seconds": dto.MetricType_HISTOGRAM,
		"arqonbus_commands_total":          dto.MetricType_COUNTER,
		"arqonbus_command_errors_total":    dto.MetricType_COUNTER,
		"arqonbus_storage_writes_total":    dto.MetricType_COUNTER,
		"arqonbus_storage_errors_total":    dto.MetricType_COUNTER,
		"arqonbus_storage_degraded":        dto.MetricType_GAUGE,
		"arqonbus_persist_queue_depth":     dto.MetricType_GAUGE,
		"arqonbus_telemetry_dropped_total": dto.MetricType_COUNTER,
		"arqonbus_slow_consumers_total":    dto.MetricType_COUNTER,
		"arqonbus_limit_refusals_total":    dto.MetricType_COUNTER,
		"go_goroutines":                    dto.MetricType_GAUGE,
		"process_resident_memory_bytes":    dto.MetricType_GAUGE,
	}
	want["arqonbus_loop_inbox_dropped_total"] = dto.MetricType_COUNTER
	for name, typ := range want {
		f := fams[name]
		if f == nil {
			t.Errorf("missing %s", name)
			continue
		}
		if f.GetType() != typ {
			t.Errorf("%s type %v, want %v", name, f.GetType(), typ)
		}
		if f.GetHelp() == "" {
			t.Errorf("%s has no help", name)
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	// label sets are fixed: the 4 client types, the SPEC's error codes, nothing else
	if n := len(fams["arqonbus_clients"].Metric); n != len(ClientTypes) {
		t.Fatalf("arqonbus_clients has %d series", n)
	}
	if n := len(fams["arqonbus_errors_total"].Metric); n != len(ErrorCodes) {
		t.Fatalf("arqonbus_errors_total has %d series", n)
	}
	checks := []struct {
		name   string
		labels []string
		want   float64
	}{
		{"arqonbus_active_clients", nil, 6},
		{"arqonbus_clients", []string{"type", "human"}, 3},
		{"arqonbus_clients", []string{"type", "ai-agent"}, 2},
		{"arqonbus_clients", []string{"type", "service"}, 0},
		{"arqonbus_rooms_total", nil, 2},
		{"arqonbus_channels_total", nil, 3},
		{"arqonbus_messages_received_total", nil, 100},
		{"arqonbus_messages_sent_total", nil, 250},
		{"arqonbus_errors_total", []string{"code", "VALIDATION_ERROR"}, 4},
		{"arqonbus_errors_total", []string{"code", "INTERNAL"}, 0},
		{"arqonbus_commands_total", nil, 7},
		{"arqonbus_storage_degraded", nil, 0},
		{"arqonbus_persist_queue_depth", nil, 2},
		{"arqonbus_routing_latency_seconds", nil, 0},
	}
	for _, c := range checks {
		if got := value(t, fams, c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	if up := value(t, fams, "arqonbus_uptime_seconds"); up < 89 || up > 200 {
		t.Errorf("uptime %v", up)
	}
	if mem := value(t, fams, "arqonbus_memory_usage_bytes"); mem < 1<<20 {
		t.Errorf("memory %v", mem)
	}
	buckets := fams["arqonbus_routing_latency_seconds"].Metric[0].GetHistogram().GetBucket()
	if n := len(buckets); n > 0 && buckets[n-1].GetUpperBound() > 1e300 {
		buckets = buckets[:n-1] // the parser keeps +Inf
	}
	if len(buckets) < 15 || buckets[0].GetUpperBound() != 50e-6 || buckets[len(buckets)-1].GetUpperBound() < 4.9 ||
		buckets[len(buckets)-1].GetUpperBound() > 5.1 {
		t.Errorf("buckets %d from %v to %v", len(buckets), buckets[0].GetUpperBound(), buckets[len(buckets)-1].GetUpperBound())
	}

	// traffic: values move
	src.update(func(s *Snapshot) {
		s.MessagesReceived += 1000
		s.MessagesSent += 5000
		s.ActiveClients++
		s.ClientsByType["service"]++
		s.ErrorsByCode["INTERNAL"] = 2
		s.Commands += 3
		s.StorageWrites += 10
		s.Storage = StorageState{Mode: "redis", Status: "degraded", Backlog: 9}
		s.TelemetryDropped = 5
		s.SlowConsumers = 1
		s.LoopInboxDropped = 4
	})
	s.RoutingLatency().Observe(0.0002)
	s.RoutingLatency().Observe(0.003)
	fams = scrape(t, h)
	checks = []struct {
		name   string
		labels []string
		want   float64
	}{
		{"arqonbus_active_clients", nil, 7},
		{"arqonbus_clients", []string{"type", "service"}, 1},
		{"arqonbus_messages_received_total", nil, 1100},
		{"arqonbus_messages_sent_total", nil, 5250},
		{"arqonbus_errors_total", []string{"code", "INTERNAL"}, 2},
		{"arqonbus_commands_total", nil, 10},
		{"arqonbus_storage_writes_total", nil, 100},
		{"arqonbus_storage_degraded", nil, 1},
		{"arqonbus_telemetry_dropped_total", nil, 5},
		{"arqonbus_slow_consumers_total", nil, 1},
		{"arqonbus_routing_latency_seconds", nil, 2},
	}
	checks = append(checks, struct {
		name   string
		labels []string
		want   float64
	}{"arqonbus_loop_inbox_dropped_total", nil, 4})
	for _, c := range checks {
		if got := value(t, fams, c.name, c.labels...); got != c.want {
			t.Errorf("after traffic: %s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	if sum := fams["arqonbus_routing_latency_seconds"].Metric[0].GetHistogram().GetSampleSum(); sum < 0.0031 || sum > 0.0033 {
		t.Errorf("latency sum %v", sum)
	}
}

// One Source.Snapshot per scrape, whatever the number of metrics.
func TestMetricsOneSnapshotPerScrape(t *testing.T) {
	s, src := newTest(t, normalSnapshot())
	before := src.callCount()
	scrape(t, s.Handler())
	if n := src.callCount() - before; n != 1 {
		t.Fatalf("%d Snapshot calls per scrape", n)
	}
}

func TestAPISnapshot(t *testing.T) {
	s, src := newTest(t, normalSnapshot())
	h := s.Handler()
	rec := do(t, h, "GET", "/api/snapshot")
	if rec.Code != 200 {
		t.Fatalf("code %d", rec.Code)
	}
	m := decode(t, rec)
	for k, v := range map[string]any{
		"node_id": "node-1", "version": "0.3.0", "ready": true, "active_clients": 6.0, "rooms": 2.0,
		"channels": 3.0, "messages_received": 100.0, "messages_sent": 250.0, "health_status": "ok",
		"messages_received_per_second": 0.0, "messages_sent_per_second": 0.0, "persist_queue_depth": 2.0,
	} {
		if m[k] != v {
			t.Errorf("%s = %v, want %v", k, m[k], v)
		}
	}
	if get(m, "clients_by_type.human") != 3.0 || get(m, "clients_by_type.service") != 0.0 ||
		get(m, "storage.status") != "ok" || get(m, "errors_by_code.VALIDATION_ERROR") != 4.0 {
		t.Fatalf("body %s", rec.Body)
	}
	if _, ok := m["uptime_seconds"].(float64); !ok {
		t.Fatalf("no uptime: %s", rec.Body)
	}

	// rates from the counters' movement
	now := time.Now()
	in, out := s.rates.rate(now.Add(3*time.Second), 400, 1150)
	if in < 95 || in > 101 || out < 290 || out > 301 {
		t.Fatalf("rates %v %v", in, out)
	}
	src.update(func(s *Snapshot) { s.Storage.Status = "degraded"; s.Ready, s.Draining = false, true })
	m = decode(t, do(t, h, "GET", "/api/snapshot"))
	if m["health_status"] != "shutting_down" || m["draining"] != true || get(m, "storage.status") != "degraded" {
		t.Fatalf("body %v", m)
	}
}

func TestRateSampler(t *testing.T) {
	var rs rateSampler
	t0 := time.Unix(1000, 0)
	if a, b := rs.rate(t0, 0, 0); a != 0 || b != 0 {
		t.Fatal("first sample has a rate")
	}
	// several pollers at sub-second spacing do not reset the base
	for i := 1; i <= 10; i++ {
		at := t0.Add(time.Duration(i) * 500 * time.Millisecond)
		in, out := rs.rate(at, uint64(i*50), uint64(i*100))
		if i >= 1 && (in != 100 || out != 200) {
			t.Fatalf("step %d: %v %v", i, in, out)
		}
	}
	// counter reset (restart) gives 0, not a huge number
	if a, _ := rs.rate(t0.Add(10*time.Second), 1, 1); a != 0 {
		t.Fatalf("reset rate %v", a)
	}
}

func TestAPIConfig(t *testing.T) {
	s, _ := newTest(t, normalSnapshot())
	m := decode(t, do(t, s.Handler(), "GET", "/api/config"))
	if m["telemetry_ws"] != "ws://telemetry.test:9101/" {
		t.Fatalf("config %v", m)
	}
	// default: the request's host, port 9101
	s2 := New(Options{Source: &fakeSource{}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	req := httptest.NewRequest("GET", "http://10.1.2.3:8080/api/config", nil)
	rec := httptest.NewRecorder()
	s2.Handler().ServeHTTP(rec, req)
	if m := decode(t, rec); m["telemetry_ws"] != "ws://10.1.2.3:9101/" {
		t.Fatalf("default config %v", m)
	}
}

func TestDashboard(t *testing.T) {
	s, _ := newTest(t, normalSnapshot())
	h := s.Handler()
	rec := do(t, h, "GET", "/")
	if rec.Code != 200 || !strings.HasPrefix(rec.Header().Get("Content-Type"), "text/html") {
		t.Fatalf("/: %d %q", rec.Code, rec.Header().Get("Content-Type"))
	}
	html := rec.Body.String()
	for _, want := range []string{`data-testid="clients-total"`, `data-testid="events"`, `data-testid="storage-status"`,
		`data-testid="channels-table"`, `data-testid="connection-status"`, `src="app.js"`, `href="style.css"`,
		`src="vendor/uPlot.iife.min.js"`} {
		if !strings.Contains(html, want) {
			t.Errorf("index.html lacks %s", want)
		}
	}
	if csp := rec.Header().Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'self'") {
		t.Errorf("CSP %q", csp)
	}
	// every local asset the page references is served, with a sensible type
	refs := regexp.MustCompile(`(?:src|href)="([^"]+)"`).FindAllStringSubmatch(html, -1)
	if len(refs) < 4 {
		t.Fatalf("refs %v", refs)
	}
	for _, r := range refs {
		rec := do(t, h, "GET", "/"+r[1])
		if rec.Code != 200 || rec.Body.Len() == 0 {
			t.Errorf("%s: %d", r[1], rec.Code)
		}
		ct := rec.Header().Get("Content-Type")
		if (strings.HasSuffix(r[1], ".js") && !strings.HasPrefix(ct, "text/javascript")) ||
			(strings.HasSuffix(r[1], ".css") && !strings.HasPrefix(ct, "text/css")) {
			t.Errorf("%s: content-type %q", r[1], ct)
		}
	}
	// ETag revalidation
	etag := rec.Header().Get("ETag")
	req := httptest.NewRequest("GET", "/", nil)
	req.Header.Set("If-None-Match", etag)
	rec2 := httptest.NewRecorder()
	h.ServeHTTP(rec2, req)
	if etag == "" || rec2.Code != http.StatusNotModified {
		t.Errorf("etag %q: %d", etag, rec2.Code)
	}
	if rec := do(t, h, "GET", "/nope.js"); rec.Code != 404 {
		t.Errorf("/nope.js: %d", rec.Code)
	}
	if rec := do(t, h, "POST", "/"); rec.Code != http.StatusMethodNotAllowed {
		t.Errorf("POST /: %d", rec.Code)
	}
}

// Nothing in the embedded files loads from another host: no http:// or https:// URL at all in our own
// files; in vendored files only inside the leading license banner comment.
func TestDashboardNoRemoteAssets(t *testing.T) {
	url := regexp.MustCompile(`(?i)(https?:)?//[a-z0-9.-]+\.[a-z]{2,}`)
	n := 0
	err := fs.WalkDir(staticFS, "static", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || strings.HasSuffix(p, ".LICENSE") {
			return err
		}
		n++
		b, _ := staticFS.ReadFile(p)
		text := string(b)
		if strings.HasPrefix(p, "static/vendor/") && strings.HasPrefix(text, "/*!") {
			if end := strings.Index(text, "*/"); end > 0 {
				text = text[end+2:]
			}
		}
		for _, m := range url.FindAllString(text, -1) {
			if strings.HasPrefix(strings.ToLower(m), "http") {
				t.Errorf("%s references %s", p, m)
			}
		}
		if strings.Contains(text, "http://") || strings.Contains(text, "https://") {
			t.Errorf("%s contains an absolute http(s) URL", p)
		}
		return nil
	})
	if err != nil || n < 5 {
		t.Fatalf("walk: %v, %d files", err, n)
	}
}

func TestStartShutdown(t *testing.T) {
	s, _ := newTest(t, normalSnapshot())
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err == nil {
		t.Fatal("second Start succeeded")
	}
	resp, err := http.Get("http://" + s.Addr() + "/health")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"status":"ok"`) {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	// a busy address fails fast
	s2 := New(Options{Addr: s.Addr(), Source: &fakeSource{}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err := s2.Start(); err == nil {
		t.Fatal("Start on a busy address succeeded")
	}
	s3 := New(Options{Addr: "256.0.0.1:bad", Source: &fakeSource{}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err := s3.Start(); err == nil {
		t.Fatal("Start on a bad address succeeded")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := http.Get("http://" + s.Addr() + "/health"); err == nil {
		t.Fatal("still serving after Shutdown")
	}
	if err := s2.Shutdown(ctx); err != nil {
		t.Fatal("Shutdown before Start:", err)
	}
}

// BenchmarkScrape is the cost of one Prometheus scrape (bus collector + Go + process collectors +
// text encoding).
func BenchmarkScrape(b *testing.B) {
	s, _ := newTest(b, normalSnapshot())
	h := s.Handler()
	req := httptest.NewRequest("GET", "/metrics", nil)
	b.ReportAllocs()
	for b.Loop() {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != 200 {
			b.Fatal(rec.Code)
		}
	}
}

// BenchmarkScrapeBusOnly is the bus collector alone (what ops adds on top of the standard collectors).
func BenchmarkScrapeBusOnly(b *testing.B) {
	c := newBusCollector(&fakeSource{snap: normalSnapshot()})
	ch := make(chan prometheus.Metric, 128)
	b.ReportAllocs()
	for b.Loop() {
		c.Collect(ch)
		for len(ch) > 0 {
			<-ch
		}
	}
}

func BenchmarkRoutingLatencyObserve(b *testing.B) {
	s, _ := newTest(b, normalSnapshot())
	o := s.RoutingLatency()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			o.Observe(0.00042)
		}
	})
}

// TestSDKServed: the JavaScript SDK and its types are served from /sdk/, byte for byte what sdk/js
// holds, importable as a module from a page on any origin.
func TestSDKServed(t *testing.T) {
	s, _ := newTest(t, normalSnapshot())
	h := s.Handler()
	for path, ctype := range map[string]string{"/sdk/arqonbus.js": "text/javascript", "/sdk/arqonbus.d.ts": "application/typescript"} {
		rec := do(t, h, "GET", path)
		if rec.Code != 200 || !strings.HasPrefix(rec.Header().Get("Content-Type"), ctype) {
			t.Fatalf("%s: %d %q", path, rec.Code, rec.Header().Get("Content-Type"))
		}
		if rec.Header().Get("Access-Control-Allow-Origin") != "*" {
			t.Errorf("%s: no Access-Control-Allow-Origin: *", path)
		}
		want, err := os.ReadFile("../sdk/js/" + strings.TrimPrefix(path, "/sdk/"))
		if err != nil {
			t.Fatal(err)
		}
		if rec.Body.String() != string(want) {
			t.Errorf("%s differs from sdk/js", path)
		}
	}
	if rec := do(t, h, "GET", "/sdk/package.json"); rec.Code != 404 {
		t.Errorf("/sdk/package.json: %d, want 404 (only the module and its types are served)", rec.Code)
	}
}
