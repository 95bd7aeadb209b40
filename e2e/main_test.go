// Package e2e runs the real arqonbus binary on loopback and talks to it the
// way users do: Go clients, raw WebSocket frames, Node's ws package and a
// headless Chromium running the quickstart's JavaScript.
//
// Run with `go test -race ./e2e/`; scripts/install-test-deps.sh installs
// chromium and e2e/node/node_modules for the browser and Node tests.
package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/arqonbus/arqonbus/client"
	"github.com/arqonbus/arqonbus/internal/procnet"
)

var (
	// binPath is the server binary TestMain built; buildErr says why it is missing.
	binPath  string
	buildErr error
	// repoRoot is the module root (the parent of e2e/).
	repoRoot string
)

// TestMain builds ./cmd/arqonbus once for every test in the package: each test
// then starts its own server process on fresh ports, so tests stay isolated
// without paying for a build each.
// builtHead is git HEAD when TestMain built the binary ("" outside a checkout): what /version must name,
// even if a commit lands while the tests run.
var builtHead string

func TestMain(m *testing.M) {
	wd, err := os.Getwd()
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		os.Exit(2)
	}
	repoRoot = filepath.Dir(wd)
	tmp, err := os.MkdirTemp("", "arqonbus-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		os.Exit(2)
	}
	binPath = filepath.Join(tmp, "arqonbus")
	args := []string{"build", "-o", binPath}
	// Stamped as the Makefile stamps bin/arqonbus, so that TestVersionIsStamped checks what users get.
	if flags, err := exec.Command("bash", filepath.Join(repoRoot, "scripts", "ldflags.sh")).Output(); err == nil {
		args = append(args, "-ldflags", strings.TrimSpace(string(flags)))
	}
	if head, err := exec.Command("git", "-C", repoRoot, "rev-parse", "--short=12", "HEAD").Output(); err == nil {
		builtHead = strings.TrimSpace(string(head))
	}
	// ARQONBUS_E2E_RACE=1 builds the server with the race detector, so the
	// end-to-end traffic also hunts data races in the server.
	if os.Getenv("ARQONBUS_E2E_RACE") == "1" {
		args = append(args, "-race")
	}
	args = append(args, "./cmd/arqonbus")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = repoRoot
	if out, err := cmd.CombinedOutput(); err != nil {
		// Not fatal here: every test that needs the server fails with this
		// message, and tests that do not need it still run.
		buildErr = fmt.Errorf("go build ./cmd/arqonbus: %v\n%s", err, out)
		binPath = ""
	}
	cancel()
	code := m.Run()
	os.RemoveAll(tmp)
	os.Exit(code)
}

// server is one running arqonbus process.
type server struct {
	Port, HTTPPort, TelemetryPort int
	Addr                          string // 127.0.0.1:Port
	URL                           string // ws://127.0.0.1:Port/
	HTTPURL                       string // http://127.0.0.1:HTTPPort

	cmd    *exec.Cmd
	out    *syncBuffer
	exited chan struct{}
}

// syncBuffer collects the server's output from the exec pipe goroutine while
// tests read it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Output is what the server printed so far (stdout and stderr).
func (s *server) Output() string { return s.out.String() }

// Alive reports whether the process is still running.
func (s *server) Alive() bool {
	select {
	case <-s.exited:
		return false
	default:
		return true
	}
}

// freePort asks the kernel for an unused loopback port. The port is free
// again when we return it; a server that loses the race to another process
// is retried by startServer.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// testLoops gives every test server two event loops, also on a two-CPU
// machine where the default is one: frames that cross from one loop to
// another take the paths every larger machine takes, and a test may still
// say otherwise (the last setting of a variable wins).
const testLoops = "ARQONBUS_LOOPS=2"

// startServer runs the binary on free loopback ports with extra environment
// (KEY=VALUE) and waits until its WebSocket port accepts. At cleanup it sends
// SIGTERM, then SIGKILL after 3 s; the server's output goes to the test log
// if the test failed.
func startServer(t testing.TB, env ...string) *server {
	t.Helper()
	if buildErr != nil {
		t.Fatalf("server binary not available: %v", buildErr)
	}
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		s, err := tryStart(t, env)
		if err == nil {
			return s
		}
		lastErr = err
	}
	t.Fatalf("server did not start: %v", lastErr)
	return nil
}

func tryStart(t testing.TB, env []string) (*server, error) {
	return tryStartOn(t, freePort(t), freePort(t), freePort(t), env)
}

// tryStartOn is tryStart on the given ports.
func tryStartOn(t testing.TB, port, httpPort, telemetryPort int, env []string) (*server, error) {
	s := &server{
		Port:          port,
		HTTPPort:      httpPort,
		TelemetryPort: telemetryPort,
		out:           &syncBuffer{},
		exited:        make(chan struct{}),
	}
	s.Addr = "127.0.0.1:" + strconv.Itoa(s.Port)
	s.URL = "ws://" + s.Addr + "/"
	s.HTTPURL = "http://127.0.0.1:" + strconv.Itoa(s.HTTPPort)

	s.cmd = exec.Command(binPath,
		"--host", "127.0.0.1",
		"--port", strconv.Itoa(s.Port),
		"--http-port", strconv.Itoa(s.HTTPPort),
		"--telemetry-port", strconv.Itoa(s.TelemetryPort),
	)
	// The test's own ARQONBUS_* settings must not leak into the server: each
	// test states the configuration it relies on.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "ARQONBUS_") {
			s.cmd.Env = append(s.cmd.Env, kv)
		}
	}
	s.cmd.Env = append(s.cmd.Env, testLoops)
	s.cmd.Env = append(s.cmd.Env, env...)
	s.cmd.Stdout = s.out
	s.cmd.Stderr = s.out
	// If the test binary dies without cleanup (panic, -timeout), the kernel
	// kills the server too instead of leaving it holding ports.
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		_ = s.cmd.Wait()
		close(s.exited)
	}()

	deadline := time.Now().Add(10 * time.Second)
	for {
		// Accepting is not enough: between freePort and the server's listen, another test's
		// server may have taken the port (ours then exits, port taken), and the dial would
		// reach that one.
		c, err := net.DialTimeout("tcp", s.Addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			if procnet.ListensOn(s.cmd.Process.Pid, s.Port) {
				break
			}
		}
		if !s.Alive() {
			return nil, fmt.Errorf("exited before accepting (%v): %s", s.cmd.ProcessState, s.Output())
		}
		if time.Now().After(deadline) {
			s.stop()
			return nil, fmt.Errorf("port %d not accepting after 10s: %s", s.Port, s.Output())
		}
		time.Sleep(25 * time.Millisecond)
	}
	t.Cleanup(func() {
		s.stop()
		if t.Failed() {
			t.Logf("arqonbus output (port %d):\n%s", s.Port, s.Output())
		}
	})
	return s, nil
}

// stop ends the process: SIGTERM for a graceful drain, SIGKILL if it takes
// longer than 3 s (a hang at shutdown must not hang the suite).
func (s *server) stop() {
	if !s.Alive() {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(3 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.exited
	}
}

// testCtx is a context bounded well below the suite timeout.
func testCtx(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// dial connects a Go client and closes it at cleanup.
func dial(t testing.TB, s *server, opts ...client.Option) *client.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, s.URL, opts...)
	if err != nil {
		t.Fatalf("dial %s: %v", s.URL, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// expectNothing asserts that c receives nothing but ignorable server notices
// for d. Used to prove that something was not routed.
func expectNothing(t testing.TB, c *client.Conn, d time.Duration, why string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	for {
		env, err := c.Next(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			t.Errorf("%s: connection of %s failed: %v", why, c.ClientID(), err)
			return
		}
		if isNotice(env) {
			continue
		}
		t.Errorf("%s: %s received %s", why, c.ClientID(), env.Raw)
	}
}

// isNotice reports server notices every client may get at any time (SPEC:
// global notices are system envelopes on room "*").
func isNotice(env client.Envelope) bool {
	return env.Type == "system" && env.Room == "*"
}
