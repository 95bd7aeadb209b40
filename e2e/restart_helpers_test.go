package e2e

import (
	"testing"
	"time"
)

// kill ends the process with SIGKILL, as a crash would: no drain, no
// goodbye to its clients, nothing flushed.
func (s *server) kill() {
	if !s.Alive() {
		return
	}
	_ = s.cmd.Process.Kill()
	<-s.exited
}

// restartServer starts a new server on old's ports (old must have exited),
// with env, so that clients reconnecting to the same address find it. It
// retries while the ports are still being released.
func restartServer(t testing.TB, old *server, env ...string) *server {
	t.Helper()
	if old.Alive() {
		t.Fatal("restartServer: the old server is still running")
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		s, err := tryStartOn(t, old.Port, old.HTTPPort, old.TelemetryPort, env)
		if err == nil {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("restart on port %d: %v", old.Port, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
