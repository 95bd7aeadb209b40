package telemetry

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/arqonbus/arqonbus/client"
	"github.com/arqonbus/arqonbus/engine"
	"github.com/arqonbus/arqonbus/fanout"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// startServer runs an engine.Server with h on a free loopback port.
func startServer(t *testing.T, h engine.Handler) string {
	t.Helper()
	addr := freeAddr(t)
	s := engine.New(engine.Config{Addr: addr, Loops: 1, Logger: quiet}, h)
	done := make(chan error, 1)
	go func() { done <- s.Run() }()
	select {
	case <-s.Ready():
	case err := <-done:
		t.Fatalf("server did not start: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("server did not start in time")
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.Stop(ctx)
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-ctx.Done():
			t.Error("server did not stop")
		}
	})
	return "ws://" + addr
}

// busHandler stands in for the client bus: every connection joins the
// telemetry stream and dashboard channels of the hub.
type busHandler struct{ hub *fanout.Hub }

func (b *busHandler) Upgrade(*engine.Conn, *engine.Request) error { return nil }
func (b *busHandler) Open(c *engine.Conn) {
	for _, k := range []fanout.Key{DefaultStreamChannel, DefaultDashboardChannel} {
		if _, _, err := b.hub.Join(k, c, nil, nil); err != nil {
			panic(err)
		}
	}
}
func (b *busHandler) Message(*engine.Conn, []byte) {}
func (b *busHandler) Close(c *engine.Conn) {
	for _, k := range []fanout.Key{DefaultStreamChannel, DefaultDashboardChannel} {
		b.hub.Leave(b.hub.Channel(k), c)
	}
}

type fixture struct {
	e       *Emitter
	busURL  string
	telURL  string
	started bool
	t       *testing.T
}

// newFixture makes an emitter on a hub served by a bus stand-in, and a
// telemetry port; Run starts with start.
func newFixture(t *testing.T, o Options, maxTel int) *fixture {
	t.Helper()
	hub := fanout.NewHub(fanout.Options{Bootstrap: []fanout.Key{DefaultStreamChannel, DefaultDashboardChannel}})
	o.Hub = hub
	o.Logger = quiet
	if o.NodeID == "" {
		o.NodeID = "node-1"
	}
	f := &fixture{e: New(o), t: t}
	f.busURL = startServer(t, &busHandler{hub: hub})
	f.telURL = startServer(t, f.e.WSHandler(maxTel))
	return f
}

func (f *fixture) start() {
	f.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { f.e.Run(ctx); close(done) }()
	f.t.Cleanup(func() { cancel(); <-done })
}

func dial(t *testing.T, url string, opts ...client.Option) *client.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, url, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Abort() })
	return c
}

// telPayload is the payload of a telemetry envelope.
func telPayload(t *testing.T, env client.Envelope) map[string]any {
	t.Helper()
	var p map[string]any
	if err := json.Unmarshal(env.Payload, &p); err != nil {
		t.Fatalf("payload: %v: %s", err, env.Raw)
	}
	return p
}

func isEvent(eventType string) func(client.Envelope) bool {
	return func(env client.Envelope) bool {
		var s string
		return env.Type == "telemetry" && env.PayloadField("eventType", &s) && s == eventType
	}
}

func expect(t *testing.T, c *client.Conn, within time.Duration, match func(client.Envelope) bool) client.Envelope {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	env, err := c.Expect(ctx, match)
	if err != nil {
		t.Fatalf("no matching envelope within %v: %v", within, err)
	}
	return env
}

func checkEnvelope(t *testing.T, env client.Envelope, channel string) {
	t.Helper()
	if env.Version != "1.0" || env.Type != "telemetry" || env.Room != "integriguard" || env.Channel != channel ||
		env.From != "arqonbus_server" || !strings.HasPrefix(env.ID, "arq_tel_") {
		t.Fatalf("envelope header: %s", env.Raw)
	}
	ts, err := time.Parse(time.RFC3339Nano, env.Timestamp)
	if err != nil || time.Since(ts) > 5*time.Second {
		t.Fatalf("timestamp %q: %v", env.Timestamp, err)
	}
}

func TestEmitReachesChannelAndWebSocket(t *testing.T) {
	f := newFixture(t, Options{}, 10)
	f.start()
	member := dial(t, f.busURL, client.WithoutWelcome())
	tel := dial(t, f.telURL)

	w := tel.Welcome()
	var wp struct {
		Event  string   `json:"event"`
		NodeID string   `json:"node_id"`
		Stream []string `json:"stream"`
	}
	if err := json.Unmarshal(w.Payload, &wp); err != nil || w.Type != "system" || w.Room != "*" || w.Channel != "welcome" ||
		wp.Event != "welcome" || wp.NodeID != "node-1" ||
		strings.Join(wp.Stream, ",") != "integriguard:telemetry-stream,integriguard:dashboard-events" {
		t.Fatalf("welcome: %s", w.Raw)
	}
	if f.e.WSConnections() != 1 {
		t.Fatalf("ws connections %d", f.e.WSConnections())
	}

	start := time.Now()
	if !f.e.Emit("client_connected", map[string]any{
		"client_id": "alice", "client_type": "human", "n": 3, "node_id": "spoofed", "eventType": "spoofed",
	}) {
		t.Fatal("emit dropped")
	}
	for _, c := range []*client.Conn{member, tel} {
		env := expect(t, c, 500*time.Millisecond-time.Since(start), isEvent("client_connected"))
		checkEnvelope(t, env, "telemetry-stream")
		p := telPayload(t, env)
		if p["client_id"] != "alice" || p["client_type"] != "human" || p["n"] != 3.0 || p["node_id"] != "node-1" {
			t.Fatalf("payload: %s", env.Payload)
		}
		if !strings.HasPrefix(string(env.Payload), `{"eventType":"client_connected",`) {
			t.Fatalf("eventType not first: %s", env.Payload)
		}
	}
	t.Logf("emit to delivery on both: %v", time.Since(start))

	// Client telemetry forwarded to the telemetry WebSocket.
	fwd := `{"version":"1.0","id":"m1","type":"telemetry","room":"integriguard","channel":"telemetry-stream","from":"bob","timestamp":"2025-01-01T00:00:00.000Z","payload":{"eventType":"custom","payload":{"x":1}}}`
	f.e.Forward(engine.TextFrame([]byte(fwd)))
	env := expect(t, tel, 500*time.Millisecond, isEvent("custom"))
	if string(env.Raw) != fwd {
		t.Fatalf("forwarded %s", env.Raw)
	}
	if f.e.Published() != 1 || f.e.Dropped() != 0 {
		t.Fatalf("published %d dropped %d", f.e.Published(), f.e.Dropped())
	}
}

// collect gathers the envelopes matching match until quiet passes with none.
func collect(c *client.Conn, first, quietFor time.Duration, match func(client.Envelope) bool) []client.Envelope {
	var out []client.Envelope
	wait := first
	for {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		env, err := c.Expect(ctx, match)
		cancel()
		if err != nil {
			return out
		}
		out = append(out, env)
		wait = quietFor
	}
}

func TestAgentActivityCoalesced(t *testing.T) {
	f := newFixture(t, Options{AgentFlushEvery: 200 * time.Millisecond}, 10)
	member := dial(t, f.busURL, client.WithoutWelcome())
	tel := dial(t, f.telURL)
	h := f.e.Agent("agent-7", "analyst")
	// Before Run: every call lands in the first window.
	for range 1000 {
		h.Activity(ActivityPublished, "science", "general")
	}
	for range 5 {
		h.Activity(ActivityJoined, "science", "lab")
	}
	var nilHandle *AgentHandle
	nilHandle.Activity(ActivityPublished, "x", "y") // humans: a nil handle does nothing
	nilHandle.Release()
	f.start()
	for _, c := range []*client.Conn{member, tel} {
		evs := collect(c, time.Second, 500*time.Millisecond, isEvent(EventAgentActivity))
		if len(evs) != 2 {
			t.Fatalf("%d agent_activity events, want 2", len(evs))
		}
		got := map[string]map[string]any{}
		for _, env := range evs {
			checkEnvelope(t, env, "dashboard-events")
			p := telPayload(t, env)
			got[p["activity"].(string)] = p
		}
		pub, join := got["published"], got["joined"]
		if pub == nil || pub["count"] != 1000.0 || pub["agent_id"] != "agent-7" || pub["personality"] != "analyst" ||
			pub["room"] != "science" || pub["channel"] != "general" || pub["node_id"] != "node-1" {
			t.Fatalf("published event: %v", pub)
		}
		if join == nil || join["count"] != 5.0 || join["channel"] != "lab" {
			t.Fatalf("joined event: %v", join)
		}
	}
	if f.e.AgentCount() != 1 {
		t.Fatalf("agents %d", f.e.AgentCount())
	}
}

func TestReleaseFlushes(t *testing.T) {
	f := newFixture(t, Options{AgentFlushEvery: time.Hour}, 10)
	f.start()
	tel := dial(t, f.telURL)
	h := f.e.Agent("agent-9", "")
	for range 42 {
		h.Activity(ActivityCommand, "science", "execute")
	}
	h.Activity("dance", "science", "floor")
	start := time.Now()
	h.Release()
	h.Release()
	first := expect(t, tel, 500*time.Millisecond, isEvent(EventAgentActivity))
	t.Logf("release to delivery: %v", time.Since(start))
	evs := append([]client.Envelope{first}, collect(tel, 200*time.Millisecond, 200*time.Millisecond, isEvent(EventAgentActivity))...)
	if len(evs) != 2 {
		t.Fatalf("%d events after release, want 2", len(evs))
	}
	for _, env := range evs {
		p := telPayload(t, env)
		if p["final"] != true {
			t.Fatalf("not final: %s", env.Payload)
		}
		switch p["activity"] {
		case "command":
			if p["count"] != 42.0 || p["channel"] != "execute" {
				t.Fatalf("command: %s", env.Payload)
			}
		case "dance":
			if p["count"] != 1.0 {
				t.Fatalf("other: %s", env.Payload)
			}
		default:
			t.Fatalf("unexpected %s", env.Payload)
		}
	}
	if f.e.AgentCount() != 0 {
		t.Fatalf("released agent kept: %d", f.e.AgentCount())
	}
	h.Activity(ActivityCommand, "a", "b") // after release: harmless
}

// Many goroutines on one handle while Run flushes: every call is counted once.
func TestAgentActivityConcurrent(t *testing.T) {
	f := newFixture(t, Options{AgentFlushEvery: 20 * time.Millisecond}, 10)
	tel := dial(t, f.telURL)
	f.start()
	h := f.e.Agent("busy", "p")
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rooms := []string{"a", "b"}
			for i := range 5000 {
				h.Activity(ActivityPublished, rooms[(g+i)%2], "c")
			}
		}()
	}
	wg.Wait()
	h.Release()
	total := 0.0
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// The release's final flush carries what the periodic flushes left: when
	// they took everything it has nothing to say, so the count, not a final
	// event, ends the wait; anything more within a few flushes is a double count.
	for total < 20000 {
		env, err := tel.Expect(ctx, isEvent(EventAgentActivity))
		if err != nil {
			t.Fatalf("waiting for the counts: %v (total %v)", err, total)
		}
		total += telPayload(t, env)["count"].(float64)
	}
	for _, env := range collect(tel, 200*time.Millisecond, 200*time.Millisecond, isEvent(EventAgentActivity)) {
		total += telPayload(t, env)["count"].(float64)
	}
	if total != 20000 {
		t.Fatalf("counted %v, want 20000", total)
	}
}

func TestConnectionLimit(t *testing.T) {
	f := newFixture(t, Options{}, 2)
	f.start()
	a := dial(t, f.telURL)
	dial(t, f.telURL)
	over := dial(t, f.telURL, client.WithoutWelcome())
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if env, err := over.Next(ctx); !errors.Is(err, client.ErrClosed) {
		t.Fatalf("over the limit: got %s %v", env.Raw, err)
	}
	if code, _ := over.CloseCode(); code != 1013 {
		t.Fatalf("close code %d, want 1013", code)
	}
	if n := f.e.WSConnections(); n != 2 {
		t.Fatalf("ws connections %d", n)
	}
	a.Close()
	deadline := time.Now().Add(2 * time.Second)
	for f.e.WSConnections() != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("ws connections %d after a close", f.e.WSConnections())
		}
		time.Sleep(10 * time.Millisecond)
	}
	dial(t, f.telURL) // room again
}

// watchedEmitter is an emitter whose stream channel has a member (on a
// detached loop), so that its events are queued.
func watchedEmitter(t *testing.T, o Options) *Emitter {
	t.Helper()
	o.Hub = fanout.NewHub(fanout.Options{Bootstrap: []fanout.Key{DefaultStreamChannel}})
	o.Logger = quiet
	if _, _, err := o.Hub.Join(DefaultStreamChannel, engine.NewDetachedLoop().NewConn("watcher"), nil, nil); err != nil {
		t.Fatal(err)
	}
	return New(o)
}

func TestFullQueueDrops(t *testing.T) {
	e := watchedEmitter(t, Options{QueueSize: 4})
	for i := range 4 {
		if !e.Emit("x", map[string]any{"i": i}) {
			t.Fatalf("emit %d dropped", i)
		}
	}
	start := time.Now()
	for range 10000 {
		if e.Emit("x", nil) {
			t.Fatal("emit on a full queue succeeded")
		}
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("10000 dropped emits took %v", d)
	}
	h := e.Agent("a", "p")
	h.Release() // queue full: left to the periodic flush
	if e.Dropped() != 10000 {
		t.Fatalf("dropped %d", e.Dropped())
	}
	// Run drains what was queued and, on exit, flushes the released agent.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	e.Run(ctx)
	if e.Published() != 4 || e.QueueLen() != 0 || e.AgentCount() != 0 {
		t.Fatalf("published %d queue %d agents %d", e.Published(), e.QueueLen(), e.AgentCount())
	}
}

func TestMetricsSnapshot(t *testing.T) {
	var calls sync.Map
	f := newFixture(t, Options{SnapshotEvery: 150 * time.Millisecond, Snapshot: func() map[string]any {
		calls.Store("n", true)
		return map[string]any{
			"clients":                      map[string]int{"human": 2, "ai-agent": 1},
			"active_clients":               3,
			"messages_received_per_second": 12.5,
			"messages_sent_per_second":     40.0,
			"rooms":                        2,
			"channels": []map[string]any{
				{"room": "science", "channel": "general", "members": 3, "published": uint64(17)},
			},
			"storage": map[string]any{"mode": "memory", "status": "ok", "backlog": 0},
		}
	}}, 10)
	f.start()
	member := dial(t, f.busURL, client.WithoutWelcome())
	tel := dial(t, f.telURL)
	var last time.Time
	for i := range 2 {
		for _, c := range []*client.Conn{member, tel} {
			env := expect(t, c, time.Second, isEvent(EventMetricsSnapshot))
			checkEnvelope(t, env, "telemetry-stream")
			var p struct {
				Clients  map[string]int `json:"clients"`
				Active   int            `json:"active_clients"`
				In       float64        `json:"messages_received_per_second"`
				Channels []struct {
					Room, Channel      string
					Members, Published int
				} `json:"channels"`
				Storage   struct{ Mode, Status string }
				Telemetry struct {
					Dropped, Published, Connections int
				} `json:"telemetry"`
				NodeID string `json:"node_id"`
			}
			if err := json.Unmarshal(env.Payload, &p); err != nil {
				t.Fatal(err)
			}
			if p.Clients["ai-agent"] != 1 || p.Active != 3 || p.In != 12.5 || len(p.Channels) != 1 ||
				p.Channels[0].Published != 17 || p.Storage.Mode != "memory" || p.Telemetry.Connections < 1 || p.NodeID != "node-1" {
				t.Fatalf("snapshot %d: %s", i, env.Payload)
			}
			if c == member {
				ts, _ := time.Parse(time.RFC3339Nano, env.Timestamp)
				if i == 1 && ts.Sub(last) < 100*time.Millisecond {
					t.Fatalf("snapshots %v apart", ts.Sub(last))
				}
				last = ts
			}
		}
	}
	// A telemetry client that connects later gets the latest snapshot right
	// after its welcome.
	late := dial(t, f.telURL)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if env, err := late.Next(ctx); err != nil || !isEvent(EventMetricsSnapshot)(env) {
		t.Fatalf("late client: %s %v", env.Raw, err)
	}
}

// An event nobody watches is not queued: the emitter goroutine is not woken
// for it. It counts as published, as before.
func TestUnwatchedEventsAreNotQueued(t *testing.T) {
	hub := fanout.NewHub(fanout.Options{Bootstrap: []fanout.Key{DefaultStreamChannel}})
	e := New(Options{Hub: hub, Logger: quiet})
	for range 100 {
		if !e.Emit("command_executed", map[string]any{"command": "status"}) {
			t.Fatal("an unwatched emit was refused")
		}
	}
	if e.QueueLen() != 0 || e.Published() != 100 || e.Dropped() != 0 {
		t.Fatalf("queue %d published %d dropped %d, want 0, 100, 0", e.QueueLen(), e.Published(), e.Dropped())
	}
	// A member of the stream channel watches: the next event is queued.
	if _, _, err := hub.Join(DefaultStreamChannel, engine.NewDetachedLoop().NewConn("watcher"), nil, nil); err != nil {
		t.Fatal(err)
	}
	e.Emit("command_executed", map[string]any{"command": "status"})
	if e.QueueLen() != 1 {
		t.Fatalf("queue %d after an emit with a watcher, want 1", e.QueueLen())
	}
}
