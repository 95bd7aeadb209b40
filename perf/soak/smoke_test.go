package soak

import (
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/arqonbus/arqonbus/internal/procnet"
)

// TestSoakSmoke runs the whole soak for 15 s against a real server built from ./cmd/arqonbus:
// every workload must run (deliveries, commands, history, rejoins with replays, churn, garbage)
// and find no violation. Growth is not judged here (15 s say nothing about it); `make soak`
// does that. Skipped with -short.
func TestSoakSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a server and drives it for 15 s")
	}
	bin := buildServer(t)
	addr, httpAddr, pid := startServer(t, bin)

	cfg := DefaultConfig()
	cfg.URL = "ws://" + addr + "/"
	cfg.MetricsURL = "http://" + httpAddr + "/metrics"
	cfg.ServerPID = pid
	cfg.Duration, cfg.Interval, cfg.Warmup = 15*time.Second, 5*time.Second, 5*time.Second
	cfg.OutDir = t.TempDir()
	cfg.ChatChannels, cfg.ChatMembers, cfg.ChatPublishers, cfg.ChatRate = 2, 8, 2, 10
	cfg.Rejoiners, cfg.RejoinEvery, cfg.RejoinAway = 2, 3*time.Second, 500*time.Millisecond
	cfg.BulkMembers, cfg.BulkRate = 2, 5
	cfg.Handlers, cfg.Requesters, cfg.CommandRate = 1, 2, 10
	cfg.HistoryRate, cfg.ChurnChannelRate, cfg.ChurnConnRate = 2, 5, 2
	cfg.Stalled, cfg.StalledLife = 1, 10*time.Second
	cfg.Garbage, cfg.GarbageEvery = 1, 300*time.Millisecond

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out bytes.Buffer
	rep, err := Run(ctx, cfg, &out)
	t.Logf("soak output:\n%s", out.String())
	if err != nil {
		t.Fatal(err)
	}
	if n := len(rep.Samples); n != 4 {
		t.Errorf("%d lines, want 4 (the baseline and one per 5 s)", n)
	}
	tot := rep.Total
	for _, name := range []string{"delivered", "published", "commands_ok", "history_reads", "rejoins",
		"reconnects", "replayed", "churn_channels", "churn_connections", "stalled_started"} {
		if tot[name] == 0 {
			t.Errorf("%s = 0: that workload did not run", name)
		}
	}
	if tot["garbage_sent"] < int64(len(garbageKinds)) {
		t.Errorf("garbage_sent = %d, want every kind (%d) at least once", tot["garbage_sent"], len(garbageKinds))
	}
	if v := rep.Verdict; !v.Correct || v.ServerExited {
		t.Errorf("violations or server exit: %q", v.Reasons)
	}
	last := rep.Samples[len(rep.Samples)-1]
	if last.RSS <= 0 || last.FDs <= 0 || last.Goroutines <= 0 || last.Channels <= 0 {
		t.Errorf("server figures not read: %+v", last)
	}
	for _, f := range []string{"minutes.txt", "minutes.jsonl", "summary.json"} {
		if st, err := os.Stat(filepath.Join(cfg.OutDir, f)); err != nil || st.Size() == 0 {
			t.Errorf("%s: %v (empty or missing)", f, err)
		}
	}
}

// buildServer builds ./cmd/arqonbus (with -race under ARQONBUS_E2E_RACE=1, as make test does).
func buildServer(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "arqonbus")
	args := []string{"build", "-o", bin}
	if os.Getenv("ARQONBUS_E2E_RACE") == "1" {
		args = append(args, "-race")
	}
	args = append(args, "./cmd/arqonbus")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", args...)
	_, file, _, _ := runtime.Caller(0)
	cmd.Dir = filepath.Join(filepath.Dir(file), "..", "..")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/arqonbus: %v\n%s", err, out)
	}
	return bin
}

// startServer starts bin on free loopback ports and waits until it accepts; the server is
// stopped (SIGTERM, then SIGKILL) at the end of the test.
func startServer(t *testing.T, bin string) (addr, httpAddr string, pid int) {
	t.Helper()
	for attempt := 0; attempt < 3; attempt++ {
		ports := freePorts(t, 3)
		addr = "127.0.0.1:" + strconv.Itoa(ports[0])
		httpAddr = "127.0.0.1:" + strconv.Itoa(ports[1])
		cmd := exec.Command(bin, "--host", "127.0.0.1", "--port", strconv.Itoa(ports[0]),
			"--http-port", strconv.Itoa(ports[1]), "--telemetry-port", strconv.Itoa(ports[2]),
			"--log-level", "warn", "--shutdown-timeout", "3s")
		var logs bytes.Buffer
		cmd.Stdout, cmd.Stderr = &logs, &logs
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan struct{})
		go func() { cmd.Wait(); close(exited) }()
		stop := func() {
			cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-exited:
			case <-time.After(6 * time.Second):
				cmd.Process.Kill()
				<-exited
			}
		}
		deadline := time.Now().Add(15 * time.Second)
	wait:
		for time.Now().Before(deadline) {
			select {
			case <-exited:
				t.Logf("server exited during start-up (port taken?):\n%s", logs.String())
				break wait
			default:
			}
			c, err := net.DialTimeout("tcp", addr, time.Second)
			if err == nil {
				c.Close()
			}
			// Accepting is not enough: another test's server may have taken the port.
			if err == nil && procnet.ListensOn(cmd.Process.Pid, ports[0]) {
				t.Cleanup(func() {
					stop()
					if logs.Len() > 0 {
						t.Logf("server log:\n%s", logs.String())
					}
				})
				return addr, httpAddr, cmd.Process.Pid
			}
			time.Sleep(50 * time.Millisecond)
		}
		stop()
	}
	t.Fatal("the server did not start")
	return
}

func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports
}
