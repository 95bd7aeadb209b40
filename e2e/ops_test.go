package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/arqonbus/arqonbus/client"
	"github.com/arqonbus/arqonbus/internal/redistest"
)

// Tests for SPEC "Operations", the HTTP port: /health, /ready, /version,
// /metrics, the dashboard page, /api/snapshot and /api/config, in the normal,
// degraded (storage down) and draining (SIGTERM) states.

// opsHTTP is the client for the HTTP port: short timeouts, keep-alive.
var opsHTTP = &http.Client{Timeout: 3 * time.Second}

// httpResp is one answer of the HTTP port.
type httpResp struct {
	Status int
	Header http.Header
	Body   []byte
}

// JSON decodes the body as an object; it fails the test when it is not one.
func (r httpResp) JSON(t testing.TB, what string) result {
	t.Helper()
	var m result
	if err := json.Unmarshal(r.Body, &m); err != nil || m == nil {
		t.Fatalf("%s: body is not a JSON object (%v): %q", what, err, r.Body)
	}
	return m
}

// httpDo sends one request to the server's HTTP port (path like "/health").
func httpDo(t testing.TB, s *server, method, path string) httpResp {
	t.Helper()
	r, err := httpTry(s, method, path)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	return r
}

func httpTry(s *server, method, path string) (httpResp, error) {
	req, err := http.NewRequest(method, s.HTTPURL+path, nil)
	if err != nil {
		return httpResp{}, err
	}
	resp, err := opsHTTP.Do(req)
	if err != nil {
		return httpResp{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return httpResp{}, err
	}
	return httpResp{Status: resp.StatusCode, Header: resp.Header, Body: b}, nil
}

func httpGet(t testing.TB, s *server, path string) httpResp {
	return httpDo(t, s, http.MethodGet, path)
}

// waitReady polls /ready until it answers 200: startServer only waits for the
// client port, and the server marks itself ready just after.
func waitReady(t testing.TB, s *server) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		r, err := httpTry(s, http.MethodGet, "/ready")
		if err == nil && r.Status == http.StatusOK {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("/ready not 200 within 5 s: %v %d %s", err, r.Status, r.Body)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// checkJSONResp checks status, a JSON content type and the CORS header of a
// read-only endpoint.
func checkJSONResp(t *testing.T, what string, r httpResp, status int) {
	t.Helper()
	if r.Status != status {
		t.Errorf("%s: status %d, want %d; body %s", what, r.Status, status, r.Body)
	}
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("%s: Content-Type %q, want application/json", what, ct)
	}
	if o := r.Header.Get("Access-Control-Allow-Origin"); o == "" {
		t.Errorf("%s: no Access-Control-Allow-Origin header (SPEC: CORS on the read-only endpoints)", what)
	}
}

// checkHealthBody checks the SPEC's /health shape and returns checks.storage.
func checkHealthBody(t *testing.T, h result, wantStatus string) result {
	t.Helper()
	requireKeys(t, "/health", h, "status", "uptime_seconds", "version", "checks")
	if got := h.str("status"); got != wantStatus {
		t.Errorf("/health status %q, want %q: %v", got, wantStatus, h)
	}
	if up, ok := h.num("uptime_seconds"); !ok || up < 0 || up > 3600 {
		t.Errorf("/health uptime_seconds %s is not a small non-negative number", h["uptime_seconds"])
	}
	if h.str("version") == "" {
		t.Errorf("/health version is empty")
	}
	checks := h.obj("checks")
	if checks == nil {
		t.Fatalf("/health checks is not an object: %s", h["checks"])
	}
	st := checks.obj("storage")
	if st == nil {
		t.Fatalf("/health checks.storage is not an object: %s", h["checks"])
	}
	return st
}

// TestOpsEndpointsNormal: every endpoint of the HTTP port on a healthy server
// with the memory store.
func TestOpsEndpointsNormal(t *testing.T) {
	s := startServer(t)
	waitReady(t, s)

	// /health: 200 ok, event loops ok, storage memory ok, not draining.
	r := httpGet(t, s, "/health")
	checkJSONResp(t, "/health", r, http.StatusOK)
	h := r.JSON(t, "/health")
	st := checkHealthBody(t, h, "ok")
	checks := h.obj("checks")
	if checks.str("event_loops") != "ok" {
		t.Errorf("/health checks.event_loops %s, want ok", checks["event_loops"])
	}
	if d, ok := checks.boolean("draining"); !ok || d {
		t.Errorf("/health checks.draining %s, want false", checks["draining"])
	}
	if st.str("mode") != "memory" || st.str("status") != "ok" {
		t.Errorf("/health checks.storage %v, want mode memory status ok", st)
	}

	// /ready: 200.
	r = httpGet(t, s, "/ready")
	checkJSONResp(t, "/ready", r, http.StatusOK)
	if ok, _ := r.JSON(t, "/ready").boolean("ready"); !ok {
		t.Errorf("/ready body %s, want ready true", r.Body)
	}

	// /version: name, version, protocol, build commit and date.
	r = httpGet(t, s, "/version")
	checkJSONResp(t, "/version", r, http.StatusOK)
	v := r.JSON(t, "/version")
	requireKeys(t, "/version", v, "name", "version", "protocol", "commit", "build_date")
	if v.str("name") != "arqonbus" || v.str("protocol") != "1.0" || v.str("version") == "" || v.str("commit") == "" {
		t.Errorf("/version %s: want name arqonbus, protocol 1.0, a version and a commit", r.Body)
	}
	if v.str("version") != h.str("version") {
		t.Errorf("/version version %q differs from /health version %q", v.str("version"), h.str("version"))
	}

	// /metrics: Prometheus text (parsed in detail by TestMetricsPrometheus).
	r = httpGet(t, s, "/metrics")
	if r.Status != http.StatusOK || !strings.HasPrefix(r.Header.Get("Content-Type"), "text/plain") {
		t.Errorf("/metrics: %d %q, want 200 text/plain", r.Status, r.Header.Get("Content-Type"))
	}
	if !strings.Contains(string(r.Body), "\narqonbus_active_clients 0\n") {
		t.Errorf("/metrics lacks `arqonbus_active_clients 0` (the quickstart greps it)")
	}
	if r.Header.Get("Access-Control-Allow-Origin") == "" {
		t.Errorf("/metrics: no CORS header")
	}

	// /api/config: the telemetry WebSocket URL the dashboard uses, on this
	// server's telemetry port and the host the page was loaded from.
	r = httpGet(t, s, "/api/config")
	checkJSONResp(t, "/api/config", r, http.StatusOK)
	if got, want := r.JSON(t, "/api/config").str("telemetry_ws"), fmt.Sprintf("ws://127.0.0.1:%d/", s.TelemetryPort); got != want {
		t.Errorf("/api/config telemetry_ws %q, want %q", got, want)
	}

	// /api/snapshot: the bus state the dashboard polls, moving with a client.
	c := dial(t, s, client.WithClientID("ops_normal_agent"), client.WithParam("client_type", "ai-agent"))
	r = httpGet(t, s, "/api/snapshot")
	checkJSONResp(t, "/api/snapshot", r, http.StatusOK)
	snap := r.JSON(t, "/api/snapshot")
	requireKeys(t, "/api/snapshot", snap, "node_id", "version", "ready", "draining", "storage", "clients_by_type",
		"active_clients", "websocket_connections", "telemetry_connections", "rooms", "channels",
		"messages_received", "messages_sent", "errors_by_code", "health_status", "uptime_seconds",
		"messages_received_per_second", "messages_sent_per_second")
	if n, _ := snap.num("active_clients"); n != 1 {
		t.Errorf("/api/snapshot active_clients %v with one client connected", snap["active_clients"])
	}
	if n, _ := snap.obj("clients_by_type").num("ai-agent"); n != 1 {
		t.Errorf("/api/snapshot clients_by_type %s, want ai-agent 1", snap["clients_by_type"])
	}
	if snap.str("health_status") != "ok" || snap.str("node_id") != h.str("node_id") {
		t.Errorf("/api/snapshot health_status %q node_id %q, want ok and %q", snap.str("health_status"), snap.str("node_id"), h.str("node_id"))
	}
	c.Close()

	// / : the dashboard page, embedded, with its assets and nothing from another host.
	r = httpGet(t, s, "/")
	if r.Status != http.StatusOK || !strings.HasPrefix(r.Header.Get("Content-Type"), "text/html") {
		t.Errorf("/: %d %q, want 200 text/html", r.Status, r.Header.Get("Content-Type"))
	}
	page := string(r.Body)
	for _, hook := range []string{`data-testid="clients-total"`, `data-testid="events"`, `data-testid="storage-status"`, `data-testid="rate-chart"`} {
		if !strings.Contains(page, hook) {
			t.Errorf("/: page lacks %s", hook)
		}
	}
	if strings.Contains(page, "http://") || strings.Contains(page, "https://") || strings.Contains(page, "//cdn") {
		t.Errorf("/: the page references another host (the machine is offline)")
	}
	for _, asset := range []string{"/app.js", "/style.css", "/vendor/uPlot.iife.min.js", "/vendor/uPlot.min.css"} {
		if a := httpGet(t, s, asset); a.Status != http.StatusOK || len(a.Body) == 0 {
			t.Errorf("%s: status %d, %d bytes", asset, a.Status, len(a.Body))
		}
	}

	// CORS preflight and read-only methods.
	r = httpDo(t, s, http.MethodOptions, "/health")
	if r.Status != http.StatusNoContent || r.Header.Get("Access-Control-Allow-Origin") == "" ||
		!strings.Contains(r.Header.Get("Access-Control-Allow-Methods"), "GET") {
		t.Errorf("OPTIONS /health: %d %v, want 204 with CORS headers", r.Status, r.Header)
	}
	for _, p := range []string{"/health", "/metrics", "/"} {
		if r := httpDo(t, s, http.MethodPost, p); r.Status != http.StatusMethodNotAllowed {
			t.Errorf("POST %s: %d, want 405", p, r.Status)
		}
	}
}

// deadRedisURL is a Redis URL on a loopback port where nothing listens.
func deadRedisURL(t testing.TB) string {
	return fmt.Sprintf("redis://127.0.0.1:%d", freePort(t))
}

// TestOpsEndpointsDegraded: with Redis unreachable the server starts
// degraded: /health 200 "degraded" with the storage check saying why, /ready
// still 200 (the bus routes), /metrics says so. When a Redis appears on that
// port (if redis-server is installed), the server recovers: /health "ok" and
// a storage_recovered telemetry event.
func TestOpsEndpointsDegraded(t *testing.T) {
	// A port reserved for a Redis that starts later in the test.
	redis := redistest.New(t)
	s := startServer(t, "ARQONBUS_STORAGE=redis", "ARQONBUS_REDIS_URL="+redis.URL())
	waitReady(t, s)

	r := httpGet(t, s, "/health")
	checkJSONResp(t, "/health (degraded)", r, http.StatusOK)
	h := r.JSON(t, "/health")
	st := checkHealthBody(t, h, "degraded")
	if st.str("mode") != "redis" || (st.str("status") != "degraded" && st.str("status") != "failing") {
		t.Errorf("/health checks.storage %v, want mode redis, status degraded or failing", st)
	}
	if h.obj("checks").str("event_loops") != "ok" {
		t.Errorf("/health checks.event_loops %s while only storage is down", h.obj("checks")["event_loops"])
	}

	r = httpGet(t, s, "/ready")
	checkJSONResp(t, "/ready (degraded)", r, http.StatusOK)

	r = httpGet(t, s, "/version")
	checkJSONResp(t, "/version (degraded)", r, http.StatusOK)

	r = httpGet(t, s, "/api/snapshot")
	checkJSONResp(t, "/api/snapshot (degraded)", r, http.StatusOK)
	snap := r.JSON(t, "/api/snapshot")
	if snap.str("health_status") != "degraded" || snap.obj("storage").str("mode") != "redis" {
		t.Errorf("/api/snapshot health_status %q storage %s, want degraded / redis", snap.str("health_status"), snap["storage"])
	}

	m := scrape(t, s)
	if v := m.value(t, "arqonbus_storage_degraded", nil); v != 1 {
		t.Errorf("arqonbus_storage_degraded %v while Redis is down, want 1", v)
	}
	if v := m.value(t, "arqonbus_ready", nil); v != 1 {
		t.Errorf("arqonbus_ready %v while degraded, want 1", v)
	}

	// The bus still routes while storage is down.
	a := dial(t, s, client.WithClientID("deg_a"))
	b := dial(t, s, client.WithClientID("deg_b"))
	ctx := testCtx(t, 20*time.Second)
	for _, c := range []*client.Conn{a, b} {
		if err := c.Join(ctx, "science", "general"); err != nil {
			t.Fatal(err)
		}
	}
	id, _ := a.Publish("science", "general", map[string]string{"message": "degraded but routing"})
	if _, err := b.Expect(ctx, func(e client.Envelope) bool { return e.ID == id }); err != nil {
		t.Fatalf("event not routed while storage is degraded: %v", err)
	}

	// Recovery, once Redis runs on that port.
	mon := dial(t, s, client.WithClientID("deg_monitor"))
	if err := mon.Join(ctx, "integriguard", "telemetry-stream"); err != nil {
		t.Fatal(err)
	}
	redis.Start()
	started := time.Now()

	ev, err := mon.Expect(testCtx(t, 10*time.Second), func(e client.Envelope) bool {
		return e.Type == "telemetry" && eventType(e) == "storage_recovered"
	})
	if err != nil {
		t.Fatalf("no storage_recovered telemetry within 10 s of Redis starting: %v", err)
	}
	t.Logf("storage_recovered %v after redis-server started: %s", time.Since(started).Round(time.Millisecond), ev.Raw)
	var status string
	if ev.PayloadField("status", &status); status != "ok" {
		t.Errorf("storage_recovered status %q, want ok: %s", status, ev.Raw)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		r = httpGet(t, s, "/health")
		if r.Status == http.StatusOK && r.JSON(t, "/health").str("status") == "ok" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/health after recovery: %d %s, want 200 ok", r.Status, r.Body)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if v := scrape(t, s).value(t, "arqonbus_storage_degraded", nil); v != 0 {
		t.Errorf("arqonbus_storage_degraded %v after recovery, want 0", v)
	}

	// And down again: storage_degraded, /health degraded.
	redis.Kill()
	// A write makes the outage visible at once; the monitor would anyway.
	_, _ = a.Publish("science", "general", map[string]string{"message": "after redis died"})
	stopped := time.Now()
	ev, err = mon.Expect(testCtx(t, 10*time.Second), func(e client.Envelope) bool {
		return e.Type == "telemetry" && eventType(e) == "storage_degraded"
	})
	if err != nil {
		t.Fatalf("no storage_degraded telemetry within 10 s of Redis dying: %v", err)
	}
	t.Logf("storage_degraded %v after redis-server died: %s", time.Since(stopped).Round(time.Millisecond), ev.Raw)
	if r = httpGet(t, s, "/health"); r.Status != http.StatusOK || r.JSON(t, "/health").str("status") != "degraded" {
		t.Errorf("/health after Redis died: %d %s, want 200 degraded", r.Status, r.Body)
	}
}

// drainObservation is what a fast poller saw on one endpoint during shutdown.
type drainObservation struct {
	first503 time.Duration // since SIGTERM; -1 if never
	body     []byte        // the first 503 body
	last200  time.Duration // since SIGTERM, the last 200 seen after SIGTERM; -1 if none
	polls    int
}

// pollDuringShutdown polls path as fast as it can from before SIGTERM until
// the server stops answering, and reports what it saw after sig.
func pollDuringShutdown(s *server, path string, sigAt func() time.Time, stop <-chan struct{}) *drainObservation {
	o := &drainObservation{first503: -1, last200: -1}
	hc := &http.Client{Timeout: time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
	for {
		select {
		case <-stop:
			return o
		default:
		}
		resp, err := hc.Get(s.HTTPURL + path)
		if err != nil {
			if !s.Alive() || !sigAt().IsZero() && time.Since(sigAt()) > 2*time.Second {
				return o
			}
			time.Sleep(time.Millisecond)
			continue
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		at := sigAt()
		if at.IsZero() {
			continue
		}
		o.polls++
		since := time.Since(at)
		switch resp.StatusCode {
		case http.StatusServiceUnavailable:
			if o.first503 < 0 {
				o.first503, o.body = since, b
			}
		case http.StatusOK:
			if o.first503 < 0 {
				o.last200 = since
			}
		}
	}
}

// TestOpsEndpointsDraining: on SIGTERM /ready and /health turn 503
// (shutting_down) while the server closes its clients, which get a system
// notice on *:broadcast and then close 1001; the process exits 0. The window
// between SIGTERM and the HTTP port closing is short (about 100 ms with the
// memory store), so two pollers run flat out from before the signal.
func TestOpsEndpointsDraining(t *testing.T) {
	s := startServer(t)
	waitReady(t, s)
	c := dial(t, s, client.WithClientID("drain_watcher"))

	var (
		mu    sync.Mutex
		sigAt time.Time
	)
	getSig := func() time.Time { mu.Lock(); defer mu.Unlock(); return sigAt }
	stop := make(chan struct{})
	var wg sync.WaitGroup
	obs := map[string]*drainObservation{}
	for _, p := range []string{"/ready", "/health"} {
		wg.Add(1)
		go func(p string) {
			defer wg.Done()
			o := pollDuringShutdown(s, p, getSig, stop)
			mu.Lock()
			obs[p] = o
			mu.Unlock()
		}(p)
	}
	time.Sleep(50 * time.Millisecond) // pollers warm, connections open
	mu.Lock()
	sigAt = time.Now()
	mu.Unlock()
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}

	// The client: a system notice on *:broadcast, then close 1001.
	var notice client.Envelope
	for {
		env, err := c.Next(testCtx(t, 5*time.Second))
		if err != nil {
			break
		}
		if env.Type == "system" && env.Room == "*" && env.Channel == "broadcast" {
			notice = env
		}
	}
	if notice.Raw == nil {
		t.Errorf("no system notice on *:broadcast before the shutdown close")
	} else {
		var ev string
		if notice.PayloadField("event", &ev); ev != "shutdown" || notice.From != client.ServerFrom {
			t.Errorf("shutdown notice: %s", notice.Raw)
		}
	}
	if code, reason := c.CloseCode(); code != ws.StatusGoingAway {
		t.Errorf("close on shutdown: %d %q, want 1001", code, reason)
	}
	select {
	case <-s.exited:
		if !s.cmd.ProcessState.Success() {
			t.Errorf("exit after SIGTERM: %v, want 0", s.cmd.ProcessState)
		}
		t.Logf("server exited %v after SIGTERM", time.Since(getSig()).Round(time.Millisecond))
	case <-time.After(10 * time.Second):
		t.Errorf("server still running 10 s after SIGTERM")
	}
	close(stop)
	wg.Wait()

	for _, p := range []string{"/ready", "/health"} {
		o := obs[p]
		t.Logf("%s during shutdown: %d polls, last 200 at %v, first 503 at %v: %s", p, o.polls, o.last200, o.first503, o.body)
		if o.first503 < 0 {
			t.Errorf("%s never answered 503 between SIGTERM and exit (%d polls)", p, o.polls)
			continue
		}
		var b result
		if err := json.Unmarshal(o.body, &b); err != nil {
			t.Errorf("%s 503 body is not JSON: %q", p, o.body)
			continue
		}
		switch p {
		case "/ready":
			if ok, _ := b.boolean("ready"); ok {
				t.Errorf("/ready 503 body says ready: %s", o.body)
			}
		case "/health":
			if b.str("status") != "shutting_down" {
				t.Errorf("/health 503 status %q, want shutting_down: %s", b.str("status"), o.body)
			}
			if d, _ := b.obj("checks").boolean("draining"); !d {
				t.Errorf("/health 503 checks.draining is not true: %s", o.body)
			}
		}
	}
}

// TestOpsDrainingDegraded: SIGTERM while Redis is down and writes wait for
// it. The server still drains (503, notice, close 1001) and exits within
// ARQONBUS_SHUTDOWN_TIMEOUT; the unflushable writes are reported.
func TestOpsDrainingDegraded(t *testing.T) {
	url := deadRedisURL(t)
	s := startServer(t, "ARQONBUS_STORAGE=redis", "ARQONBUS_REDIS_URL="+url, "ARQONBUS_SHUTDOWN_TIMEOUT=1500ms")
	waitReady(t, s)
	c := dial(t, s, client.WithClientID("drain_deg"))
	if err := c.Join(testCtx(t, 5*time.Second), "science", "general"); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		if _, err := c.Publish("science", "general", map[string]int{"n": i}); err != nil {
			t.Fatal(err)
		}
	}
	// The backlog shows on /health before the signal.
	deadline := time.Now().Add(3 * time.Second)
	for {
		st := httpGet(t, s, "/health").JSON(t, "/health").obj("checks").obj("storage")
		if n, _ := st.num("backlog"); n >= 5 {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("storage backlog did not reach 5 on /health after 5 events with Redis down: backlog %s", st["backlog"])
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	sig := time.Now()
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// While the store tries to flush, the HTTP port says draining.
	var ready, health httpResp
	var got bool
	for !got && time.Since(sig) < 2*time.Second {
		r1, err1 := httpTry(s, http.MethodGet, "/ready")
		r2, err2 := httpTry(s, http.MethodGet, "/health")
		if err1 == nil && err2 == nil && r1.Status == http.StatusServiceUnavailable && r2.Status == http.StatusServiceUnavailable {
			ready, health, got = r1, r2, true
		}
		if err1 != nil && !s.Alive() {
			break
		}
	}
	if !got {
		t.Errorf("never saw /ready and /health both 503 after SIGTERM with a storage backlog")
	} else {
		if ok, _ := ready.JSON(t, "/ready").boolean("ready"); ok {
			t.Errorf("/ready draining body: %s", ready.Body)
		}
		hb := health.JSON(t, "/health")
		if hb.str("status") != "shutting_down" {
			t.Errorf("/health draining status %q, want shutting_down: %s", hb.str("status"), health.Body)
		}
		t.Logf("draining with a backlog: /ready %s /health %s", strings.TrimSpace(string(ready.Body)), strings.TrimSpace(string(health.Body)))
	}
	select {
	case <-c.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("client not closed 5 s after SIGTERM")
	}
	if code, _ := c.CloseCode(); code != ws.StatusGoingAway {
		t.Errorf("close %d, want 1001", code)
	}
	select {
	case <-s.exited:
		took := time.Since(sig)
		t.Logf("exit after %v: %v; last output: %s", took.Round(time.Millisecond), s.cmd.ProcessState, lastLines(s.Output(), 3))
		if took > 4*time.Second {
			t.Errorf("exit took %v with ARQONBUS_SHUTDOWN_TIMEOUT=1500ms", took)
		}
	case <-time.After(6 * time.Second):
		t.Errorf("server still running 6 s after SIGTERM with ARQONBUS_SHUTDOWN_TIMEOUT=1500ms")
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// ---------- helpers shared by the telemetry and dashboard tests ----------

// eventType is payload.eventType of a telemetry envelope.
func eventType(e client.Envelope) string {
	var s string
	e.PayloadField("eventType", &s)
	return s
}

// dialTelemetry connects to the telemetry WebSocket port; the client library
// checks the welcome.
func dialTelemetry(t testing.TB, s *server) *client.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, fmt.Sprintf("ws://127.0.0.1:%d/", s.TelemetryPort))
	if err != nil {
		t.Fatalf("dial telemetry port %d: %v", s.TelemetryPort, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// artifactDir is where screenshots go: $ARQONBUS_E2E_ARTIFACTS, else a temp dir.
func artifactDir(t *testing.T) string {
	if d := os.Getenv("ARQONBUS_E2E_ARTIFACTS"); d != "" {
		if err := os.MkdirAll(d, 0o755); err == nil {
			return d
		}
	}
	return t.TempDir()
}
