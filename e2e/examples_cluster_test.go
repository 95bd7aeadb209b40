package e2e

// examples/cluster/run.sh, quickstart Scenario 5 on one machine: a Redis,
// three nodes and HAProxy from deploy/haproxy/arqonbus.cfg. --check runs its
// self-test through the balancer; without it the script runs until Ctrl-C
// and then leaves nothing behind.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// clusterExampleEnv gives the script free loopback ports and the e2e binary.
func clusterExampleEnv(t *testing.T) []string {
	t.Helper()
	if buildErr != nil {
		t.Fatalf("server binary not available: %v", buildErr)
	}
	haproxyBin(t) // skips (or fails under CI) without haproxy
	if _, err := exec.LookPath("redis-server"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("redis-server not found: run scripts/install-test-deps.sh")
		}
		t.Skip("redis-server not found")
	}
	ports := func(n int) string {
		var ps []string
		for i := 0; i < n; i++ {
			ps = append(ps, strconv.Itoa(freePort(t)))
		}
		return strings.Join(ps, " ")
	}
	return append(os.Environ(),
		"ARQONBUS_BIN="+binPath,
		"LB_PORT="+ports(1),
		"STATS_PORT="+ports(1),
		"REDIS_PORT="+ports(1),
		"NODE_PORTS="+ports(3),
		"NODE_HTTP_PORTS="+ports(3),
		"NODE_TELEMETRY_PORTS="+ports(3),
		// The nodes stop at once when the script ends (no balancer to warn).
		"ARQONBUS_DRAIN_GRACE=0s",
	)
}

// startClusterExample starts the script in its own process group (as a
// shell would), killed whole at cleanup whatever happened.
// The reader ends once the script has exited; waited is closed then too.
func startClusterExample(t *testing.T, ctx context.Context, args ...string) (cmd *exec.Cmd, out io.Reader, waited chan struct{}) {
	t.Helper()
	cmd = exec.CommandContext(ctx, "bash", append([]string{filepath.Join(repoRoot, "examples", "cluster", "run.sh")}, args...)...)
	cmd.Env = clusterExampleEnv(t)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) })
	waited = make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(waited)
		pw.Close()
	}()
	return cmd, pr, waited
}

// TestExamplesClusterCheck runs `examples/cluster/run.sh --check`.
func TestExamplesClusterCheck(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	start := time.Now()
	cmd, out, waited := startClusterExample(t, ctx, "--check")
	b, _ := io.ReadAll(out)
	<-waited
	err := cmd.ProcessState
	if err == nil || !err.Success() {
		t.Fatalf("run.sh --check: %v (after %s)\n%s", err, time.Since(start).Round(time.Millisecond), b)
	}
	text := string(b)
	for _, want := range []string{
		`"nodes":3`, // /health of each node shows the cluster
		"arqonbus_active_clients 0",
		"delivered on node2", "delivered on node3",
		"private message from the client on node3 delivered to the client on node1",
		"check: OK",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("output lacks %q:\n%s", want, text)
		}
	}
	t.Logf("run.sh --check took %s", time.Since(start).Round(time.Millisecond))
}

// TestExamplesClusterInterrupt starts the script without --check, waits for
// it to be up, then does what Ctrl-C does (SIGINT to the whole foreground
// process group): it must exit 130 with every process it started gone and
// the client port free.
func TestExamplesClusterInterrupt(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd, out, waited := startClusterExample(t, ctx)
	var lb string
	for _, kv := range cmd.Env {
		if v, ok := strings.CutPrefix(kv, "LB_PORT="); ok {
			lb = "127.0.0.1:" + v
		}
	}
	var log strings.Builder
	sc := bufio.NewScanner(out)
	up := false
	for sc.Scan() {
		log.WriteString(sc.Text() + "\n")
		if strings.Contains(sc.Text(), "running; Ctrl-C stops everything") {
			up = true
			break
		}
	}
	if !up {
		t.Fatalf("the script ended before it was up:\n%s", log.String())
	}
	if c, err := net.DialTimeout("tcp", lb, 2*time.Second); err != nil {
		t.Fatalf("balancer %s not accepting: %v", lb, err)
	} else {
		c.Close()
	}
	pgid := cmd.Process.Pid
	if err := syscall.Kill(-pgid, syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		for sc.Scan() {
			log.WriteString(sc.Text() + "\n")
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatalf("the script did not end within 30s of SIGINT:\n%s", log.String())
	}
	<-waited
	if code := cmd.ProcessState.ExitCode(); code != 130 {
		t.Errorf("exit code %d after SIGINT, want 130:\n%s", code, log.String())
	}
	// Nothing of the group is left, and the port is free again.
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := syscall.Kill(-pgid, 0)
		if errors.Is(err, syscall.ESRCH) {
			break
		}
		if time.Now().After(deadline) {
			ps, _ := exec.Command("ps", "-o", "pid,pgid,args", "-g", fmt.Sprint(pgid)).CombinedOutput()
			t.Fatalf("processes of the script still running after it exited:\n%s", ps)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if c, err := net.DialTimeout("tcp", lb, time.Second); err == nil {
		c.Close()
		t.Errorf("something still accepts on the balancer port %s", lb)
	}
}
