package e2e

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/arqonbus/arqonbus/client"
	"github.com/gobwas/ws"
)

// cpuTime is the CPU time the process pid has used so far: the sum over its
// threads of the scheduler's run time (/proc/<pid>/task/*/schedstat), exact to
// the nanosecond where the tick-sampled utime and stime of /proc/<pid>/stat
// misjudge a process woken every millisecond.
func cpuTime(t *testing.T, pid int) time.Duration {
	t.Helper()
	dir := "/proc/" + strconv.Itoa(pid) + "/task"
	tasks, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("cpu time: %v", err)
	}
	var total time.Duration
	for _, task := range tasks {
		b, err := os.ReadFile(dir + "/" + task.Name() + "/schedstat")
		if err != nil {
			continue // the thread exited meanwhile
		}
		fields := strings.Fields(string(b))
		if len(fields) == 0 {
			t.Fatalf("cpu time: empty %s/schedstat", task.Name())
		}
		ns, err := strconv.ParseInt(fields[0], 10, 64)
		if err != nil {
			t.Fatalf("cpu time: cannot parse %q", b)
		}
		total += time.Duration(ns)
	}
	return total
}

// declaredFrameHeader is a masked client frame header declaring a payload of n bytes
// (the mask is zero, so the payload goes as is).
func declaredFrameHeader(op ws.OpCode, fin bool, n int) []byte {
	b0 := byte(op)
	if fin {
		b0 |= 0x80
	}
	h := []byte{b0, 0x80 | 127}
	h = binary.BigEndian.AppendUint64(h, uint64(n))
	return append(h, 0, 0, 0, 0)
}

// pingRTTs pings the bus through c every interval until stop closes, and
// returns the round trips.
func pingRTTs(t *testing.T, c *client.Conn, interval time.Duration, stop <-chan struct{}) []time.Duration {
	t.Helper()
	var rtts []time.Duration
	for {
		select {
		case <-stop:
			return rtts
		case <-time.After(interval):
		}
		ctx := testCtx(t, 5*time.Second)
		start := time.Now()
		if _, err := c.Command(ctx, "science", "general", "ping", nil); err != nil {
			t.Errorf("healthy client's ping: %v", err)
			return rtts
		}
		rtts = append(rtts, time.Since(start))
	}
}

func quantile(d []time.Duration, q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[int(q*float64(len(s)-1))]
}

// trickleResult is what one trickle phase measured.
type trickleResult struct {
	sent    int           // bytes each connection sent
	elapsed time.Duration // wall time of the phase
	cpu     time.Duration // server CPU used meanwhile
	rtts    []time.Duration
}

// trickle writes next(i) (64 bytes) to every connection once a millisecond
// for d, measuring the server's CPU and a healthy client's ping meanwhile.
func trickle(t *testing.T, s *server, healthy *client.Conn, conns []*rawConn, d time.Duration, next func(i int) []byte) trickleResult {
	t.Helper()
	pid := s.cmd.Process.Pid
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var res trickleResult
	wg.Add(1)
	go func() {
		defer wg.Done()
		res.rtts = pingRTTs(t, healthy, 100*time.Millisecond, stop)
	}()
	cpu0 := cpuTime(t, pid)
	tick := time.NewTicker(time.Millisecond)
	start := time.Now()
	for i := 0; time.Since(start) < d; i++ {
		<-tick.C
		b := next(i)
		for _, c := range conns {
			if _, err := c.nc.Write(b); err != nil {
				t.Fatalf("trickle write after %d bytes: %v", res.sent, err)
			}
		}
		res.sent += len(b)
	}
	tick.Stop()
	res.elapsed = time.Since(start)
	res.cpu = cpuTime(t, pid) - cpu0
	close(stop)
	wg.Wait()
	return res
}

// TestTrickledFrameCostsLinearCPU: connections that each declare a 1 MiB
// frame and trickle it 64 bytes a millisecond cost the server no more CPU per
// segment than the same segments as frames that complete at once (a
// fragmented message sent as 64-byte fragments): the cost of a read is the
// syscalls, not the bytes already buffered. The server used to copy the whole
// partial frame on every read, a cost that grew with the frame. A healthy
// client's pings stay fast meanwhile.
func TestTrickledFrameCostsLinearCPU(t *testing.T) {
	const (
		tricklers = 4
		duration  = 10 * time.Second
		step      = 64
	)
	// The frame deadline is longer than the trickle: this test is about the
	// cost of reading, the deadline has its own test.
	s := startServer(t, "ARQONBUS_FRAME_TIMEOUT=60s", "ARQONBUS_IDLE_TIMEOUT=120s")
	healthy := dial(t, s, client.WithClientID("trickle_witness"))
	var base []time.Duration
	for range 10 {
		ctx := testCtx(t, 5*time.Second)
		start := time.Now()
		if _, err := healthy.Command(ctx, "science", "general", "ping", nil); err != nil {
			t.Fatal(err)
		}
		base = append(base, time.Since(start))
	}
	open := func(prefix string, first []byte) []*rawConn {
		conns := make([]*rawConn, tricklers)
		for i := range conns {
			conns[i] = rawDial(t, s, fmt.Sprintf("%s_%d", prefix, i), nil)
			conns[i].expectWelcome()
			_ = conns[i].nc.SetDeadline(time.Now().Add(duration + 30*time.Second))
			conns[i].write(first)
		}
		return conns
	}

	// Control: each 64-byte write is a whole frame (a fragment of one long
	// message), consumed at once.
	fragment := frame(ws.OpContinuation, false, true, []byte(strings.Repeat("c", step-6)))
	control := trickle(t, s, healthy, open("fragmenter", frame(ws.OpText, false, true, []byte("c"))), duration,
		func(int) []byte { return fragment })
	// Attack: each 64-byte write is more of one 1 MiB frame, whose first
	// 256 KiB came at once: how many segments the trickler manages depends on
	// the machine's load, and what each read costs must not depend on what is
	// already buffered.
	chunk := []byte(strings.Repeat("t", step))
	attack := trickle(t, s, healthy, open("trickler", append(declaredFrameHeader(ws.OpText, true, 1<<20), strings.Repeat("t", 256<<10)...)), duration,
		func(int) []byte { return chunk })

	for _, r := range []struct {
		name string
		res  trickleResult
	}{{"control: 64-byte fragments", control}, {"attack: a 1 MiB frame 64 bytes at a time", attack}} {
		t.Logf("%s: %d connections, %d bytes each in %v: server CPU %v; healthy ping p50 %v p99 %v max %v (%d pings)",
			r.name, tricklers, r.res.sent, r.res.elapsed.Round(time.Millisecond), r.res.cpu,
			quantile(r.res.rtts, 0.5), quantile(r.res.rtts, 0.99), quantile(r.res.rtts, 1), len(r.res.rtts))
	}
	t.Logf("healthy ping before: p50 %v max %v", quantile(base, 0.5), quantile(base, 1))
	// The phases write the same 64-byte segments, but how many the trickler
	// manages in 10 s depends on the machine's load: compare the CPU per
	// segment. Generous: copying what is buffered on each read cost the
	// attack several times the control.
	perWrite := func(r trickleResult) time.Duration { return r.cpu * step / time.Duration(max(r.sent*tricklers, 1)) }
	t.Logf("server CPU per 64-byte segment: control %v, attack %v", perWrite(control), perWrite(attack))
	if limit := 2*perWrite(control) + 20*time.Microsecond; perWrite(attack) > limit {
		t.Errorf("a segment of a trickled 1 MiB frame costs %v of server CPU, a segment that is a whole frame %v: want under %v",
			perWrite(attack), perWrite(control), limit)
	}
	for _, r := range []trickleResult{control, attack} {
		if len(r.rtts) == 0 {
			t.Fatal("no ping answered during a trickle")
		}
		if p50 := quantile(r.rtts, 0.5); p50 > 10*quantile(base, 0.5)+50*time.Millisecond {
			t.Errorf("healthy ping p50 %v during a trickle, baseline %v", p50, quantile(base, 0.5))
		}
	}
}

// TestFrameDeadline: a frame that does not complete within --frame-timeout
// closes its connection with 1008, however steadily its bytes arrive (a
// slowloris keeps the idle timer from firing); so does a fragmented message
// whose fragments keep coming but never end.
func TestFrameDeadline(t *testing.T) {
	s := startServer(t, "ARQONBUS_FRAME_TIMEOUT=2s")
	witness := dial(t, s, client.WithClientID("deadline_witness"))

	trickle := func(t *testing.T, c *rawConn, next func(i int) []byte) {
		t.Helper()
		done := make(chan struct{})
		defer close(done)
		go func() {
			for i := 0; ; i++ {
				select {
				case <-done:
					return
				case <-time.After(100 * time.Millisecond):
				}
				if _, err := c.nc.Write(next(i)); err != nil {
					return
				}
			}
		}()
		start := time.Now()
		c.expectClose(ws.StatusPolicyViolation)
		if d := time.Since(start); d < 1500*time.Millisecond || d > 5*time.Second {
			t.Errorf("closed after %v, want about the 2 s frame deadline", d)
		}
	}

	t.Run("one frame", func(t *testing.T) {
		c := rawDial(t, s, "deadline_frame", nil)
		c.expectWelcome()
		c.write(declaredFrameHeader(ws.OpText, true, 4096))
		trickle(t, c, func(int) []byte { return []byte("x") })
	})
	t.Run("fragments", func(t *testing.T) {
		c := rawDial(t, s, "deadline_frag", nil)
		c.expectWelcome()
		c.write(frame(ws.OpText, false, true, []byte("x")))
		trickle(t, c, func(int) []byte { return frame(ws.OpContinuation, false, true, []byte("x")) })
	})

	ctx := testCtx(t, 5*time.Second)
	if _, err := witness.Command(ctx, "science", "general", "ping", nil); err != nil {
		t.Errorf("witness broken after the tricklers: %v", err)
	}
}

// sendThenClose writes all of b at once, as a client sending a large message
// does before it reads again, then reads until the server's close frame,
// answers it, and reads on. It returns the close code and how the exchange
// went otherwise: the write must not be reset, and the connection must end
// with the server's FIN, not a reset that could have cost the client the close
// frame.
func sendThenClose(t *testing.T, c *rawConn, b []byte) (ws.StatusCode, error) {
	t.Helper()
	_ = c.nc.SetWriteDeadline(time.Now().Add(10 * time.Second))
	_, werr := c.nc.Write(b)
	deadline := time.Now().Add(10 * time.Second)
	for {
		h, p, err := c.readFrame(time.Until(deadline))
		if err != nil {
			return 0, fmt.Errorf("before the close frame: %w (write: %v)", err, werr)
		}
		if h.OpCode != ws.OpClose {
			continue
		}
		code := ws.StatusNoStatusRcvd
		if len(p) >= 2 {
			code, _ = ws.ParseCloseFrameData(p)
		}
		if werr != nil {
			return code, fmt.Errorf("write: %w", werr)
		}
		_, _ = c.nc.Write(frame(ws.OpClose, true, true, ws.NewCloseFrameBody(code, "")))
		_ = c.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := io.Copy(io.Discard, c.br)
		if err == nil && n > 0 {
			err = fmt.Errorf("%d bytes after the close frame", n)
		}
		return code, err
	}
}

// TestRefusedStreamGetsItsCloseCode: a client still sending when the server
// refuses it (a message too big, refused on its header while its payload
// streams in; a stream of garbage) reads the close code from the close frame,
// and the connection then ends cleanly: the server used to close the socket
// with unread input, so the kernel sent a reset and the client saw 1006.
// Other clients are unaffected.
func TestRefusedStreamGetsItsCloseCode(t *testing.T) {
	s := startServer(t)
	witness := dial(t, s, client.WithClientID("refused_witness"))
	const size = 8 << 20
	tooBig := append(declaredFrameHeader(ws.OpText, true, size), strings.Repeat("p", size)...)
	garbage := []byte(strings.Repeat("\xc1\x7f", size/2)) // reserved bits set: a protocol error
	for i := range 3 {
		t.Run(fmt.Sprintf("too big %d", i), func(t *testing.T) {
			c := rawDial(t, s, fmt.Sprintf("refused_big_%d", i), nil)
			c.expectWelcome()
			code, err := sendThenClose(t, c, tooBig)
			if code != ws.StatusMessageTooBig || err != nil {
				t.Errorf("close code %d (%v); want %d and a clean end of stream", code, err, ws.StatusMessageTooBig)
			}
		})
		t.Run(fmt.Sprintf("garbage %d", i), func(t *testing.T) {
			c := rawDial(t, s, fmt.Sprintf("refused_garbage_%d", i), nil)
			c.expectWelcome()
			code, err := sendThenClose(t, c, garbage)
			if code != ws.StatusProtocolError || err != nil {
				t.Errorf("close code %d (%v); want %d and a clean end of stream", code, err, ws.StatusProtocolError)
			}
		})
	}
	ctx := testCtx(t, 5*time.Second)
	if _, err := witness.Command(ctx, "science", "general", "ping", nil); err != nil {
		t.Errorf("witness broken after the refused streams: %v", err)
	}
}

// startLimited runs the binary with a file limit of nofile descriptors (set
// by the shell it is exec'd from, so the process is the server itself).
func startLimited(t *testing.T, nofile int, args []string, env ...string) *server {
	t.Helper()
	wrap := []string{"sh", "-c", `ulimit -n "$1" && shift && exec "$@"`, "sh", strconv.Itoa(nofile)}
	s := launchServer(t, wrap, args, env)
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(s.Output(), "arqonbus listening") {
		if !s.Alive() || time.Now().After(deadline) {
			t.Fatalf("server with a file limit of %d did not start: %s", nofile, s.Output())
		}
		time.Sleep(25 * time.Millisecond)
	}
	return s
}

// logInt is the integer value of key=... in the server's output.
func logInt(t *testing.T, s *server, key string) int {
	t.Helper()
	m := regexp.MustCompile(`\b` + key + `=(\d+)`).FindStringSubmatch(s.Output())
	if m == nil {
		t.Fatalf("no %s in the server's log", key)
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// stormOutcome counts how the upgrades of a storm were answered.
type stormOutcome struct {
	mu       sync.Mutex
	upgraded []net.Conn // kept open
	refused  int        // HTTP 503
	other    map[string]int
}

// storm makes n upgrade attempts, concurrency at a time, keeping the
// upgraded connections open.
func storm(s *server, n, concurrency int, out *stormOutcome) {
	var wg sync.WaitGroup
	next := make(chan int)
	for range concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range next {
				status, nc, err := tryUpgrade(s)
				out.mu.Lock()
				switch {
				case status == http.StatusSwitchingProtocols:
					out.upgraded = append(out.upgraded, nc)
				case status == http.StatusServiceUnavailable:
					out.refused++
				default:
					out.other[failureKind(status, err)]++
				}
				out.mu.Unlock()
			}
		}()
	}
	for i := range n {
		if i%100 == 0 && !s.Alive() {
			break
		}
		next <- i
	}
	close(next)
	wg.Wait()
}

// failureKind names how an upgrade attempt failed, without its addresses.
func failureKind(status int, err error) string {
	switch {
	case err == nil:
		return fmt.Sprintf("HTTP %d", status)
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "closed without an answer"
	case errors.Is(err, os.ErrDeadlineExceeded):
		return "timeout"
	}
	return err.Error()
}

// tryUpgrade sends an upgrade request on a fresh TCP connection and reads
// the status; the connection stays open only when it upgraded.
func tryUpgrade(s *server) (int, net.Conn, error) {
	nc, err := net.DialTimeout("tcp", s.Addr, 5*time.Second)
	if err != nil {
		return 0, nil, err
	}
	_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := nc.Write(upgradeRequest(s, "")); err != nil {
		nc.Close()
		return 0, nil, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(nc), nil)
	if err != nil {
		nc.Close()
		return 0, nil, err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSwitchingProtocols {
		nc.Close()
		return resp.StatusCode, nil, nil
	}
	_ = nc.SetDeadline(time.Time{})
	return resp.StatusCode, nc, nil
}

// TestConnectionStormAtFileLimit: with a low file limit, a storm of
// connections fills the derived connection cap and the rest are refused with
// HTTP 503, the node stays up, the clients it had keep publishing and
// receiving, and after the storm new clients connect and are served. A
// --max-connections above what the file limit holds is lowered (and logged):
// gnet stops its engine for good when accept runs out of descriptors, so the
// node must never let it get there. Before, a file limit under 1024 gave a cap
// of 900, and the storm killed the node.
func TestConnectionStormAtFileLimit(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"derived cap", nil},
		{"max-connections above the limit", []string{"--max-connections", "100000"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const (
				nofile           = 512
				stormConcurrency = 1000 // connections in flight at once: a burst twice the file limit
			)
			s := startLimited(t, nofile, tc.args, "ARQONBUS_TELEMETRY_MAX_CONNECTIONS=16", "ARQONBUS_RATE_LIMIT=0")
			maxConns := logInt(t, s, "max_connections")
			t.Logf("file limit %d: max_connections %d", nofile, maxConns)
			if maxConns >= nofile || maxConns < 50 {
				t.Errorf("max_connections %d with a file limit of %d", maxConns, nofile)
			}
			if tc.args != nil && !strings.Contains(s.Output(), "max-connections lowered") {
				t.Errorf("--max-connections 100000 was not lowered with a log line")
			}

			ctx := testCtx(t, 60*time.Second)
			pub := dial(t, s, client.WithClientID("storm_pub"))
			sub := dial(t, s, client.WithClientID("storm_sub"))
			for _, c := range []*client.Conn{pub, sub} {
				if err := c.Join(ctx, "storm", "live"); err != nil {
					t.Fatal(err)
				}
			}
			// The healthy pair keeps talking through the storm.
			stop := make(chan struct{})
			talked := make(chan error, 1)
			go func() {
				n := 0
				for {
					select {
					case <-stop:
						if n == 0 {
							talked <- errors.New("no event went through during the storm")
						} else {
							talked <- nil
						}
						return
					case <-time.After(50 * time.Millisecond):
					}
					id, err := pub.Publish("storm", "live", map[string]any{"n": n})
					if err != nil {
						talked <- fmt.Errorf("publish during the storm: %w", err)
						return
					}
					ectx, cancel := context.WithTimeout(ctx, 5*time.Second)
					_, err = sub.Expect(ectx, func(e client.Envelope) bool { return e.ID == id })
					cancel()
					if err != nil {
						talked <- fmt.Errorf("event %d during the storm: %w", n, err)
						return
					}
					n++
				}
			}()

			// Idle connections to the HTTP and telemetry ports take what those
			// ports may hold (the HTTP server holds ops.MaxConnections, the rest
			// wait in its backlog; telemetry refuses past its cap).
			var side []net.Conn
			defer func() {
				for _, c := range side {
					c.Close()
				}
			}()
			for _, port := range []int{s.HTTPPort, s.TelemetryPort} {
				for range 300 {
					c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), 5*time.Second)
					if err != nil {
						t.Fatalf("dial port %d: %v", port, err)
					}
					side = append(side, c)
				}
			}
			out := &stormOutcome{other: map[string]int{}}
			start := time.Now()
			storm(s, maxConns+300, stormConcurrency, out)
			// Then hammer the full node: every attempt is refused at once.
			storm(s, 2000, stormConcurrency, out)
			took := time.Since(start)
			close(stop)
			talkErr := <-talked
			upgraded := len(out.upgraded)
			for _, nc := range out.upgraded {
				nc.Close()
			}
			t.Logf("storm of %d attempts in %v: %d upgraded, %d refused with 503, others %v",
				maxConns+2300, took.Round(time.Millisecond), upgraded, out.refused, out.other)
			if !s.Alive() {
				t.Fatalf("the node died in the storm")
			}
			if strings.Contains(s.Output(), "too many open files") {
				t.Errorf("the node ran out of descriptors")
			}
			if talkErr != nil {
				t.Error(talkErr)
			}
			// The healthy pair holds two of the slots.
			if upgraded > maxConns-2 || upgraded < maxConns-2-5 {
				t.Errorf("%d upgraded, want the maxConns %d less the healthy pair", upgraded, maxConns)
			}
			if out.refused < 2000 {
				t.Errorf("%d refused with 503, want at least the 2000 attempts on the full node", out.refused)
			}
			others := 0
			for _, n := range out.other {
				others += n
			}
			if others > (maxConns+2300)/100 {
				t.Errorf("%d attempts neither upgraded nor refused with 503: %v", others, out.other)
			}
			// After the storm, newcomers are served.
			deadline := time.Now().Add(10 * time.Second)
			for {
				status, c, _ := dialResult(s)
				if c != nil {
					c.Close()
				}
				if status == http.StatusSwitchingProtocols {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("no newcomer accepted after the storm (last status %d)", status)
				}
				time.Sleep(100 * time.Millisecond)
			}
			busServes(t, s, nil)
			if !s.Alive() {
				t.Fatal("the node died after the storm")
			}
		})
	}
}
