// Package deploy holds deployment files (haproxy, systemd, sysctl,
// prometheus, grafana); its tests keep them valid as the server and the
// tools move on.
package deploy

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"syscall"
	"testing"
	"time"
)

// haproxyBin finds haproxy: on PATH, or in /usr/sbin, where Debian puts it
// and which is not on every user's PATH. Without it the test is skipped, or
// fails under CI=true, where scripts/install-test-deps.sh must have run.
func haproxyBin(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("haproxy"); err == nil {
		return p
	}
	if p := "/usr/sbin/haproxy"; isExecutable(p) {
		return p
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("haproxy not found: run scripts/install-test-deps.sh")
	}
	t.Skip("haproxy not found (scripts/install-test-deps.sh installs it)")
	return ""
}

func isExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

// TestHAProxyConfig: deploy/haproxy/arqonbus.cfg passes `haproxy -c` and
// keeps the settings WebSockets and draining depend on.
func TestHAProxyConfig(t *testing.T) {
	cfg := filepath.Join("haproxy", "arqonbus.cfg")
	text, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []struct{ re, why string }{
		{`(?m)^\s*mode\s+http\s*$`, "WebSocket upgrades are proxied in mode http"},
		{`(?m)^\s*timeout\s+tunnel\s+\S+`, "without timeout tunnel, upgraded connections die at timeout client/server"},
		{`(?m)^\s*option\s+httpchk\s+GET\s+/ready\s*$`, "health checks must ask /ready, which turns 503 while a node drains"},
		{`(?m)^\s*server\s+\S+\s+\S+:9100\s+.*\bcheck\s+port\s+8080\b`, "servers are the nodes' client port 9100, checked on the HTTP port 8080"},
	} {
		if !regexp.MustCompile(want.re).Match(text) {
			t.Errorf("%s: no line matching %s (%s)", cfg, want.re, want.why)
		}
	}

	bin := haproxyBin(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "-c", "-f", cfg)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("haproxy -c -f %s: %v\n%s", cfg, err, out)
	}
	// -c also prints warnings with a zero exit: a warning here is a line
	// someone should fix, so fail on it too.
	if regexp.MustCompile(`(?m)^\[(WARNING|ALERT)\]`).Match(out) {
		t.Errorf("haproxy -c -f %s warns:\n%s", cfg, out)
	}
}
