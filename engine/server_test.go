package engine

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

// echoHandler echoes text back; a few messages do something else, to test
// the engine's edges.
type echoHandler struct {
	mu     sync.Mutex
	opened int
	closed int
	last   *Conn // the connection opened last
}

func (h *echoHandler) Upgrade(_ *Conn, r *Request) error {
	if r.Query.Get("refuse") != "" {
		return &Reject{Status: http.StatusForbidden, Reason: "refused"}
	}
	return nil
}

func (h *echoHandler) Open(c *Conn) {
	h.mu.Lock()
	h.opened++
	h.last = c
	h.mu.Unlock()
	c.Write(TextFrame([]byte("welcome")))
}

func (h *echoHandler) Message(c *Conn, msg []byte) {
	switch {
	case string(msg) == "panic":
		panic("handler bug")
	case bytes.HasPrefix(msg, []byte("flood:")):
		n, _ := strconv.Atoi(string(msg[len("flood:"):]))
		chunk := TextFrame(bytes.Repeat([]byte("f"), 16<<10))
		for range n {
			c.Send(chunk) // through the inbox, as fan-out does
		}
	case bytes.HasPrefix(msg, []byte("burst:")):
		// A burst the client asked for, as a replay or history answer is.
		n, _ := strconv.Atoi(string(msg[len("burst:"):]))
		chunk := TextFrame(bytes.Repeat([]byte("b"), 16<<10))
		for range n {
			c.WriteRequested(chunk)
		}
	case bytes.HasPrefix(msg, []byte("numbered:")):
		// Numbered frames of uneven sizes, so that a socket that takes part
		// of a writev stops in the middle of one.
		n, _ := strconv.Atoi(string(msg[len("numbered:"):]))
		for i := range n {
			body := strconv.AppendInt(nil, int64(i), 10)
			body = append(body, ' ')
			body = append(body, bytes.Repeat([]byte("n"), 700+i%613)...)
			c.WriteRequested(TextFrame(body))
		}
	case bytes.HasPrefix(msg, []byte("burstsend:")):
		n, _ := strconv.Atoi(string(msg[len("burstsend:"):]))
		chunk := TextFrame(bytes.Repeat([]byte("s"), 16<<10))
		for range n {
			c.SendRequested(chunk)
		}
	default:
		c.Write(TextFrame(msg))
	}
}

func (h *echoHandler) Close(*Conn) {
	h.mu.Lock()
	h.closed++
	h.mu.Unlock()
}

func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func startServer(t testing.TB, cfg Config, h Handler) *Server {
	t.Helper()
	cfg.Addr = freeAddr(t)
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	s := New(cfg, h)
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
	return s
}

const upgradeRequest = "GET /?client_id=x HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
	"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"

func dialRaw(t testing.TB, s *Server) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", s.cfg.Addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	return c
}

// readUpgrade reads the HTTP response off br.
func readUpgrade(t testing.TB, br *bufio.Reader) *http.Response {
	t.Helper()
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

func readText(t testing.TB, br *bufio.Reader) string {
	t.Helper()
	for {
		h, err := ws.ReadHeader(br)
		if err != nil {
			t.Fatal(err)
		}
		p := make([]byte, h.Length)
		if _, err := io.ReadFull(br, p); err != nil {
			t.Fatal(err)
		}
		switch h.OpCode {
		case ws.OpText:
			return string(p)
		case ws.OpClose:
			t.Fatalf("closed: %v", p)
		}
	}
}

func TestHandshakeAndFramesInOneSegment(t *testing.T) {
	s := startServer(t, Config{}, &echoHandler{})
	c := dialRaw(t, s)
	seg := []byte(upgradeRequest)
	seg = append(seg, clientFrame(true, ws.OpText, []byte("one"))...)
	seg = append(seg, clientFrame(true, ws.OpText, []byte("two"))...)
	if _, err := c.Write(seg); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	if resp := readUpgrade(t, br); resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("status %d", resp.StatusCode)
	}
	for _, want := range []string{"welcome", "one", "two"} {
		if got := readText(t, br); got != want {
			t.Fatalf("got %q, want %q", got, want)
		}
	}
}

func TestRejectedUpgrade(t *testing.T) {
	s := startServer(t, Config{}, &echoHandler{})
	c := dialRaw(t, s)
	_, _ = c.Write([]byte(strings.Replace(upgradeRequest, "client_id=x", "refuse=1", 1)))
	if resp := readUpgrade(t, bufio.NewReader(c)); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("status %d, want 403", resp.StatusCode)
	}
	c2 := dialRaw(t, s)
	_, _ = c2.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")) // not an upgrade
	if resp := readUpgrade(t, bufio.NewReader(c2)); resp.StatusCode/100 != 4 {
		t.Fatalf("status %d, want 4xx", resp.StatusCode)
	}
}

func dialWS(t testing.TB, s *Server) (net.Conn, *bufio.Reader) {
	t.Helper()
	c := dialRaw(t, s)
	_, _ = c.Write([]byte(upgradeRequest))
	br := bufio.NewReader(c)
	readUpgrade(t, br)
	if got := readText(t, br); got != "welcome" {
		t.Fatalf("got %q", got)
	}
	return c, br
}

func expectClose(t *testing.T, br *bufio.Reader, code ws.StatusCode) {
	t.Helper()
	for {
		h, err := ws.ReadHeader(br)
		if err != nil {
			t.Fatalf("want close %d, got %v", code, err)
		}
		p := make([]byte, h.Length)
		if _, err := io.ReadFull(br, p); err != nil {
			t.Fatal(err)
		}
		if h.OpCode == ws.OpClose {
			got, _ := ws.ParseCloseFrameData(p)
			if got != code {
				t.Fatalf("close code %d, want %d", got, code)
			}
			return
		}
	}
}

func TestPanicClosesOnlyThatConnection(t *testing.T) {
	s := startServer(t, Config{}, &echoHandler{})
	bad, badR := dialWS(t, s)
	good, goodR := dialWS(t, s)
	_, _ = bad.Write(clientFrame(true, ws.OpText, []byte("panic")))
	expectClose(t, badR, CloseInternalError)
	_, _ = good.Write(clientFrame(true, ws.OpText, []byte("still here")))
	if got := readText(t, goodR); got != "still here" {
		t.Fatalf("got %q", got)
	}
	if s.Stats().Panics != 1 {
		t.Fatalf("panics %d", s.Stats().Panics)
	}
}

func TestSlowConsumerIsClosed(t *testing.T) {
	// The floods are posted to the loop's own inbox from one callback: an
	// inbox big enough for them leaves the backlog check to act.
	s := startServer(t, Config{MaxOutboundBytes: 256 << 10, MaxLoopInboxBytes: 1 << 30}, &echoHandler{})
	slow, _ := dialWS(t, s)
	other, otherR := dialWS(t, s)
	// 64 MiB towards a client that never reads: the kernel buffers take a few
	// MiB, the rest must not pile up in the server.
	for range 64 {
		_, _ = slow.Write(clientFrame(true, ws.OpText, []byte("flood:64")))
	}
	deadline := time.Now().Add(10 * time.Second)
	for s.Stats().SlowConsumers == 0 {
		if time.Now().After(deadline) {
			t.Fatal("slow consumer was not closed")
		}
		time.Sleep(20 * time.Millisecond)
	}
	_, _ = other.Write(clientFrame(true, ws.OpText, []byte("ok")))
	if got := readText(t, otherR); got != "ok" {
		t.Fatalf("got %q", got)
	}
}

// A client that asks for far more than MaxOutboundBytes and reads it is not
// a slow consumer.
func TestRequestedBurstIsNotCut(t *testing.T) {
	s := startServer(t, Config{MaxOutboundBytes: 256 << 10, MaxRequestedBytes: 64 << 20}, &echoHandler{})
	c, br := dialWS(t, s)
	// 8 MiB written on the loop in one callback, 8 MiB more through the inbox.
	_, _ = c.Write(clientFrame(true, ws.OpText, []byte("burst:512")))
	_, _ = c.Write(clientFrame(true, ws.OpText, []byte("burstsend:512")))
	counts := map[byte]int{}
	for range 1024 {
		counts[readText(t, br)[0]]++
	}
	if counts['b'] != 512 || counts['s'] != 512 {
		t.Fatalf("got %v frames, want 512 of each", counts)
	}
	if n := s.Stats().SlowConsumers; n != 0 {
		t.Fatalf("%d slow consumers", n)
	}
}

// Frames the socket takes only in part leave in order and whole: the rest of
// a writev is buffered and written when the client reads again.
func TestPartialWritesKeepOrder(t *testing.T) {
	s := startServer(t, Config{MaxRequestedBytes: 64 << 20}, &echoHandler{})
	c, br := dialWS(t, s)
	const n = 12000 // about 12 MB: more than the socket buffers hold
	_, _ = c.Write(clientFrame(true, ws.OpText, []byte("numbered:"+strconv.Itoa(n))))
	time.Sleep(200 * time.Millisecond) // let the socket fill
	for i := range n {
		got := readText(t, br)
		num, rest, _ := strings.Cut(got, " ")
		if num != strconv.Itoa(i) || len(rest) != 700+i%613 || strings.Trim(rest, "n") != "" {
			t.Fatalf("frame %d: got %.20q… (%d bytes)", i, got, len(got))
		}
	}
	if n := s.Stats().SlowConsumers; n != 0 {
		t.Fatalf("%d slow consumers", n)
	}
}

// Asking for a burst does not protect a client that stops reading: the live
// traffic behind it still counts at once.
func TestRequestedBurstThenStopReadingIsCut(t *testing.T) {
	s := startServer(t, Config{MaxOutboundBytes: 256 << 10, MaxRequestedBytes: 64 << 20, MaxLoopInboxBytes: 1 << 30}, &echoHandler{})
	slow, _ := dialWS(t, s)
	other, otherR := dialWS(t, s)
	_, _ = slow.Write(clientFrame(true, ws.OpText, []byte("burst:512")))
	// Live traffic towards a client that never reads: each flood is 1 MiB.
	deadline := time.Now().Add(10 * time.Second)
	floods := 0
	for s.Stats().SlowConsumers == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("not cut after %d MiB of live traffic", floods)
		}
		if floods < 64 {
			if _, err := slow.Write(clientFrame(true, ws.OpText, []byte("flood:64"))); err == nil {
				floods++
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("cut after %d MiB of live traffic", floods)
	_, _ = other.Write(clientFrame(true, ws.OpText, []byte("ok")))
	if got := readText(t, otherR); got != "ok" {
		t.Fatalf("got %q", got)
	}
}

// A request bigger than the allowance is a slow consumer, as before.
func TestRequestedBurstOverCapIsCut(t *testing.T) {
	s := startServer(t, Config{MaxOutboundBytes: 256 << 10, MaxRequestedBytes: 1 << 20}, &echoHandler{})
	c, _ := dialWS(t, s)
	_, _ = c.Write(clientFrame(true, ws.OpText, []byte("burst:512")))
	deadline := time.Now().Add(5 * time.Second)
	for s.Stats().SlowConsumers == 0 {
		if time.Now().After(deadline) {
			t.Fatal("an 8 MiB request over a 1 MiB allowance was not cut")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestConnectionCap(t *testing.T) {
	s := startServer(t, Config{MaxConnections: 2}, &echoHandler{})
	dialWS(t, s)
	dialWS(t, s)
	c := dialRaw(t, s)
	_, _ = c.Write([]byte(upgradeRequest))
	if resp := readUpgrade(t, bufio.NewReader(c)); resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("status %d, want 503", resp.StatusCode)
	}
}

func TestDeadlines(t *testing.T) {
	s := startServer(t, Config{HandshakeTimeout: time.Second, PingInterval: time.Second, IdleTimeout: 3 * time.Second}, &echoHandler{})
	// A connection that never sends its request is dropped.
	silent := dialRaw(t, s)
	start := time.Now()
	if _, err := silent.Read(make([]byte, 1)); err == nil {
		t.Fatal("handshake deadline: connection still open")
	}
	if d := time.Since(start); d > 4*time.Second {
		t.Fatalf("handshake deadline took %v", d)
	}
	// An upgraded connection that stays silent is pinged, then closed.
	_, br := dialWS(t, s)
	h, err := ws.ReadHeader(br)
	if err != nil || h.OpCode != ws.OpPing {
		t.Fatalf("want a ping, got %+v %v", h, err)
	}
	expectClose(t, br, CloseGoingAway)
}

func BenchmarkDeliverDrain(b *testing.B) {
	l := NewDetachedLoop()
	conns := make([]*Conn, 100)
	for i := range conns {
		conns[i] = l.NewConn("")
	}
	frame := TextFrame(bytes.Repeat([]byte("m"), 180))
	b.ReportAllocs()
	for b.Loop() {
		// One burst of 8 messages to 100 connections on one loop: one drain,
		// one writev per connection.
		for range 8 {
			l.mu.Lock()
			l.inbox = append(l.inbox, delivery{frame: frame, to: conns})
			l.mu.Unlock()
		}
		_ = l.runDrain(context.Background())
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*800), "ns/delivery")
}

// A frame, or a fragmented message, that does not complete within the frame
// deadline closes its connection with 1008, however steadily bytes arrive.
func TestFrameDeadline(t *testing.T) {
	s := startServer(t, Config{FrameTimeout: time.Second}, &echoHandler{})
	for _, tc := range []struct {
		name  string
		start []byte
		more  []byte
	}{
		{"frame", rawHeader(0x81, 0x80|126, []byte{0x10, 0x00}, true), []byte("x")},
		{"message", clientFrame(false, ws.OpText, []byte("x")), clientFrame(false, ws.OpContinuation, []byte("x"))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, br := dialWS(t, s)
			_, _ = c.Write(tc.start)
			done := make(chan struct{})
			defer close(done)
			go func() {
				for {
					select {
					case <-done:
						return
					case <-time.After(100 * time.Millisecond):
					}
					if _, err := c.Write(tc.more); err != nil {
						return
					}
				}
			}()
			start := time.Now()
			expectClose(t, br, ClosePolicyViolation)
			if d := time.Since(start); d > 3*time.Second {
				t.Fatalf("closed after %v, want about 1 s", d)
			}
		})
	}
}

// A client still sending when its frame is refused gets the close frame and
// then the server's FIN, not a reset: the server stops reading and lingers
// instead of closing a socket with unread input.
func TestRefusedFrameClosesWithoutReset(t *testing.T) {
	s := startServer(t, Config{MaxMessageSize: 1 << 10}, &echoHandler{})
	c, br := dialWS(t, s)
	big := append(rawHeader(0x81, 0x80|127, binary.BigEndian.AppendUint64(nil, 8<<20), true), make([]byte, 8<<20)...)
	if _, err := c.Write(big); err != nil {
		t.Fatalf("write reset: %v", err)
	}
	expectClose(t, br, CloseTooBig)
	_, _ = c.Write(clientFrame(true, ws.OpClose, []byte{0x03, 0xf1}))
	if n, err := io.Copy(io.Discard, br); err != nil || n != 0 {
		t.Fatalf("after the close frame: %d bytes, %v; want a clean end of stream", n, err)
	}
	// Once the peer closes, so does the server: at once, not after the linger.
	c.Close()
	deadline := time.Now().Add(time.Second)
	for s.Stats().Connections != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d connections still open after the peer closed", s.Stats().Connections)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A peer that never closes after the server's close is dropped after the
// linger.
func TestLingerEnds(t *testing.T) {
	s := startServer(t, Config{}, &echoHandler{})
	c, br := dialWS(t, s)
	_, _ = c.Write([]byte{0xc1, 0x80, 0, 0, 0, 0}) // reserved bits
	expectClose(t, br, CloseProtocolError)
	start := time.Now()
	for s.Stats().Connections != 0 {
		if time.Since(start) > closeLinger+3*time.Second {
			t.Fatalf("still open %v after the close", time.Since(start))
		}
		time.Sleep(50 * time.Millisecond)
	}
	if d := time.Since(start); d < closeLinger/2 {
		t.Fatalf("closed after %v, before the linger", d)
	}
}

// A second server on a port that is served fails to start, as it would
// without SO_REUSEPORT, instead of sharing the first one's clients.
func TestPortServedOnce(t *testing.T) {
	s := startServer(t, Config{}, &echoHandler{})
	second := New(Config{Addr: s.cfg.Addr, Logger: s.log}, &echoHandler{})
	done := make(chan error, 1)
	go func() { done <- second.Run() }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "already served") {
			t.Fatalf("second server on %s: %v", s.cfg.Addr, err)
		}
	case <-second.Ready():
		_ = second.Stop(context.Background())
		t.Fatalf("a second server started on %s", s.cfg.Addr)
	case <-time.After(5 * time.Second):
		t.Fatal("second server neither started nor failed")
	}
}

// BenchmarkCoalescedWrite is the write of one subscriber's held frames: 30
// frames of 290 bytes in one writev, as fan-out at 10k msg/s gives each
// connection. The writev allocates nothing (x/sys/unix.Writev allocated its
// iovec array, 834 B/op); the two allocations per op are gnet's Execute,
// queueing the Run on the loop.
func BenchmarkCoalescedWrite(b *testing.B) {
	const frames, size = 30, 290
	h := &echoHandler{}
	s := startServer(b, Config{WriteCoalesce: -1}, h)
	_, br := dialWS(b, s)
	h.mu.Lock()
	c := h.last
	h.mu.Unlock()

	frame := TextFrame(bytes.Repeat([]byte("x"), size-4))
	perOp := frames * len(frame)
	arrived := make(chan struct{}, 1)
	go func() {
		buf := make([]byte, 64<<10)
		got := 0
		for {
			n, err := br.Read(buf)
			if err != nil {
				return
			}
			if got += n; got >= perOp {
				got -= perOp
				arrived <- struct{}{}
			}
		}
	}()
	write := func() {
		for range frames {
			c.Write(frame)
		}
	}
	b.SetBytes(int64(perOp))
	b.ReportAllocs()
	for b.Loop() {
		c.Run(write)
		<-arrived
	}
}
