package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/arqonbus/arqonbus/client"
	"github.com/gobwas/ws"
)

// Tests for SPEC "Operations", telemetry: the server's telemetry envelopes on
// integriguard:telemetry-stream and on the telemetry WebSocket port, within
// 500 ms of the action; agent_activity on integriguard:dashboard-events for
// ai-agent clients only; the telemetry port's connection limit.

// telemetryDeadline is the SPEC's bound from an action to its telemetry event.
const telemetryDeadline = 500 * time.Millisecond

// telPayload decodes a telemetry envelope's payload.
func telPayload(e client.Envelope) result {
	var r result
	_ = json.Unmarshal(e.Payload, &r)
	return r
}

// checkTelemetryEnvelope checks the frame of a server telemetry envelope on
// room:channel.
func checkTelemetryEnvelope(t *testing.T, where string, e client.Envelope, channel, nodeID string) {
	t.Helper()
	p := telPayload(e)
	if e.Version != "1.0" || e.Type != "telemetry" || e.From != client.ServerFrom || e.Room != "integriguard" ||
		e.Channel != channel || !strings.HasPrefix(e.ID, "arq_") {
		t.Errorf("%s: malformed telemetry envelope (want type telemetry from arqonbus_server on integriguard:%s): %s", where, channel, e.Raw)
	}
	if _, err := time.Parse(time.RFC3339Nano, e.Timestamp); err != nil {
		t.Errorf("%s: timestamp %q is not RFC 3339", where, e.Timestamp)
	}
	if p.str("eventType") == "" {
		t.Errorf("%s: payload without eventType: %s", where, e.Raw)
	}
	if nodeID != "" && p.str("node_id") != nodeID {
		t.Errorf("%s: payload node_id %q, want %q", where, p.str("node_id"), nodeID)
	}
}

// watcher is one consumer of telemetry: a member of the stream channel on
// the client port, or a connection to the telemetry port.
type watcher struct {
	name string
	c    *client.Conn
}

// expectTelemetry waits until deadline for a telemetry envelope of eventType
// whose payload satisfies match, and returns it.
func expectTelemetry(ctx context.Context, w watcher, deadline time.Time, eventType string, match func(result) bool) (client.Envelope, time.Time, error) {
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	env, err := w.c.Expect(ctx, func(e client.Envelope) bool {
		if e.Type != "telemetry" {
			return false
		}
		p := telPayload(e)
		return p.str("eventType") == eventType && (match == nil || match(p))
	})
	return env, time.Now(), err
}

// TestTelemetryEvents: connect, join, command, leave, create and delete a
// channel, disconnect; each produces its telemetry event within 500 ms both
// for a member of integriguard:telemetry-stream and on the telemetry port.
// Plus the periodic metrics_snapshot, the telemetry port's welcome, and a
// client's own telemetry (validated, re-broadcast).
func TestTelemetryEvents(t *testing.T) {
	s := startServer(t, "ARQONBUS_ADMIN_TOKEN="+testAdminToken, "ARQONBUS_TELEMETRY_SNAPSHOT_INTERVAL=1s")
	waitReady(t, s)
	ctx := testCtx(t, 40*time.Second)

	mon := dial(t, s, client.WithClientID("tel_monitor"), client.WithParam("client_type", "dashboard"))
	if err := mon.Join(ctx, "integriguard", "telemetry-stream"); err != nil {
		t.Fatalf("join integriguard:telemetry-stream: %v", err)
	}
	nodeID := ""
	mon.Welcome().PayloadField("node_id", &nodeID)

	// The telemetry port: a system welcome on *:welcome naming both streams.
	tp := dialTelemetry(t, s)
	welcome := tp.Welcome()
	var wp struct {
		Event  string   `json:"event"`
		NodeID string   `json:"node_id"`
		Stream []string `json:"stream"`
	}
	_ = json.Unmarshal(welcome.Payload, &wp)
	if welcome.Type != "system" || welcome.Room != "*" || welcome.Channel != "welcome" || welcome.From != client.ServerFrom ||
		wp.Event != "welcome" || wp.NodeID != nodeID ||
		!slices.Contains(wp.Stream, "integriguard:telemetry-stream") || !slices.Contains(wp.Stream, "integriguard:dashboard-events") {
		t.Errorf("telemetry port welcome: %s", welcome.Raw)
	}
	watchers := []watcher{{"channel member", mon}, {"telemetry port", tp}}

	admin := dial(t, s, client.WithClientID("tel_admin"), client.WithParam("admin_token", testAdminToken))

	subjectID := uniqueName("tel_subject_")
	var subject *client.Conn
	room, channel := "science", "general"
	newRoom, newChannel := "tel", uniqueName("made")

	steps := []struct {
		name      string
		eventType string
		do        func()
		match     func(result) bool
	}{
		{"connect", "client_connected", func() {
			subject = dial(t, s, client.WithClientID(subjectID), client.WithParam("client_type", "human"),
				client.WithParam("screen_name", "Subject"))
		}, func(p result) bool {
			return p.str("client_id") == subjectID && p.str("client_type") == "human" && p.str("screen_name") == "Subject"
		}},
		{"join", "channel_joined", func() {
			if err := subject.Join(ctx, room, channel); err != nil {
				t.Fatalf("join: %v", err)
			}
		}, func(p result) bool {
			n, ok := p.num("members")
			return p.str("client_id") == subjectID && p.str("room") == room && p.str("channel") == channel && ok && n >= 1
		}},
		{"command", "command_executed", func() {
			cmdOK(t, subject, room, channel, "ping", nil)
		}, func(p result) bool {
			return p.str("client_id") == subjectID && p.str("command") == "ping" && p.str("status") == "success"
		}},
		{"failing command", "command_executed", func() {
			if _, err := subject.Command(ctx, room, channel, "no_such_command", nil); err == nil {
				t.Errorf("no_such_command succeeded")
			}
		}, func(p result) bool {
			return p.str("client_id") == subjectID && p.str("command") == "no_such_command" && p.str("status") == "error" &&
				p.str("code") == "COMMAND_NOT_FOUND"
		}},
		{"leave", "channel_left", func() {
			if err := subject.Leave(ctx, room, channel); err != nil {
				t.Fatalf("leave: %v", err)
			}
		}, func(p result) bool {
			return p.str("client_id") == subjectID && p.str("room") == room && p.str("channel") == channel
		}},
		{"create channel", "channel_created", func() {
			cmdOK(t, admin, newRoom, newChannel, "create_channel", nil)
		}, func(p result) bool { return p.str("room") == newRoom && p.str("channel") == newChannel }},
		{"delete channel", "channel_deleted", func() {
			cmdOK(t, admin, newRoom, newChannel, "delete_channel", nil)
		}, func(p result) bool { return p.str("room") == newRoom && p.str("channel") == newChannel }},
		{"disconnect", "client_disconnected", func() {
			subject.Close()
		}, func(p result) bool { return p.str("client_id") == subjectID && p.str("client_type") == "human" }},
	}
	for _, st := range steps {
		start := time.Now()
		st.do()
		acted := time.Since(start)
		for _, w := range watchers {
			env, at, err := expectTelemetry(ctx, w, start.Add(telemetryDeadline), st.eventType, st.match)
			if err != nil {
				t.Errorf("%s: no %s event for the %s within %v of the action: %v", st.name, st.eventType, w.name, telemetryDeadline, err)
				continue
			}
			checkTelemetryEnvelope(t, st.name+" ("+w.name+")", env, "telemetry-stream", nodeID)
			t.Logf("%-16s %-20s %-15s %6.1f ms after the action began (action itself %.1f ms)",
				st.name, st.eventType, w.name, float64(at.Sub(start).Microseconds())/1000, float64(acted.Microseconds())/1000)
		}
	}

	// metrics_snapshot every second (--telemetry-snapshot-interval 1s), with
	// rates, room/channel utilisation and storage.
	for _, w := range watchers {
		env, _, err := expectTelemetry(ctx, w, time.Now().Add(2500*time.Millisecond), "metrics_snapshot", nil)
		if err != nil {
			t.Errorf("no metrics_snapshot for the %s within 2.5 s at a 1 s interval: %v", w.name, err)
			continue
		}
		checkTelemetryEnvelope(t, "metrics_snapshot ("+w.name+")", env, "telemetry-stream", nodeID)
		p := telPayload(env)
		requireKeys(t, "metrics_snapshot", p, "active_clients", "clients", "messages_received_per_second",
			"messages_sent_per_second", "rooms", "channels", "storage")
		if n, _ := p.num("active_clients"); n != 2 {
			t.Errorf("metrics_snapshot active_clients %v, want 2 (monitor and admin): %s", p["active_clients"], env.Raw)
		}
		chans := p.list("channels")
		found := false
		for _, c := range chans {
			if c.str("room") == "integriguard" && c.str("channel") == "telemetry-stream" {
				found = true
				if n, _ := c.num("members"); n != 1 {
					t.Errorf("metrics_snapshot: integriguard:telemetry-stream members %v, want 1", c["members"])
				}
			}
		}
		if !found {
			t.Errorf("metrics_snapshot channels lack integriguard:telemetry-stream: %s", p["channels"])
		}
	}
	// A new telemetry-port connection gets the latest snapshot right after its welcome.
	tp2 := dialTelemetry(t, s)
	env, err := tp2.Next(testCtx(t, 300*time.Millisecond))
	if err != nil || env.Type != "telemetry" || eventType(env) != "metrics_snapshot" {
		t.Errorf("second telemetry-port connection: first envelope after the welcome is not the latest metrics_snapshot (%v): %s", err, env.Raw)
	}
	tp2.Close()

	// A client's own telemetry: validated, then re-broadcast to the stream's
	// members and to the telemetry port.
	probe := dial(t, s, client.WithClientID("tel_probe"), client.WithParam("client_type", "service"))
	id := client.NewID("tel")
	start := time.Now()
	if err := probe.Send(client.Envelope{ID: id, Type: "telemetry", Room: "integriguard", Channel: "telemetry-stream",
		Payload: json.RawMessage(`{"eventType":"probe_reading","payload":{"temperature":21.5}}`)}); err != nil {
		t.Fatal(err)
	}
	for _, w := range watchers {
		env, _, err := expectTelemetry(ctx, w, start.Add(telemetryDeadline), "probe_reading", nil)
		if err != nil {
			t.Errorf("client telemetry not re-broadcast to the %s within %v: %v", w.name, telemetryDeadline, err)
			continue
		}
		if env.ID != id || env.From != "tel_probe" || !strings.Contains(string(env.Payload), `"temperature":21.5`) {
			t.Errorf("client telemetry re-broadcast altered for the %s: %s", w.name, env.Raw)
		}
	}
	bad := client.NewID("tel")
	if err := probe.Send(client.Envelope{ID: bad, Type: "telemetry", Room: "integriguard", Channel: "telemetry-stream",
		Payload: json.RawMessage(`{"payload":{"x":1}}`)}); err != nil {
		t.Fatal(err)
	}
	expectError(t, probe, bad, "VALIDATION_ERROR", "payload.eventType")
}

// collectAll collects agent_activity events from every watcher at once (one
// goroutine each) until the deadline.
func collectAll(ctx context.Context, ws []watcher, until time.Time) [][]client.Envelope {
	out := make([][]client.Envelope, len(ws))
	var wg sync.WaitGroup
	for i, w := range ws {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i] = collectAgentActivity(ctx, w, until)
		}()
	}
	wg.Wait()
	return out
}

// collectAgentActivity collects agent_activity events from w until the deadline.
func collectAgentActivity(ctx context.Context, w watcher, until time.Time) []client.Envelope {
	var out []client.Envelope
	ctx, cancel := context.WithDeadline(ctx, until)
	defer cancel()
	for {
		env, err := w.c.Expect(ctx, func(e client.Envelope) bool {
			return e.Type == "telemetry" && eventType(e) == "agent_activity"
		})
		if err != nil {
			return out
		}
		out = append(out, env)
	}
}

// TestAgentActivity: an ai-agent (with a personality) publishing a burst
// yields coalesced agent_activity events on integriguard:dashboard-events and
// on the telemetry port, with the burst's count; a human doing the same
// yields none.
func TestAgentActivity(t *testing.T) {
	s := startServer(t)
	waitReady(t, s)
	ctx := testCtx(t, 30*time.Second)

	dash := dial(t, s, client.WithClientID("aa_dashboard"), client.WithParam("client_type", "dashboard"))
	if err := dash.Join(ctx, "integriguard", "dashboard-events"); err != nil {
		t.Fatalf("join integriguard:dashboard-events: %v", err)
	}
	tp := dialTelemetry(t, s)
	watchers := []watcher{{"dashboard-events member", dash}, {"telemetry port", tp}}
	room, channel := "science", "explore"
	sink := dial(t, s, client.WithClientID("aa_sink"))
	if err := sink.Join(ctx, room, channel); err != nil {
		t.Fatal(err)
	}

	const burst = 60
	run := func(id string, opts ...client.Option) {
		c := dial(t, s, append(opts, client.WithClientID(id))...)
		if err := c.Join(ctx, room, channel); err != nil {
			t.Fatalf("%s join: %v", id, err)
		}
		for i := 0; i < burst; i++ {
			if _, err := c.Publish(room, channel, map[string]any{"n": i, "thought": "burst"}); err != nil {
				t.Fatal(err)
			}
		}
		// All routed before we look at telemetry.
		for got := 0; got < burst; {
			env, err := nextReal(ctx, sink)
			if err != nil {
				t.Fatalf("sink got %d of %d events from %s: %v", got, burst, id, err)
			}
			if env.From == id && env.Type == "event" {
				got++
			}
		}
	}

	// The agent.
	agentID := uniqueName("aa_agent_")
	burstAt := time.Now()
	run(agentID, client.WithParam("client_type", "ai-agent"), client.WithParam("personality", "curious-explorer"))
	// Coalesced per second: everything arrives within about 2 flush periods.
	got := collectAll(ctx, watchers, time.Now().Add(2500*time.Millisecond))
	for i, w := range watchers {
		evs := got[i]
		published, pubEvents, joined := uint64(0), 0, false
		for _, e := range evs {
			checkTelemetryEnvelope(t, "agent_activity ("+w.name+")", e, "dashboard-events", "")
			p := telPayload(e)
			if p.str("agent_id") != agentID {
				t.Errorf("%s: agent_activity for %q, only %q is an agent: %s", w.name, p.str("agent_id"), agentID, e.Raw)
				continue
			}
			requireKeys(t, "agent_activity", p, "agent_id", "personality", "activity", "room", "channel", "count")
			if p.str("personality") != "curious-explorer" {
				t.Errorf("%s: agent_activity personality %q, want curious-explorer", w.name, p.str("personality"))
			}
			n, _ := p.num("count")
			switch p.str("activity") {
			case "published":
				pubEvents++
				published += uint64(n)
				if p.str("room") != room || p.str("channel") != channel {
					t.Errorf("%s: published activity at %s:%s, want %s:%s", w.name, p.str("room"), p.str("channel"), room, channel)
				}
			case "joined":
				joined = true
			}
		}
		t.Logf("%s: %d agent_activity events within %v of the burst; published count %d in %d events",
			w.name, len(evs), time.Since(burstAt).Round(time.Millisecond), published, pubEvents)
		if published != burst {
			t.Errorf("%s: agent_activity published counts sum to %d, want %d", w.name, published, burst)
		}
		if pubEvents == 0 || pubEvents > 3 {
			t.Errorf("%s: %d published agent_activity events for a %d-message burst: want coalesced (1 to 3)", w.name, pubEvents, burst)
		}
		if !joined {
			t.Errorf("%s: no joined agent_activity for the agent's join_channel", w.name)
		}
	}

	// The human: same burst, no agent_activity at all.
	humanID := uniqueName("aa_human_")
	run(humanID, client.WithParam("client_type", "human"), client.WithParam("personality", "curious-explorer"))
	got = collectAll(ctx, watchers, time.Now().Add(2200*time.Millisecond))
	for i, w := range watchers {
		for _, e := range got[i] {
			t.Errorf("%s: agent_activity after a human's burst: %s", w.name, e.Raw)
		}
	}
}

// TestTelemetryPortLimit: with --telemetry-max-connections 2 the third
// connection to the telemetry port is closed with 1013; once one leaves, a
// new one is served again.
func TestTelemetryPortLimit(t *testing.T) {
	s := startServerArgs(t, []string{"--telemetry-max-connections", "2"})
	waitReady(t, s)
	a := dialTelemetry(t, s)
	b := dialTelemetry(t, s)

	url := fmt.Sprintf("ws://127.0.0.1:%d/", s.TelemetryPort)
	third, err := client.Dial(testCtx(t, 5*time.Second), url, client.WithoutWelcome())
	if err != nil {
		t.Fatalf("third telemetry connection: upgrade failed (%v), want an upgrade then close 1013", err)
	}
	defer third.Close()
	select {
	case <-third.Done():
	case <-time.After(3 * time.Second):
		t.Fatal("third telemetry connection still open 3 s after connecting, want close 1013")
	}
	if code, reason := third.CloseCode(); code != ws.StatusCode(1013) {
		t.Errorf("third telemetry connection closed with %d %q, want 1013", code, reason)
	} else {
		t.Logf("third connection closed: %d %q", code, reason)
	}
	for {
		env, err := third.Next(testCtx(t, 200*time.Millisecond))
		if err != nil {
			break
		}
		t.Errorf("refused telemetry connection received %s", env.Raw)
	}
	if v := scrape(t, s).value(t, "arqonbus_telemetry_connections", nil); v != 2 {
		t.Errorf("arqonbus_telemetry_connections %v, want 2 (the refused one not counted)", v)
	}

	// The first two still get the stream.
	c := dial(t, s, client.WithClientID("limit_probe"))
	for _, w := range []*client.Conn{a, b} {
		if _, _, err := expectTelemetry(testCtx(t, 5*time.Second), watcher{"tp", w}, time.Now().Add(telemetryDeadline), "client_connected",
			func(p result) bool { return p.str("client_id") == "limit_probe" }); err != nil {
			t.Errorf("an admitted telemetry connection missed client_connected: %v", err)
		}
	}
	c.Close()

	// A freed slot is served again.
	a.Close()
	deadline := time.Now().Add(3 * time.Second)
	for {
		d, err := client.Dial(testCtx(t, 5*time.Second), url)
		if err == nil {
			d.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no telemetry connection admitted after one of two left: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
