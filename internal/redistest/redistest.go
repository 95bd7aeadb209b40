// Package redistest runs a redis-server of a test's own: on a free loopback
// port, in the test's temp dir, killed (and restartable) at will, so that
// persistence tests exercise real outages.
package redistest

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/rueidis"
)

// Server is one redis-server process; Start and Kill may alternate, keeping
// its port and its data directory.
type Server struct {
	Port   int
	t      testing.TB
	bin    string
	dir    string
	extra  []string
	cmd    *exec.Cmd
	exited chan struct{}
}

// New reserves a port and a directory without starting the server. extra
// are redis-server arguments (for example --appendonly yes). Without
// redis-server the test is skipped, or fails under CI=true, where
// scripts/install-test-deps.sh must have installed it.
func New(t testing.TB, extra ...string) *Server {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("redis-server not found: run scripts/install-test-deps.sh")
		}
		t.Skip("redis-server not found (scripts/install-test-deps.sh installs it)")
	}
	s := &Server{Port: freePort(t), t: t, bin: bin, dir: t.TempDir(), extra: extra}
	t.Cleanup(s.Kill)
	return s
}

// freePort asks the kernel for an unused loopback port (free again when it
// returns).
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Run returns a started server.
func Run(t testing.TB, extra ...string) *Server {
	s := New(t, extra...)
	s.Start()
	return s
}

// URL is the server's redis:// URL.
func (s *Server) URL() string { return fmt.Sprintf("redis://127.0.0.1:%d", s.Port) }

// Addr is host:port.
func (s *Server) Addr() string { return fmt.Sprintf("127.0.0.1:%d", s.Port) }

// Start runs the server and waits until it answers PING.
func (s *Server) Start() {
	s.t.Helper()
	args := append([]string{
		"--port", strconv.Itoa(s.Port), "--bind", "127.0.0.1", "--save", "", "--dir", s.dir,
		"--logfile", filepath.Join(s.dir, "redis.log"),
	}, s.extra...)
	if !slices.Contains(args, "--appendonly") {
		args = append(args, "--appendonly", "no")
	}
	cmd := exec.Command(s.bin, args...)
	// Dies with the test process, even one killed by a timeout.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("start redis-server: %v", err)
	}
	s.cmd, s.exited = cmd, make(chan struct{})
	go func(exited chan struct{}) {
		_ = cmd.Wait()
		close(exited)
	}(s.exited)
	deadline := time.Now().Add(10 * time.Second)
	for !s.AnswersPing() {
		select {
		case <-s.exited:
			log, _ := os.ReadFile(filepath.Join(s.dir, "redis.log"))
			s.t.Fatalf("redis-server exited at start:\n%s", log)
		default:
		}
		if time.Now().After(deadline) {
			s.Kill()
			s.t.Fatal("redis-server did not answer PING within 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// AnswersPing reports whether the server answers PING now.
func (s *Server) AnswersPing() bool {
	c, err := net.DialTimeout("tcp", s.Addr(), 200*time.Millisecond)
	if err != nil {
		return false
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(500 * time.Millisecond))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return false
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return err == nil && strings.HasPrefix(line, "+PONG")
}

// Kill stops the server with SIGKILL, as an outage would, and waits for it.
func (s *Server) Kill() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGKILL)
	<-s.exited
	s.cmd = nil
}

// Client returns a plain rueidis client on the server, closed at cleanup.
func (s *Server) Client() rueidis.Client {
	s.t.Helper()
	c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{s.Addr()}, DisableCache: true})
	if err != nil {
		s.t.Fatalf("redis test client: %v", err)
	}
	s.t.Cleanup(c.Close)
	return c
}

// PID is the running server's process id (0 when stopped), for reading its CPU time.
func (s *Server) PID() int {
	if s.cmd == nil || s.cmd.Process == nil {
		return 0
	}
	return s.cmd.Process.Pid
}
