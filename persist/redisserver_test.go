package persist

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/rueidis"
)

// testRedis is a redis-server of the test's own, on a free loopback port, in t.TempDir().
type testRedis struct {
	t      testing.TB
	bin    string
	port   int
	dir    string
	extra  []string
	cmd    *exec.Cmd
	exited chan struct{}
}

// newTestRedis reserves a port and a directory; start runs the server. Without redis-server the test
// is skipped, or fails under CI=true.
func newTestRedis(t testing.TB, extra ...string) *testRedis {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("redis-server not found: run scripts/install-test-deps.sh")
		}
		t.Skip("redis-server not found (scripts/install-test-deps.sh installs it)")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	r := &testRedis{t: t, bin: bin, port: port, dir: t.TempDir(), extra: extra}
	t.Cleanup(r.kill)
	return r
}

// startTestRedis returns a running server.
func startTestRedis(t testing.TB, extra ...string) *testRedis {
	r := newTestRedis(t, extra...)
	r.start()
	return r
}

func (r *testRedis) URL() string { return fmt.Sprintf("redis://127.0.0.1:%d", r.port) }

func (r *testRedis) start() {
	r.t.Helper()
	args := append([]string{
		"--port", strconv.Itoa(r.port), "--bind", "127.0.0.1", "--save", "", "--dir", r.dir,
		"--logfile", filepath.Join(r.dir, "redis.log"),
	}, r.extra...)
	if !containsArg(args, "--appendonly") {
		args = append(args, "--appendonly", "no")
	}
	cmd := exec.Command(r.bin, args...)
	if err := cmd.Start(); err != nil {
		r.t.Fatalf("start redis-server: %v", err)
	}
	r.cmd, r.exited = cmd, make(chan struct{})
	go func(exited chan struct{}) {
		cmd.Wait()
		close(exited)
	}(r.exited)
	deadline := time.Now().Add(10 * time.Second)
	for !r.answersPing() {
		select {
		case <-r.exited:
			log, _ := os.ReadFile(filepath.Join(r.dir, "redis.log"))
			r.t.Fatalf("redis-server exited at start:\n%s", log)
		default:
		}
		if time.Now().After(deadline) {
			r.kill()
			r.t.Fatal("redis-server did not answer PING within 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func containsArg(args []string, a string) bool {
	for _, x := range args {
		if x == a {
			return true
		}
	}
	return false
}

func (r *testRedis) answersPing() bool {
	c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", r.port), 200*time.Millisecond)
	if err != nil {
		return false
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(500 * time.Millisecond))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return false
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return err == nil && strings.HasPrefix(line, "+PONG")
}

// kill stops the server with SIGKILL and waits for it to exit.
func (r *testRedis) kill() {
	if r.cmd == nil {
		return
	}
	r.cmd.Process.Signal(syscall.SIGKILL)
	<-r.exited
	r.cmd = nil
}

// client returns a plain rueidis client on the server, closed at cleanup.
func (r *testRedis) client() rueidis.Client {
	r.t.Helper()
	c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{fmt.Sprintf("127.0.0.1:%d", r.port)}, DisableCache: true})
	if err != nil {
		r.t.Fatalf("test client: %v", err)
	}
	r.t.Cleanup(c.Close)
	return c
}

// stream reads a whole stream straight from Redis.
func (r *testRedis) stream(c rueidis.Client, key string) []Entry {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	es, err := parseEntries(c.Do(ctx, c.B().Xrange().Key(key).Start("-").End("+").Build()), false)
	if err != nil {
		r.t.Fatalf("XRANGE %s: %v", key, err)
	}
	return es
}

// waitFor polls cond every 10ms until it holds or timeout passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
