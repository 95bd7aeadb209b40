package e2e

import (
	"bytes"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/arqonbus/arqonbus/client"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// metricSet is one /metrics scrape parsed by the Prometheus text parser.
type metricSet map[string]*dto.MetricFamily

// scrape GETs /metrics and parses it with expfmt's TextParser (a parse error
// fails the test: the exposition must be valid Prometheus text).
func scrape(t testing.TB, s *server) metricSet {
	t.Helper()
	r := httpGet(t, s, "/metrics")
	if r.Status != http.StatusOK {
		t.Fatalf("/metrics: status %d: %s", r.Status, r.Body)
	}
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(r.Body))
	if err != nil {
		t.Fatalf("/metrics does not parse as Prometheus text: %v\n%s", err, r.Body)
	}
	return fams
}

// find returns the sample of family name whose labels include labels.
func (m metricSet) find(name string, labels map[string]string) (*dto.MetricFamily, *dto.Metric) {
	f := m[name]
	if f == nil {
		return nil, nil
	}
next:
	for _, mt := range f.Metric {
		for k, v := range labels {
			found := false
			for _, lp := range mt.Label {
				if lp.GetName() == k && lp.GetValue() == v {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		return f, mt
	}
	return f, nil
}

// value is the value of a gauge, counter or untyped sample; it fails the test
// when the sample is missing.
func (m metricSet) value(t testing.TB, name string, labels map[string]string) float64 {
	t.Helper()
	f, mt := m.find(name, labels)
	if mt == nil {
		t.Fatalf("/metrics: no sample %s%v", name, labels)
	}
	switch f.GetType() {
	case dto.MetricType_GAUGE:
		return mt.GetGauge().GetValue()
	case dto.MetricType_COUNTER:
		return mt.GetCounter().GetValue()
	case dto.MetricType_UNTYPED:
		return mt.GetUntyped().GetValue()
	}
	t.Fatalf("/metrics: %s is a %v, not a single value", name, f.GetType())
	return 0
}

// histCount is the sample count of a histogram.
func (m metricSet) histCount(t testing.TB, name string) uint64 {
	t.Helper()
	f, mt := m.find(name, nil)
	if mt == nil || f.GetType() != dto.MetricType_HISTOGRAM {
		t.Fatalf("/metrics: %s is missing or not a histogram", name)
	}
	return mt.GetHistogram().GetSampleCount()
}

// TestMetricsPrometheus parses /metrics with the Prometheus text parser,
// checks the SPEC's metric names and types, and that the counters move with
// traffic: N events to M members, an error, commands, a telemetry connection.
func TestMetricsPrometheus(t *testing.T) {
	s := startServer(t)
	waitReady(t, s)
	m0 := scrape(t, s)

	// SPEC "Operations" names and their types.
	want := map[string]dto.MetricType{
		"arqonbus_active_clients":          dto.MetricType_GAUGE,
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
		"arqonbus_persist_queue_depth":     dto.MetricType_GAUGE,
		// Go and process collectors.
		"go_goroutines":                 dto.MetricType_GAUGE,
		"process_resident_memory_bytes": dto.MetricType_GAUGE,
	}
	names := make([]string, 0, len(want))
	for n := range want {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		f := m0[n]
		if f == nil {
			t.Errorf("/metrics lacks %s", n)
			continue
		}
		if f.GetType() != want[n] {
			t.Errorf("%s is a %v, want %v", n, f.GetType(), want[n])
		}
		if f.GetHelp() == "" {
			t.Errorf("%s has no HELP", n)
		}
	}
	// errors_total is labelled by code, one child per SPEC code, no others.
	if f := m0["arqonbus_errors_total"]; f != nil {
		for _, mt := range f.Metric {
			if len(mt.Label) != 1 || mt.Label[0].GetName() != "code" {
				t.Errorf("arqonbus_errors_total sample with labels %v, want only code", mt.Label)
			}
		}
		if _, mt := m0.find("arqonbus_errors_total", map[string]string{"code": "VALIDATION_ERROR"}); mt == nil {
			t.Errorf("arqonbus_errors_total{code=\"VALIDATION_ERROR\"} is not exported before the first error")
		}
	}
	// No label per channel or client anywhere in arqonbus_*.
	for n, f := range m0 {
		if !strings.HasPrefix(n, "arqonbus_") {
			continue
		}
		for _, mt := range f.Metric {
			for _, lp := range mt.Label {
				switch lp.GetName() {
				case "room", "channel", "client", "client_id":
					t.Errorf("%s has a %s label: per-channel / per-client labels are not allowed", n, lp.GetName())
				}
			}
		}
	}
	if v := m0.value(t, "arqonbus_active_clients", nil); v != 0 {
		t.Errorf("arqonbus_active_clients %v before any client", v)
	}
	if v := m0.value(t, "arqonbus_memory_usage_bytes", nil); v < 1<<20 {
		t.Errorf("arqonbus_memory_usage_bytes %v, implausibly small", v)
	}

	// Traffic: M members and a sender on one channel, N events.
	const N, M = 40, 3
	room, channel := "metrics", uniqueName("fanout")
	ctx := testCtx(t, 20*time.Second)
	members := make([]*client.Conn, M)
	for i := range members {
		members[i] = dial(t, s, client.WithClientID(fmt.Sprintf("met_member_%d", i)))
		if err := members[i].Join(ctx, room, channel); err != nil {
			t.Fatalf("join: %v", err)
		}
	}
	sender := dial(t, s, client.WithClientID("met_sender"), client.WithParam("client_type", "service"))
	if err := sender.Join(ctx, room, channel); err != nil {
		t.Fatal(err)
	}
	m1 := scrape(t, s)
	ids := map[string]bool{}
	for i := 0; i < N; i++ {
		id, err := sender.Publish(room, channel, map[string]int{"n": i})
		if err != nil {
			t.Fatal(err)
		}
		ids[id] = true
	}
	for i, c := range members {
		for got := 0; got < N; {
			env, err := nextReal(ctx, c)
			if err != nil {
				t.Fatalf("member %d received %d of %d events: %v", i, got, N, err)
			}
			if ids[env.ID] {
				got++
			}
		}
	}
	// Deliveries are counted when written, the scrape may race the last
	// writes by a hair: poll briefly for the counters to reach the floor.
	var m2 metricSet
	deadline := time.Now().Add(2 * time.Second)
	for {
		m2 = scrape(t, s)
		if m2.value(t, "arqonbus_messages_sent_total", nil)-m1.value(t, "arqonbus_messages_sent_total", nil) >= N*M ||
			time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	dRecv := m2.value(t, "arqonbus_messages_received_total", nil) - m1.value(t, "arqonbus_messages_received_total", nil)
	dSent := m2.value(t, "arqonbus_messages_sent_total", nil) - m1.value(t, "arqonbus_messages_sent_total", nil)
	dHist := m2.histCount(t, "arqonbus_routing_latency_seconds") - m1.histCount(t, "arqonbus_routing_latency_seconds")
	t.Logf("after %d events to %d members: received +%v, sent +%v, routing latency count +%d", N, M, dRecv, dSent, dHist)
	if dRecv < N {
		t.Errorf("arqonbus_messages_received_total grew by %v, want >= %d", dRecv, N)
	}
	if dSent < N*M {
		t.Errorf("arqonbus_messages_sent_total grew by %v, want >= %d", dSent, N*M)
	}
	if dHist < N {
		t.Errorf("arqonbus_routing_latency_seconds count grew by %d, want >= %d (one per routed message)", dHist, N)
	}
	if _, mt := m2.find("arqonbus_routing_latency_seconds", nil); mt != nil {
		h := mt.GetHistogram()
		if h.GetSampleSum() <= 0 || len(h.Bucket) < 5 {
			t.Errorf("routing latency histogram: sum %v, %d buckets", h.GetSampleSum(), len(h.Bucket))
		}
		for i := 1; i < len(h.Bucket); i++ {
			if h.Bucket[i].GetCumulativeCount() < h.Bucket[i-1].GetCumulativeCount() {
				t.Errorf("routing latency buckets not cumulative at le=%v", h.Bucket[i].GetUpperBound())
			}
		}
	}
	if v := m2.value(t, "arqonbus_active_clients", nil); v != M+1 {
		t.Errorf("arqonbus_active_clients %v with %d clients", v, M+1)
	}
	if v := m2.value(t, "arqonbus_websocket_connections", nil); v != M+1 {
		t.Errorf("arqonbus_websocket_connections %v with %d clients", v, M+1)
	}
	if v := m2.value(t, "arqonbus_clients", map[string]string{"type": "human"}); v != M {
		t.Errorf("arqonbus_clients{type=human} %v, want %d", v, M)
	}
	if v := m2.value(t, "arqonbus_clients", map[string]string{"type": "service"}); v != 1 {
		t.Errorf("arqonbus_clients{type=service} %v, want 1", v)
	}
	if d := m2.value(t, "arqonbus_commands_total", nil) - m0.value(t, "arqonbus_commands_total", nil); d < M+1 {
		t.Errorf("arqonbus_commands_total grew by %v after %d joins", d, M+1)
	}
	if m2.value(t, "arqonbus_channels_total", nil) <= m0.value(t, "arqonbus_channels_total", nil) {
		t.Errorf("arqonbus_channels_total did not grow when %s:%s was created by a join", room, channel)
	}

	// An error envelope: VALIDATION_ERROR counted under its code.
	errKey := map[string]string{"code": "VALIDATION_ERROR"}
	e0 := m2.value(t, "arqonbus_errors_total", errKey)
	bad := client.NewID("bad")
	if err := sender.SendRaw(envJSON("met_sender", bad, map[string]any{"version": "9.9"})); err != nil {
		t.Fatal(err)
	}
	expectError(t, sender, bad, "VALIDATION_ERROR", "")
	deadline = time.Now().Add(2 * time.Second)
	for {
		m3 := scrape(t, s)
		d := m3.value(t, "arqonbus_errors_total", errKey) - e0
		if d == 1 {
			break
		}
		if d > 1 || time.Now().After(deadline) {
			t.Errorf("arqonbus_errors_total{code=VALIDATION_ERROR} grew by %v after one validation error, want 1", d)
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	// A failing command: command_errors_total.
	ce0 := scrape(t, s).value(t, "arqonbus_command_errors_total", nil)
	if _, err := sender.Command(ctx, room, channel, "no_such_command", nil); err == nil {
		t.Errorf("no_such_command succeeded")
	}
	if d := scrape(t, s).value(t, "arqonbus_command_errors_total", nil) - ce0; d < 1 {
		t.Errorf("arqonbus_command_errors_total grew by %v after a failing command", d)
	}

	// A telemetry connection shows in its gauge.
	tc := dialTelemetry(t, s)
	if v := scrape(t, s).value(t, "arqonbus_telemetry_connections", nil); v != 1 {
		t.Errorf("arqonbus_telemetry_connections %v with one telemetry client", v)
	}
	tc.Close()

	// Clients leaving: the gauges come back down.
	for _, c := range members {
		c.Close()
	}
	deadline = time.Now().Add(3 * time.Second)
	for {
		v := scrape(t, s).value(t, "arqonbus_active_clients", nil)
		if v == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("arqonbus_active_clients %v after %d of %d clients left, want 1", v, M, M+1)
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Counters never go down; uptime moves.
	m4 := scrape(t, s)
	for _, n := range []string{"arqonbus_messages_received_total", "arqonbus_messages_sent_total", "arqonbus_commands_total"} {
		if m4.value(t, n, nil) < m2.value(t, n, nil) {
			t.Errorf("%s went down: %v -> %v", n, m2.value(t, n, nil), m4.value(t, n, nil))
		}
	}
	if m4.value(t, "arqonbus_uptime_seconds", nil) <= m0.value(t, "arqonbus_uptime_seconds", nil) {
		t.Errorf("arqonbus_uptime_seconds does not move")
	}
}
