package e2e

import (
	"syscall"
	"testing"
	"time"

	"github.com/arqonbus/arqonbus/client"
	"github.com/gobwas/ws"
)

// TestGracefulShutdown checks SPEC "Operations": on SIGTERM the server tells
// its clients (system notice, close 1001) and exits by itself.
func TestGracefulShutdown(t *testing.T) {
	s := startServer(t)
	c := dial(t, s, client.WithClientID("shutdown_watcher"))
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-c.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("client still connected 10 s after SIGTERM")
	}
	if code, reason := c.CloseCode(); code != ws.StatusGoingAway {
		t.Errorf("close on shutdown: %d %q, want 1001", code, reason)
	}
	sawNotice := false
	for {
		env, err := c.Next(testCtx(t, time.Second))
		if err != nil {
			break
		}
		if env.Type == "system" {
			sawNotice = true
		}
	}
	if !sawNotice {
		t.Errorf("no system notice before the shutdown close")
	}
	select {
	case <-s.exited:
		if !s.cmd.ProcessState.Success() {
			t.Errorf("server exit after SIGTERM: %v", s.cmd.ProcessState)
		}
	case <-time.After(10 * time.Second):
		t.Errorf("server still running 10 s after SIGTERM")
	}
}
