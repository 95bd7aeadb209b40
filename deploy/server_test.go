package deploy

// The real server for the deploy checks: built once per test run, started on
// free loopback ports, stopped with SIGTERM at cleanup.

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	buildOnce sync.Once
	builtBin  string
	buildErr  error
	buildDir  string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// serverBin builds ./cmd/arqonbus once (the first test that needs it pays).
func serverBin(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "arqonbus-deploy-")
		if buildErr != nil {
			return
		}
		builtBin = filepath.Join(buildDir, "arqonbus")
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "go", "build", "-o", builtBin, "./cmd/arqonbus")
		cmd.Dir = ".."
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build ./cmd/arqonbus: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return builtBin
}

// lockedBuffer collects a process's output while tests read it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// node is one running server.
type node struct {
	Port, HTTPPort, TelemetryPort int
	cmd                           *exec.Cmd
	out                           *lockedBuffer
	exited                        chan struct{}
}

func (n *node) httpURL(path string) string {
	return "http://127.0.0.1:" + strconv.Itoa(n.HTTPPort) + path
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startNode runs argv (the binary, or a wrapper such as strace followed by
// the binary) with env on free ports, waits for /ready, and stops it at
// cleanup. A start that loses a port race is retried.
func startNode(t testing.TB, argv []string, env ...string) *node {
	t.Helper()
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		n := &node{Port: freePort(t), HTTPPort: freePort(t), TelemetryPort: freePort(t), out: &lockedBuffer{}, exited: make(chan struct{})}
		n.cmd = exec.Command(argv[0], argv[1:]...)
		n.cmd.Env = append(os.Environ(),
			"ARQONBUS_HOST=127.0.0.1",
			"ARQONBUS_PORT="+strconv.Itoa(n.Port),
			"ARQONBUS_HTTP_PORT="+strconv.Itoa(n.HTTPPort),
			"ARQONBUS_TELEMETRY_PORT="+strconv.Itoa(n.TelemetryPort),
		)
		n.cmd.Env = append(n.cmd.Env, env...)
		n.cmd.Stdout, n.cmd.Stderr = n.out, n.out
		n.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := n.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go func() {
			_ = n.cmd.Wait()
			close(n.exited)
		}()
		if err := n.waitReady(20 * time.Second); err != nil {
			n.kill()
			lastErr = err
			continue
		}
		t.Cleanup(func() {
			n.stop(10 * time.Second)
			if t.Failed() {
				t.Logf("server output:\n%s", n.out)
			}
		})
		return n
	}
	t.Fatalf("server did not start: %v", lastErr)
	return nil
}

func (n *node) waitReady(d time.Duration) error {
	deadline := time.Now().Add(d)
	c := http.Client{Timeout: time.Second}
	for {
		select {
		case <-n.exited:
			return fmt.Errorf("exited at start:\n%s", n.out)
		default:
		}
		if resp, err := c.Get(n.httpURL("/ready")); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("/ready not 200 within %s:\n%s", d, n.out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop sends SIGTERM and waits up to d, then kills. It reports whether the
// process ended by itself.
func (n *node) stop(d time.Duration) bool {
	select {
	case <-n.exited:
		return true
	default:
	}
	_ = n.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-n.exited:
		return true
	case <-time.After(d):
		n.kill()
		return false
	}
}

func (n *node) kill() {
	_ = n.cmd.Process.Kill()
	<-n.exited
}

// get fetches url and fails the test unless it answers 200.
func get(t testing.TB, url string) []byte {
	t.Helper()
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %v\n%s", url, resp.StatusCode, err, b)
	}
	return b
}
