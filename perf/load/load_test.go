package load

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
)

// fakeBus is a throwaway stand-in for the ArqonBus server, just enough to exercise the generator
// before (and independently of) the real one: a welcome on connect, join_channel replies, and
// events fanned out to the other members in order. It can misbehave on purpose so that the
// generator's loss and duplicate accounting can be checked.
type fakeBus struct {
	dropEvery    int // drop every n-th delivery (0: never)
	dupEvery     int // deliver every n-th delivery twice (0: never)
	timeoutEvery int // answer every n-th service command TIMEOUT instead of forwarding it (0: never)
	loseEvery    int // forward every n-th service command nowhere, and never answer it (0: never)

	mu         sync.Mutex
	arrivals   map[string]string             // client id -> the address it connected to
	members    map[string]map[*fakeConn]bool // room:channel -> members
	handlers   map[string][]*fakeConn        // room:channel -> members serving bench_echo
	pending    map[string]*fakeConn          // command id -> requester
	deliveries int
	commands   int
	rr         int
}

type fakeConn struct {
	wmu sync.Mutex
	nc  net.Conn
}

func (fc *fakeConn) send(msg []byte) {
	fc.wmu.Lock()
	defer fc.wmu.Unlock()
	_ = wsutil.WriteServerText(fc.nc, msg)
}

func startFakeBus(t *testing.T, fb *fakeBus) string {
	t.Helper()
	fb.arrivals = map[string]string{}
	fb.members = map[string]map[*fakeConn]bool{}
	fb.handlers = map[string][]*fakeConn{}
	fb.pending = map[string]*fakeConn{}
	return fb.listen(t)
}

// listen gives the fake bus one more address, like another node of the same bus: members joined
// through any address hear events published through any other.
func (fb *fakeBus) listen(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(fb.serve), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

func (fb *fakeBus) serve(w http.ResponseWriter, r *http.Request) {
	nc, rw, _, err := ws.UpgradeHTTP(r, w)
	if err != nil {
		return
	}
	defer nc.Close()
	fc := &fakeConn{nc: nc}
	id := r.URL.Query().Get("client_id")
	if la, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
		fb.mu.Lock()
		fb.arrivals[id] = la.String()
		fb.mu.Unlock()
	}
	fc.send([]byte(`{"version":"1.0","id":"arq_welcome","type":"system","room":"*","channel":"welcome","from":"arqonbus_server","timestamp":"2025-01-01T00:00:00.000Z","payload":{"client_id":"` + id + `"}}`))
	var joined []string
	defer func() {
		fb.mu.Lock()
		for _, k := range joined {
			delete(fb.members[k], fc)
		}
		fb.mu.Unlock()
	}()
	// Read through rw.Reader: it may already hold bytes sent right behind the upgrade request.
	rd := struct {
		io.Reader
		io.Writer
	}{rw.Reader, nc}
	for {
		msg, op, err := wsutil.ReadClientData(rd)
		if err != nil {
			return
		}
		if op != ws.OpText {
			continue
		}
		var env struct {
			ID      string `json:"id"`
			Type    string `json:"type"`
			Room    string `json:"room"`
			Channel string `json:"channel"`
			Payload struct {
				Command    string `json:"command"`
				RequestID  string `json:"request_id"`
				Parameters struct {
					Handles []string `json:"handles"`
				} `json:"parameters"`
			} `json:"payload"`
		}
		if err := json.Unmarshal(msg, &env); err != nil {
			fc.send([]byte(`{"type":"error","payload":{"code":"VALIDATION_ERROR","status":400,"message":"bad json"}}`))
			continue
		}
		key := env.Room + ":" + env.Channel
		switch {
		case env.Type == "command" && env.Payload.Command == "join_channel":
			fb.mu.Lock()
			if fb.members[key] == nil {
				fb.members[key] = map[*fakeConn]bool{}
			}
			fb.members[key][fc] = true
			if len(env.Payload.Parameters.Handles) == 1 && env.Payload.Parameters.Handles[0] == EchoCommand {
				fb.handlers[key] = append(fb.handlers[key], fc)
			}
			fb.mu.Unlock()
			joined = append(joined, key)
			fc.send(fmt.Appendf(nil, `{"version":"1.0","id":"arq_r_%s","type":"command_response","room":%q,"channel":%q,"from":"arqonbus_server","timestamp":"2025-01-01T00:00:00.000Z","payload":{"request_id":%q,"status":"success","result":{"joined":true}}}`,
				env.ID, env.Room, env.Channel, env.ID))
		case env.Type == "command":
			// A service command: forwarded as sent to the channel's handlers, round robin.
			fb.mu.Lock()
			fb.commands++
			n := fb.commands
			hs := fb.handlers[key]
			var h *fakeConn
			if len(hs) > 0 {
				h = hs[fb.rr%len(hs)]
				fb.rr++
			}
			timeout := fb.timeoutEvery > 0 && n%fb.timeoutEvery == 0
			lose := fb.loseEvery > 0 && n%fb.loseEvery == 0
			if h != nil && !timeout && !lose {
				fb.pending[env.ID] = fc
			}
			fb.mu.Unlock()
			switch {
			case lose:
			case h == nil || timeout:
				fc.send(fmt.Appendf(nil, `{"version":"1.0","id":"arq_e","type":"error","room":%q,"channel":%q,"from":"arqonbus_server","timestamp":"2025-01-01T00:00:00.000Z","payload":{"request_id":%q,"code":"TIMEOUT","status":504,"message":"no answer"}}`,
					env.Room, env.Channel, env.ID))
			default:
				h.send(msg)
			}
		case env.Type == "command_response":
			fb.mu.Lock()
			to := fb.pending[env.Payload.RequestID]
			delete(fb.pending, env.Payload.RequestID)
			fb.mu.Unlock()
			if to != nil {
				to.send(msg)
			}
		case env.Type == "event":
			fb.mu.Lock()
			var to []*fakeConn
			if !fb.members[key][fc] {
				fb.mu.Unlock()
				fc.send(fmt.Appendf(nil, `{"version":"1.0","id":"arq_e","type":"error","room":%q,"channel":%q,"from":"arqonbus_server","timestamp":"2025-01-01T00:00:00.000Z","payload":{"request_id":%q,"code":"FORBIDDEN","status":403,"message":"not a member","field":"channel"}}`,
					env.Room, env.Channel, env.ID))
				continue
			}
			for m := range fb.members[key] {
				if m != fc {
					to = append(to, m)
				}
			}
			fb.mu.Unlock()
			for _, m := range to {
				fb.mu.Lock()
				fb.deliveries++
				n := fb.deliveries
				fb.mu.Unlock()
				if fb.dropEvery > 0 && n%fb.dropEvery == 0 {
					continue
				}
				m.send(msg)
				if fb.dupEvery > 0 && n%fb.dupEvery == 0 {
					m.send(msg)
				}
			}
		}
	}
}

// shortRun keeps every test run to about a second and a half under the race detector. The drain
// ends as soon as everything expected has arrived, so its length only costs time where messages
// are lost on purpose; it is long so that a busy machine cannot turn slowness into "loss".
func shortRun(addr, scenario string) Config {
	return Config{
		Addr: addr, Scenario: scenario,
		Warmup: 200 * time.Millisecond, Duration: 800 * time.Millisecond, Drain: 3 * time.Second,
		ConnectTimeout: 5 * time.Second,
	}
}

func TestFanoutNoLoss(t *testing.T) {
	addr := startFakeBus(t, &fakeBus{})
	cfg := shortRun(addr, ScenarioFanout)
	cfg.Subs, cfg.Pubs, cfg.Rate = 5, 2, 400
	cfg.Logf = t.Logf
	res, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", res)
	// About 400 msg/s over 0.8 s; the scheduler under -race may run a little short.
	if res.Sent < 200 || res.Sent > 400 { // 320 in the window; see TestCommandRoundTrips
		t.Errorf("sent %d in the window, want about 320", res.Sent)
	}
	if res.Expected != res.Sent*5 {
		t.Errorf("expected %d deliveries, want sent*subs = %d", res.Expected, res.Sent*5)
	}
	if res.Lost != 0 || res.Dup != 0 || res.OutOfOrder != 0 || res.Unplanned != 0 {
		t.Errorf("lost %d dup %d ooo %d unplanned %d, want all 0", res.Lost, res.Dup, res.OutOfOrder, res.Unplanned)
	}
	if res.Delivered != res.Expected {
		t.Errorf("delivered %d, want %d", res.Delivered, res.Expected)
	}
	if res.Errors != 0 || res.Disconnects != 0 || res.PublishErrors != 0 {
		t.Errorf("errors %d disconnects %d publish errors %d (%s)", res.Errors, res.Disconnects, res.PublishErrors, res.FirstError)
	}
	if res.P50Ms <= 0 || res.MaxMs < res.P99Ms || res.P99Ms < res.P50Ms {
		t.Errorf("implausible latencies p50 %v p99 %v max %v", res.P50Ms, res.P99Ms, res.MaxMs)
	}
	// A routed event carries the envelope, the generator's body and the server's metadata: a few
	// hundred bytes.
	if res.BytesPerDelivery < 100 || res.BytesPerDelivery > 2000 {
		t.Errorf("%.0f bytes per delivery, want a few hundred", res.BytesPerDelivery)
	}
}

func TestFanoutCountsLossAndDuplicates(t *testing.T) {
	addr := startFakeBus(t, &fakeBus{dropEvery: 10, dupEvery: 7})
	cfg := shortRun(addr, ScenarioFanout)
	cfg.Subs, cfg.Pubs, cfg.Rate = 4, 1, 300
	cfg.Drain = 500 * time.Millisecond // what was dropped never comes: do not wait long for it
	res, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", res)
	// One delivery in ten is dropped, whether sent in the window or not.
	want := float64(res.Expected) / 10
	if float64(res.Lost) < 0.7*want || float64(res.Lost) > 1.3*want {
		t.Errorf("lost %d of %d expected, want about %.0f", res.Lost, res.Expected, want)
	}
	if res.Dup == 0 {
		t.Error("dup 0, want the duplicated deliveries counted")
	}
	if res.Delivered+res.Lost != res.Expected {
		t.Errorf("delivered %d + lost %d != expected %d", res.Delivered, res.Lost, res.Expected)
	}
}

func TestChannels(t *testing.T) {
	addr := startFakeBus(t, &fakeBus{})
	cfg := shortRun(addr, ScenarioChannels)
	cfg.Channels, cfg.Subs, cfg.Rate = 20, 2, 400
	res, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", res)
	if res.Conns != 60 {
		t.Errorf("conns %d, want 20*(2+1)", res.Conns)
	}
	// Subscribers only hear their own channel's publisher: anything else would be unplanned.
	if res.Expected != 2*res.Sent || res.Lost != 0 || res.Dup != 0 || res.Unplanned != 0 || res.Errors != 0 {
		t.Errorf("sent %d expected %d lost %d dup %d unplanned %d errors %d",
			res.Sent, res.Expected, res.Lost, res.Dup, res.Unplanned, res.Errors)
	}
}

func TestIdleReportsRSSAndConnectRate(t *testing.T) {
	addr := startFakeBus(t, &fakeBus{})
	cfg := shortRun(addr, ScenarioIdle)
	cfg.Conns, cfg.Hold = 50, 200*time.Millisecond
	// The fake bus runs in this process, so our own pid stands in for the server's.
	cfg.ServerPID = os.Getpid()
	res, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", res)
	if res.Conns != 50 || res.Channels != 1 || res.ConnectPerSec <= 0 {
		t.Errorf("conns %d channels %d connect/s %v", res.Conns, res.Channels, res.ConnectPerSec)
	}
	if res.RSSBeforeBytes <= 0 || res.RSSAfterBytes <= 0 {
		t.Errorf("RSS before %d after %d, want both read", res.RSSBeforeBytes, res.RSSAfterBytes)
	}
	if res.Errors != 0 || res.Disconnects != 0 {
		t.Errorf("errors %d disconnects %d: %s", res.Errors, res.Disconnects, res.FirstError)
	}
}

func TestSetupFailsClearly(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	cfg := shortRun(addr, ScenarioFanout)
	cfg.Subs, cfg.Pubs = 3, 1
	_, err = Run(context.Background(), cfg)
	if err == nil || !strings.Contains(err.Error(), "setting up subscribers") {
		t.Fatalf("err = %v, want a set-up failure", err)
	}
}

func TestNormalize(t *testing.T) {
	c, err := Config{Scenario: ScenarioChannels}.Normalize()
	if err != nil {
		t.Fatal(err)
	}
	if c.Channels != 1000 || c.Subs != 1 || c.Pubs != 1 || c.Rate != 10000 || c.TotalConns() != 2000 {
		t.Errorf("channels defaults: %+v", c)
	}
	if _, err := (Config{Scenario: ScenarioIdle, Conns: 19501}).Normalize(); err == nil ||
		!strings.Contains(err.Error(), "several") {
		t.Errorf("19501 connections: err = %v, want a clear refusal", err)
	}
	if _, err := (Config{Scenario: "nope"}).Normalize(); err == nil {
		t.Error("unknown scenario accepted")
	}
	if ips, err := ParseSrcIPs("127.0.0.2, 127.0.0.3"); err != nil || len(ips) != 2 || !ips[1].Equal(net.IPv4(127, 0, 0, 3)) {
		t.Errorf("ParseSrcIPs = %v, %v", ips, err)
	}
	if _, err := ParseSrcIPs("10.0.0.1"); err == nil {
		t.Error("non-loopback source address accepted")
	}
	if ips := AutoSrcIPs(45000); len(ips) != 3 || !ips[2].Equal(net.IPv4(127, 0, 0, 3)) {
		t.Errorf("AutoSrcIPs(45000) = %v", ips)
	}
}

func TestSourceAddressSpread(t *testing.T) {
	// Connections bound to 127.0.0.2 and 127.0.0.3 (IP_BIND_ADDRESS_NO_PORT on) still work.
	addr := startFakeBus(t, &fakeBus{})
	cfg := shortRun(addr, ScenarioIdle)
	cfg.Conns, cfg.Hold = 6, 10*time.Millisecond
	cfg.SrcIPs = []net.IP{net.IPv4(127, 0, 0, 2), net.IPv4(127, 0, 0, 3)}
	res, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if res.Disconnects != 0 || res.Errors != 0 {
		t.Errorf("%+v", res)
	}
}

func TestParseEvent(t *testing.T) {
	msg := []byte(`{"version":"1.0","id":"arq_m_3_17","type":"event","room":"perf","channel":"fan","from":"x",` +
		`"timestamp":"2025-01-01T00:00:00.000Z","payload":{"t":1700000000123456789,"p":3,"s":17},"metadata":{"t":1,"p":2,"s":3}}`)
	tm, p, s, ok := parseEvent(msg)
	if !ok || tm != 1700000000123456789 || p != 3 || s != 17 {
		t.Errorf("parseEvent = %d %d %d %v", tm, p, s, ok)
	}
	if string(envType(msg)) != "event" {
		t.Errorf("envType = %q", envType(msg))
	}
	// Spaces after colons, as a re-encoding server might write.
	if tm, p, s, ok := parseEvent([]byte(`{"type": "event", "payload": {"t": 5, "p": 0, "s": 9}}`)); !ok || tm != 5 || p != 0 || s != 9 {
		t.Errorf("spaced: %d %d %d %v", tm, p, s, ok)
	}
	// Out of int64 range or too long: not ours.
	if _, _, _, ok := parseEvent([]byte(`{"payload":{"t":9223372036854775808,"p":0,"s":9}}`)); ok {
		t.Error("t past int64 accepted")
	}
	if _, _, _, ok := parseEvent([]byte(`{"payload":{"t":1,"p":00000000000000000001,"s":9}}`)); ok {
		t.Error("20-digit number accepted")
	}
	if tm, _, _, ok := parseEvent([]byte(`{"payload":{"t":9223372036854775807,"p":0,"s":9}}`)); !ok || tm != math.MaxInt64 {
		t.Error("max int64 rejected")
	}
	// Not one of ours: no t/p/s in the payload, even if metadata has them.
	if _, _, _, ok := parseEvent([]byte(`{"type":"event","payload":{"message":"hi"},"metadata":{"t":1,"p":2,"s":3}}`)); ok {
		t.Error("foreign event parsed as ours")
	}
	errMsg := []byte(`{"type":"error","payload":{"request_id":"arq_1","code":"FORBIDDEN","status":403,"message":"not a \"member\""}}`)
	if got := errorText(errMsg); got != `FORBIDDEN: not a \"member\"` {
		t.Errorf("errorText = %q", got)
	}
	if st := stringField(errMsg, keyStatus); st != nil {
		t.Errorf("numeric status read as string %q", st)
	}
}

func TestCommandRoundTrips(t *testing.T) {
	addr := startFakeBus(t, &fakeBus{})
	cfg := shortRun(addr, ScenarioCommand)
	cfg.Handlers, cfg.Requesters, cfg.Rate = 2, 4, 400
	cfg.Logf = t.Logf
	res, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", res)
	if res.Conns != 6 || res.Params != "handlers=2 requesters=4 rate=400" {
		t.Errorf("conns %d params %q", res.Conns, res.Params)
	}
	// 400/s for an 800 ms window is 320; a loaded machine delays sends out of the warm-up into the
	// window (send lag), so only the whole run's 400 bounds it from above.
	if res.Sent < 200 || res.Sent > 400 {
		t.Errorf("sent %d requests in the window, want about 320", res.Sent)
	}
	if res.Expected != res.Sent || res.Delivered != res.Sent {
		t.Errorf("expected %d answered %d, want both %d", res.Expected, res.Delivered, res.Sent)
	}
	if res.Lost != 0 || res.Dup != 0 || res.Unplanned != 0 || res.Timeouts != 0 || res.Errors != 0 || res.Disconnects != 0 {
		t.Errorf("lost %d dup %d unplanned %d timeouts %d errors %d disc %d (%s)",
			res.Lost, res.Dup, res.Unplanned, res.Timeouts, res.Errors, res.Disconnects, res.FirstError)
	}
	if res.P50Ms <= 0 || res.MaxMs < res.P99Ms || res.P99Ms < res.P50Ms {
		t.Errorf("implausible latencies p50 %v p99 %v max %v", res.P50Ms, res.P99Ms, res.MaxMs)
	}
}

func TestCommandCountsTimeoutsAndLoss(t *testing.T) {
	addr := startFakeBus(t, &fakeBus{timeoutEvery: 10, loseEvery: 7})
	cfg := shortRun(addr, ScenarioCommand)
	cfg.Handlers, cfg.Requesters, cfg.Rate = 1, 2, 300
	cfg.Drain = 500 * time.Millisecond // the lost ones never come
	res, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", res)
	// 1 in 10 refused with TIMEOUT, 1 in 7 never answered, 1 in 70 both (lost: nothing sent).
	wantTimeouts := float64(res.Sent) * (1.0/10 - 1.0/70)
	wantLost := float64(res.Sent) / 7
	if float64(res.Timeouts) < 0.6*wantTimeouts || float64(res.Timeouts) > 1.4*wantTimeouts {
		t.Errorf("timeouts %d of %d, want about %.0f", res.Timeouts, res.Sent, wantTimeouts)
	}
	if float64(res.Lost) < 0.6*wantLost || float64(res.Lost) > 1.4*wantLost {
		t.Errorf("lost %d of %d, want about %.0f", res.Lost, res.Sent, wantLost)
	}
	if res.Delivered+res.Timeouts+res.Lost != res.Sent {
		t.Errorf("answered %d + timeouts %d + lost %d != sent %d", res.Delivered, res.Timeouts, res.Lost, res.Sent)
	}
	if res.Errors < res.Timeouts {
		t.Errorf("errors %d < timeouts %d", res.Errors, res.Timeouts)
	}
}

func TestParseRoutedEvent(t *testing.T) {
	// An event as the server routes it now: the sender's envelope with the position and receive
	// time added under metadata (and the sender's own metadata kept in front of them).
	msg := []byte(`{"version":"1.0","id":"arq_m_3_17","type":"event","room":"perf","channel":"ch_a1b2c3_7","from":"lda1b2c3_p3",` +
		`"timestamp":"2026-11-26T19:00:00.000Z","payload":{"t":1700000000123456789,"p":3,"s":17},` +
		`"metadata":{"t":4,"position":"1764183600000-42","received_at":"2026-11-26T19:00:00.001Z"}}`)
	tm, p, s, ok := parseEvent(msg)
	if !ok || tm != 1700000000123456789 || p != 3 || s != 17 {
		t.Errorf("parseEvent = %d %d %d %v", tm, p, s, ok)
	}
	// The one-pass walker reads the same, and declines what is not the server's exact layout
	// (the searching parsers then take over).
	if tm, p, s, ok := parseRoutedEvent(msg); !ok || tm != 1700000000123456789 || p != 3 || s != 17 {
		t.Errorf("parseRoutedEvent = %d %d %d %v", tm, p, s, ok)
	}
	for _, other := range []string{
		`{"version":"1.0","id":"a\"b","type":"event","room":"r","channel":"c","from":"f","timestamp":"x","payload":{"t":1,"p":2,"s":3}}`,
		`{"version":"1.0","id":"a","type":"error","room":"r","channel":"c","from":"f","timestamp":"x","payload":{"t":1,"p":2,"s":3}}`,
		`{"version":"1.0","id":"a","type":"event","room":"r","channel":"c","from":"f","timestamp":"x","payload":{"s":3,"t":1,"p":2}}`,
		`{"version":"1.0","id":"a","type":"event","room":"r"`,
	} {
		if _, _, _, ok := parseRoutedEvent([]byte(other)); ok {
			t.Errorf("parseRoutedEvent took %s", other)
		}
	}
	// Metadata before the payload must not be mistaken for it either.
	msg = []byte(`{"type":"event","metadata":{"position":"5-0","s":99},"payload":{"t":8,"p":1,"s":2}}`)
	if tm, p, s, ok := parseEvent(msg); !ok || tm != 8 || p != 1 || s != 2 {
		t.Errorf("metadata first: %d %d %d %v", tm, p, s, ok)
	}
}

func TestCommandWire(t *testing.T) {
	p := &publisher{index: 4, room: "perf", channel: "cmd_x", c: &conn{id: "q4"}}
	cmd := p.appendCommand(nil, 12, 1700000000000000001, []byte("2026-11-26T19:00:00.000Z"))
	var env struct {
		ID      string `json:"id"`
		Type    string `json:"type"`
		From    string `json:"from"`
		Payload struct {
			Command    string          `json:"command"`
			Parameters json.RawMessage `json:"parameters"`
		} `json:"payload"`
	}
	if err := json.Unmarshal(cmd, &env); err != nil {
		t.Fatalf("%s: %v", cmd, err)
	}
	if env.ID != "arq_c_4_12" || env.Type != "command" || env.From != "q4" || env.Payload.Command != EchoCommand {
		t.Errorf("command %s", cmd)
	}
	if pi, seq, ok := parseCommandID([]byte(env.ID)); !ok || pi != 4 || seq != 12 {
		t.Errorf("parseCommandID = %d %d %v", pi, seq, ok)
	}
	for _, bad := range []string{"arq_c_4", "arq_c_4_", "arq_c_4_12x", "arq_m_4_12", "arq_c__1"} {
		if _, _, ok := parseCommandID([]byte(bad)); ok {
			t.Errorf("parseCommandID(%q) accepted", bad)
		}
	}
	h := &echoHandler{index: 0, room: "perf", ch: "cmd_x", c: &conn{id: "h0"}}
	resp := h.appendResponse(nil, 1, stringField(cmd, keyID), rawObject(cmd, keyParams), []byte("2026-11-26T19:00:00.001Z"))
	var r struct {
		Type    string `json:"type"`
		From    string `json:"from"`
		Payload struct {
			RequestID string `json:"request_id"`
			Status    string `json:"status"`
			Result    struct{ T, P, S int64 }
		} `json:"payload"`
	}
	if err := json.Unmarshal(resp, &r); err != nil {
		t.Fatalf("%s: %v", resp, err)
	}
	if r.Type != "command_response" || r.From != "h0" || r.Payload.RequestID != "arq_c_4_12" || r.Payload.Status != "success" ||
		r.Payload.Result.T != 1700000000000000001 || r.Payload.Result.P != 4 || r.Payload.Result.S != 12 {
		t.Errorf("response %s", resp)
	}
	if tm, pi, seq, ok := parseTPS(resp, keyResult); !ok || tm != 1700000000000000001 || pi != 4 || seq != 12 {
		t.Errorf("parseTPS(result) = %d %d %d %v", tm, pi, seq, ok)
	}
}

func TestParseMetrics(t *testing.T) {
	text := `# HELP arqonbus_storage_writes_total Messages written to storage.
# TYPE arqonbus_storage_writes_total counter
arqonbus_storage_writes_total 12345
arqonbus_storage_errors_total 0
arqonbus_persist_queue_depth 17
arqonbus_storage_degraded 0
arqonbus_errors_total{code="TIMEOUT"} 3
`
	m, err := parseMetrics(strings.NewReader(text), storageMetrics...)
	if err != nil || m[metricStorageWrites] != 12345 || m[metricPersistDepth] != 17 || storedCount(m) != 12345 {
		t.Errorf("parseMetrics = %v, %v", m, err)
	}
	// A cluster node: events are stored by the publish script, counted under a labelled series.
	cluster := text + `arqonbus_cluster_events_total{way="local_only"} 2
arqonbus_cluster_events_total{way="published"} 3000
`
	m, err = parseMetrics(strings.NewReader(cluster), storageMetrics...)
	if err != nil || m[metricClusterPublished] != 3000 || storedCount(m) != 15345 {
		t.Errorf("cluster parseMetrics = %v, %v", m, err)
	}
	if _, err := parseMetrics(strings.NewReader("arqonbus_up 1\n"), metricStorageWrites); err == nil {
		t.Error("missing metric accepted")
	}
}

func TestSeqTrack(t *testing.T) {
	tr := seqTrack{maxSeq: -1}
	var dups, ooos int
	for _, s := range []int64{0, 1, 2, 2, 5, 3, 200, 1, 4} {
		d, o := tr.observe(s)
		if d {
			dups++
		}
		if o {
			ooos++
		}
	}
	if dups != 2 || ooos != 2 || tr.unique() != 7 {
		t.Errorf("dups %d ooo %d unique %d, want 2 2 7", dups, ooos, tr.unique())
	}
}

func TestParseVmRSS(t *testing.T) {
	rss, err := parseVmRSS([]byte("Name:\tarqonbus\nVmPeak:\t  999 kB\nVmRSS:\t   1234 kB\nThreads: 4\n"))
	if err != nil || rss != 1234*1024 {
		t.Errorf("parseVmRSS = %d, %v", rss, err)
	}
	if _, err := parseVmRSS([]byte("Name:\tzombie\n")); err == nil {
		t.Error("missing VmRSS accepted")
	}
}

func TestSummarizeMedians(t *testing.T) {
	rs := []Result{
		{Scenario: "fanout", Params: "a", Runs: 1, P99Ms: 9, Lost: 0, SentPerSec: 100},
		{Scenario: "idle", Params: "b", Runs: 1, RSSPerConnBytes: 5000},
		{Scenario: "fanout", Params: "a", Runs: 1, P99Ms: 1, Lost: 7, SentPerSec: 300, FirstError: "x"},
		{Scenario: "fanout", Params: "a", Runs: 1, P99Ms: 3, Lost: 1, SentPerSec: 200},
	}
	sum := Summarize(rs)
	if len(sum) != 2 || sum[0].Scenario != "fanout" || sum[1].Scenario != "idle" {
		t.Fatalf("groups %+v", sum)
	}
	f := sum[0]
	if f.Runs != 3 || f.P99Ms != 3 || f.Lost != 1 || f.SentPerSec != 200 || f.FirstError != "x" {
		t.Errorf("medians %+v", f)
	}
	var b strings.Builder
	if err := WriteTable(&b, sum); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "p99.9 ms") || strings.Count(b.String(), "\n") != 3 {
		t.Errorf("table:\n%s", b.String())
	}
	var lines strings.Builder
	for _, r := range rs {
		j, _ := json.Marshal(r)
		lines.Write(j)
		lines.WriteString("\n\n")
	}
	back, err := ReadResults(strings.NewReader(lines.String()))
	if err != nil || len(back) != 4 || back[2].Lost != 7 {
		t.Errorf("ReadResults = %v, %v", back, err)
	}
}

func TestSubAddrsRoundRobin(t *testing.T) {
	cfg, err := Config{Scenario: ScenarioFanout, Addr: "127.0.0.1:1"}.Normalize()
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.SubAddrs) != 1 || cfg.subAddr(0) != "127.0.0.1:1" || cfg.subAddr(7) != "127.0.0.1:1" {
		t.Errorf("no -sub-addrs: %q, want just Addr", cfg.SubAddrs)
	}
	cfg, err = Config{Scenario: ScenarioFanout, Addr: "a:1", SubAddrs: []string{"a:1", "b:2", "c:3"}}.Normalize()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for i := range 7 {
		got = append(got, cfg.subAddr(i))
	}
	if want := []string{"a:1", "b:2", "c:3", "a:1", "b:2", "c:3", "a:1"}; !slices.Equal(got, want) {
		t.Errorf("subAddr(0..6) = %q, want %q", got, want)
	}
	if _, err := (Config{Scenario: ScenarioFanout, SubAddrs: []string{"nohost"}}).Normalize(); err == nil {
		t.Error("subscriber address without a port accepted")
	}
	if a, err := ParseAddrs(" 127.0.0.1:1, localhost:2 "); err != nil || !slices.Equal(a, []string{"127.0.0.1:1", "localhost:2"}) {
		t.Errorf("ParseAddrs = %q, %v", a, err)
	}
	for _, bad := range []string{"127.0.0.1", "127.0.0.1:1,", "a:1,,b:2", "127.0.0.1:"} {
		if _, err := ParseAddrs(bad); err == nil {
			t.Errorf("ParseAddrs(%q) accepted", bad)
		}
	}
}

func TestFanoutOverSeveralAddresses(t *testing.T) {
	// One bus behind three addresses, like three nodes: subscribers spread over them, round
	// robin, and publishers stay on Addr; every event still reaches every subscriber.
	fb := &fakeBus{}
	a0 := startFakeBus(t, fb)
	a1, a2 := fb.listen(t), fb.listen(t)
	cfg := shortRun(a0, ScenarioFanout)
	cfg.SubAddrs = []string{a0, a1, a2}
	cfg.Subs, cfg.Pubs, cfg.Rate = 7, 2, 300
	// The fake bus runs in this process: our own pid stands in for every server.
	cfg.ServerPID = os.Getpid()
	res, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if res.Lost != 0 || res.Dup != 0 || res.Delivered == 0 || res.Delivered != res.Sent*7 {
		t.Errorf("sent %d delivered %d lost %d dup %d", res.Sent, res.Delivered, res.Lost, res.Dup)
	}
	perAddr := map[string]int{}
	fb.mu.Lock()
	for id, a := range fb.arrivals {
		switch {
		case strings.Contains(id, "_s"):
			perAddr[a]++
		case strings.Contains(id, "_p") && a != a0:
			t.Errorf("publisher %s connected to %s, want %s", id, a, a0)
		}
	}
	fb.mu.Unlock()
	if perAddr[a0] != 3 || perAddr[a1] != 2 || perAddr[a2] != 2 {
		t.Errorf("subscribers per address %v, want 3 on %s and 2 on each of %s, %s", perAddr, a0, a1, a2)
	}
	// CPU: one server pid (ours), read at both ends of the window.
	if len(res.ServerCPU) != 1 || res.ServerCPU[0].PID != os.Getpid() || res.ServerCPU[0].Missing != "" {
		t.Fatalf("server CPU %+v (missing: %s)", res.ServerCPU, res.CPUMissing)
	}
	if math.Abs(res.CPUWindowS-cfg.Duration.Seconds()) > 0.2 {
		t.Errorf("CPU window %.3fs, want about the measured window %s", res.CPUWindowS, cfg.Duration)
	}
	if res.GenCPUS <= 0 || res.ServerCPUS != res.ServerCPU[0].CPUS {
		t.Errorf("generator CPU %v, server CPU %v (per pid %+v)", res.GenCPUS, res.ServerCPUS, res.ServerCPU)
	}
	if want := res.ServerCPUS * 1e6 / float64(res.Delivered); math.Abs(res.ServerCPUUsPerDelivery-want) > 1e-9 {
		t.Errorf("µs per delivery %v, want %v", res.ServerCPUUsPerDelivery, want)
	}
	if want := res.ServerCPUS * 1e6 / float64(res.Sent); math.Abs(res.ServerCPUUsPerMsg-want) > 1e-9 {
		t.Errorf("µs per message %v, want %v", res.ServerCPUUsPerMsg, want)
	}
}

// deadPID is a pid no process has: above the kernel's largest (pid_max is at most 2^22).
const deadPID = 1 << 30

func TestCPUOfAMissingProcess(t *testing.T) {
	addr := startFakeBus(t, &fakeBus{})
	cfg := shortRun(addr, ScenarioFanout)
	cfg.Subs, cfg.Pubs, cfg.Rate = 2, 1, 200
	cfg.ServerPIDs = []int{os.Getpid(), deadPID}
	cfg.ServerPID = os.Getpid() // the same pid twice counts once
	cfg.RedisPID = os.Getpid()
	res, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatalf("a missing pid failed the run: %v", err)
	}
	if len(res.ServerCPU) != 2 || res.ServerCPU[0].Missing != "" || res.ServerCPU[1].PID != deadPID || res.ServerCPU[1].Missing == "" {
		t.Fatalf("server CPU %+v", res.ServerCPU)
	}
	if !strings.Contains(res.CPUMissing, strconv.Itoa(deadPID)) || res.FirstError != "" {
		t.Errorf("CPU missing %q, first error %q", res.CPUMissing, res.FirstError)
	}
	// A partial sum would understate the servers' cost per delivery: none is given.
	if res.ServerCPUUsPerDelivery != 0 || res.ServerCPUUsPerMsg != 0 {
		t.Errorf("per delivery %v per message %v from a partial sum", res.ServerCPUUsPerDelivery, res.ServerCPUUsPerMsg)
	}
	if res.RedisPID != os.Getpid() || res.CPUWindowS <= 0 {
		t.Errorf("redis pid %d, window %v", res.RedisPID, res.CPUWindowS)
	}
	var b strings.Builder
	if err := WriteTable(&b, []Result{res}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"per node s", "redis CPU s", "?"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, b.String())
		}
	}
}

func TestParseProcStatCPU(t *testing.T) {
	// A command name with spaces and parentheses: fields are counted from the last ')'.
	line := []byte("4242 (arq (bus) 1) S 1 4242 4242 0 -1 4194560 2811 0 0 0 1234 567 8 9 20 0 6 0 123456 1000000 2000 " +
		"18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n")
	if ticks, err := parseProcStatCPU(line); err != nil || ticks != 1234+567 {
		t.Errorf("parseProcStatCPU = %d, %v, want 1801 (utime + stime, not cutime/cstime)", ticks, err)
	}
	for _, bad := range []string{"", "4242 (arq", "4242 (arq) S 1 2 3", "4242 (arq) S 1 4242 4242 0 -1 4194560 2811 0 0 0 x 567 8 9"} {
		if _, err := parseProcStatCPU([]byte(bad)); err == nil {
			t.Errorf("parseProcStatCPU(%q) accepted", bad)
		}
	}
	// Our own process, read for real: CPU time only grows.
	t0, err := ReadProcCPUTicks(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	for end := time.Now().Add(50 * time.Millisecond); time.Now().Before(end); {
	}
	if t1, err := ReadProcCPUTicks(os.Getpid()); err != nil || t1 < t0 {
		t.Errorf("ticks %d then %d, %v", t0, t1, err)
	}
	if _, err := ReadProcCPUTicks(deadPID); err == nil {
		t.Error("the CPU of a process that does not exist was read")
	}
	if hz := clockTicks(); hz != 100 {
		t.Logf("CLK_TCK is %d here", hz) // 100 on every Linux we know, but read, not assumed
	}
}

func TestParseAuxv(t *testing.T) {
	var b []byte
	for _, w := range []uint64{6, 4096, atClkTck, 250, 0, 0, atClkTck, 999} {
		b = binary.NativeEndian.AppendUint64(b, w)
	}
	if v, ok := parseAuxv(b, 8, atClkTck); !ok || v != 250 {
		t.Errorf("parseAuxv = %d, %v, want 250", v, ok)
	}
	if _, ok := parseAuxv(b[:16], 8, atClkTck); ok {
		t.Error("found an entry that is not there")
	}
	var b32 []byte
	for _, w := range []uint32{atClkTck, 100, 0, 0} {
		b32 = binary.NativeEndian.AppendUint32(b32, w)
	}
	if v, ok := parseAuxv(b32, 4, atClkTck); !ok || v != 100 {
		t.Errorf("32-bit parseAuxv = %d, %v", v, ok)
	}
}

func TestSummarizeCPU(t *testing.T) {
	run := func(cpu ...float64) Result {
		r := Result{Scenario: "fanout", Params: "a", Label: "cluster-3", Runs: 1, CPUWindowS: 3, RedisPID: 77, GenCPUS: 1}
		for i, c := range cpu {
			r.ServerCPU = append(r.ServerCPU, ProcCPU{PID: 100 + i, CPUS: c})
			r.ServerCPUS += c
		}
		r.ServerCPUUsPerDelivery = r.ServerCPUS
		return r
	}
	missing := run(9, 9, 9)
	missing.ServerCPU[2] = ProcCPU{PID: 102, Missing: "gone"}
	missing.CPUMissing = "server pid 102: gone"
	sum := Summarize([]Result{run(1, 0.5, 0.4), run(3, 0.1, 0.2), missing})
	if len(sum) != 1 {
		t.Fatalf("groups %+v", sum)
	}
	s := sum[0]
	want := []ProcCPU{{CPUS: 3}, {CPUS: 0.5}, {CPUS: 0.30000000000000004}}
	if len(s.ServerCPU) != 3 || s.ServerCPU[0] != want[0] || s.ServerCPU[1] != want[1] || math.Abs(s.ServerCPU[2].CPUS-0.3) > 1e-9 {
		t.Errorf("per-node medians %+v, want %+v", s.ServerCPU, want)
	}
	if s.CPUMissing == "" || s.RedisPID != 1 || math.Abs(s.ServerCPUUsPerDelivery-3.3) > 1e-9 {
		t.Errorf("summary %+v", s)
	}
	var b strings.Builder
	if err := WriteTable(&b, sum); err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"srv CPU s", "per node s", "srv µs/deliv", "srv µs/msg", "gen CPU s", "redis CPU s", "3.00/0.50/0.30", "3.30"} {
		if !strings.Contains(b.String(), w) {
			t.Errorf("table lacks %q:\n%s", w, b.String())
		}
	}
	// No CPU measured: no CPU columns.
	b.Reset()
	if err := WriteTable(&b, []Result{{Scenario: "fanout", Params: "a", Runs: 1}}); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(b.String(), "CPU") {
		t.Errorf("CPU columns without CPU:\n%s", b.String())
	}
}
