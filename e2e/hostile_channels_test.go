package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/arqonbus/arqonbus/client"
)

// stormSize is how many connections a storm may open: 20,000, or fewer when
// the descriptor limit (shared by this process's client ends; the server,
// its child, inherits the same limit) does not allow that many.
func stormSize(t *testing.T) int {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err == nil && rl.Cur < rl.Max {
		rl.Cur = rl.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl)
		_ = syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl)
	}
	// The server keeps 256 descriptors spare under its limit; this process
	// needs some for the test's own clients, pipes and HTTP.
	n := min(20000, int(rl.Cur)-600)
	if n < 1000 {
		t.Skipf("descriptor limit %d is too low for a connection storm", rl.Cur)
	}
	return n
}

// stormConn is a bare WebSocket client that sends what it is told and reads
// (and drops) whatever the server sends, so the server never sees it as a
// slow consumer. It costs one goroutine and a 1 KiB buffer.
type stormConn struct {
	nc net.Conn
}

func dialStorm(addr string) (*stormConn, error) {
	nc, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return nil, err
	}
	_ = nc.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := nc.Write(upgradeRequest(&server{Addr: addr}, "")); err != nil {
		nc.Close()
		return nil, err
	}
	br := bufio.NewReaderSize(nc, 1024)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		nc.Close()
		return nil, err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSwitchingProtocols {
		nc.Close()
		return nil, fmt.Errorf("upgrade answered %s", resp.Status)
	}
	_ = nc.SetDeadline(time.Time{})
	go func() {
		var buf [1024]byte
		for {
			if _, err := br.Read(buf[:]); err != nil {
				return
			}
		}
	}()
	return &stormConn{nc: nc}, nil
}

// dialStorms opens n storm connections, concurrently.
func dialStorms(t *testing.T, s *server, n int) []*stormConn {
	t.Helper()
	conns := make([]*stormConn, n)
	var next atomic.Int64
	var failed atomic.Pointer[error]
	var wg sync.WaitGroup
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n || failed.Load() != nil {
					return
				}
				c, err := dialStorm(s.Addr)
				if err != nil {
					err = fmt.Errorf("connection %d: %w", i, err)
					failed.Store(&err)
					return
				}
				conns[i] = c
			}
		}()
	}
	wg.Wait()
	t.Cleanup(func() {
		for _, c := range conns {
			if c != nil {
				c.nc.Close()
			}
		}
	})
	if err := failed.Load(); err != nil {
		t.Fatalf("opening %d connections: %v", n, *err)
	}
	return conns
}

// sendAll writes msg(i) to every connection, from a few goroutines at once.
func sendAll(t *testing.T, conns []*stormConn, msg func(i int) []byte) {
	t.Helper()
	var wg sync.WaitGroup
	var failures atomic.Int64
	const workers = 16
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < len(conns); i += workers {
				_ = conns[i].nc.SetWriteDeadline(time.Now().Add(10 * time.Second))
				if _, err := conns[i].nc.Write(textFrame(msg(i))); err != nil {
					failures.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if f := failures.Load(); f > 0 {
		t.Fatalf("%d of %d writes failed", f, len(conns))
	}
}

// latencyProbe publishes an acked event every interval from pub to
// room:channel and times the ack (the publish went through the channel lock
// and was handed to the loops) and the event's arrival at sub, a member
// since before the storm. Samples are kept by phase.
type latencyProbe struct {
	mu      sync.Mutex
	phase   string
	ack     map[string][]time.Duration
	deliver map[string][]time.Duration
	errs    []error
}

func (p *latencyProbe) setPhase(name string) {
	p.mu.Lock()
	p.phase = name
	p.mu.Unlock()
}

func (p *latencyProbe) run(ctx context.Context, pub, sub *client.Conn, room, channel string, interval time.Duration) {
	for n := 0; ctx.Err() == nil; n++ {
		p.mu.Lock()
		phase := p.phase
		p.mu.Unlock()
		id := fmt.Sprintf("arq_probe_%d", n)
		env := client.Envelope{ID: id, Type: "event", Room: room, Channel: channel,
			Payload: json.RawMessage(`{"n":` + strconv.Itoa(n) + `}`), Metadata: json.RawMessage(`{"ack":true}`)}
		sent := time.Now()
		if err := pub.Send(env); err != nil {
			p.fail(err)
			return
		}
		wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		ack, err := pub.Expect(wctx, func(e client.Envelope) bool { return e.RequestID() == id })
		acked := time.Since(sent)
		if e := client.AsError(ack); err == nil && e != nil {
			err = e
		}
		if err == nil {
			_, err = sub.Expect(wctx, func(e client.Envelope) bool { return e.ID == id })
		}
		delivered := time.Since(sent)
		cancel()
		if err != nil {
			if ctx.Err() == nil {
				p.fail(fmt.Errorf("probe %d (%s): %w", n, phase, err))
			}
			return
		}
		p.mu.Lock()
		p.ack[phase] = append(p.ack[phase], acked)
		p.deliver[phase] = append(p.deliver[phase], delivered)
		p.mu.Unlock()
		select {
		case <-ctx.Done():
		case <-time.After(interval):
		}
	}
}

func (p *latencyProbe) fail(err error) {
	p.mu.Lock()
	p.errs = append(p.errs, err)
	p.mu.Unlock()
}

// quantiles returns the p50, p99 and max of ds.
func quantiles(ds []time.Duration) (p50, p99, top time.Duration) {
	if len(ds) == 0 {
		return 0, 0, 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	at := func(q float64) time.Duration { return s[min(len(s)-1, int(q*float64(len(s))))] }
	return at(0.50), at(0.99), s[len(s)-1]
}

// channelMembers is room:channel's member count from list_channels.
func channelMembers(ctx context.Context, c *client.Conn, room, channel string) (int, error) {
	env, err := c.Command(ctx, room, channel, "list_channels", map[string]any{"room": room})
	if err != nil {
		return 0, err
	}
	var p struct {
		Result struct {
			Channels []struct {
				Channel string `json:"channel"`
				Members int    `json:"members"`
			} `json:"channels"`
		} `json:"result"`
	}
	if err := json.Unmarshal(env.Payload, &p); err != nil {
		return 0, err
	}
	for _, ch := range p.Result.Channels {
		if ch.Channel == channel {
			return ch.Members, nil
		}
	}
	return 0, nil
}

// waitMembers polls until room:channel has want members; it returns how long that took.
func waitMembers(t *testing.T, c *client.Conn, room, channel string, want int, timeout time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	deadline := start.Add(timeout)
	last := -1
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		n, err := channelMembers(ctx, c, room, channel)
		cancel()
		if err != nil {
			t.Logf("list_channels: %v (after %v)", err, time.Since(start).Round(time.Millisecond))
			continue
		}
		if n == want {
			return time.Since(start)
		}
		last = n
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s:%s has %d members after %v, want %d", room, channel, last, timeout, want)
	return 0
}

// A reconnect storm: thousands of connections join one channel at once, then
// all leave, while a publisher and a subscriber on that channel time their
// events. The storm's members join with a filter that the probe's events do
// not match, so that the probe times what membership changes cost the
// channel, not the fan-out to 20,000 members that any publish to a channel
// that big pays (and that the two cores of the test VM cannot carry at the
// probe's rate). Joins and leaves used to copy the member list under the channel
// lock (O(members) each, O(n²) for the storm: 1.4 s of copying for 20,000
// joins), which publishes wait for. Measured on the 2-core VM with 19,400
// connections, see the commit for the before/after figures.
func TestJoinStormPublishLatency(t *testing.T) {
	n := stormSize(t)
	s := startServer(t,
		"ARQONBUS_MAX_CONNECTIONS="+strconv.Itoa(n+100),
		"ARQONBUS_PING_INTERVAL=10m", "ARQONBUS_IDLE_TIMEOUT=20m", "ARQONBUS_HANDSHAKE_TIMEOUT=60s")
	const room, channel = "storm", "lobby"
	observer := dial(t, s)
	pub := dial(t, s)
	sub := dial(t, s)
	ctx := testCtx(t, 5*time.Minute)
	for _, c := range []*client.Conn{sub, pub} {
		if err := c.Join(ctx, room, channel); err != nil {
			t.Fatalf("join: %v", err)
		}
	}

	began := time.Now()
	conns := dialStorms(t, s, n)
	t.Logf("%d connections open in %v", n, time.Since(began).Round(time.Millisecond))

	probe := &latencyProbe{phase: "baseline", ack: map[string][]time.Duration{}, deliver: map[string][]time.Duration{}}
	pctx, stopProbe := context.WithCancel(ctx)
	probed := make(chan struct{})
	go func() { defer close(probed); probe.run(pctx, pub, sub, room, channel, 10*time.Millisecond) }()
	time.Sleep(2 * time.Second)

	probe.setPhase("join storm")
	sendAll(t, conns, func(i int) []byte {
		return []byte(`{"version":"1.0","id":"arq_storm_join_` + strconv.Itoa(i) + `","type":"command","room":"` + room +
			`","channel":"` + channel + `","from":"storm_` + strconv.Itoa(i) + `","timestamp":"` + client.Now() +
			`","payload":{"command":"join_channel","parameters":{"filter":{"storm":true}}}}`)
	})
	joinTook := waitMembers(t, observer, room, channel, n+2, 90*time.Second)
	t.Logf("join storm: %d joins done %v after the last was sent", n, joinTook.Round(time.Millisecond))

	probe.setPhase("members")
	time.Sleep(2 * time.Second)

	probe.setPhase("leave storm")
	began = time.Now()
	for _, c := range conns {
		c.nc.Close()
	}
	leaveTook := waitMembers(t, observer, room, channel, 2, 90*time.Second)
	t.Logf("leave storm: %d disconnects done in %v", n, leaveTook.Round(time.Millisecond))
	probe.setPhase("after")
	time.Sleep(time.Second)
	stopProbe()
	<-probed

	probe.mu.Lock()
	defer probe.mu.Unlock()
	for _, err := range probe.errs {
		t.Errorf("probe: %v", err)
	}
	for _, phase := range []string{"baseline", "join storm", "members", "leave storm", "after"} {
		a50, a99, amax := quantiles(probe.ack[phase])
		d50, d99, dmax := quantiles(probe.deliver[phase])
		t.Logf("%-11s %4d probes: ack p50 %v p99 %v max %v; delivery p50 %v p99 %v max %v", phase, len(probe.ack[phase]),
			a50.Round(10*time.Microsecond), a99.Round(10*time.Microsecond), amax.Round(10*time.Microsecond),
			d50.Round(10*time.Microsecond), d99.Round(10*time.Microsecond), dmax.Round(10*time.Microsecond))
	}
	// Generous bounds (a noisy shared VM, maybe a -race server): the storm
	// may slow a publish (its loop has thousands of joins to answer first),
	// not stall the channel. Before the fix the join storm did not complete
	// in 3 minutes, nor did a list_channels get an answer meanwhile.
	_, base99, _ := quantiles(probe.ack["baseline"])
	for _, phase := range []string{"join storm", "leave storm"} {
		if len(probe.ack[phase]) == 0 {
			t.Errorf("%s: no probe completed", phase)
			continue
		}
		_, p99, _ := quantiles(probe.ack[phase])
		if bound := max(20*base99, 5*time.Second); p99 > bound {
			t.Errorf("%s: publish ack p99 %v, want under %v (baseline p99 %v)", phase, p99, bound, base99)
		}
	}
	if !s.Alive() {
		t.Fatal("server died")
	}
}
