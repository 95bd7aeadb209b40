package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/arqonbus/arqonbus/client"
	"github.com/arqonbus/arqonbus/internal/redistest"
)

// buildGoExample builds ./examples/<pkg> into the test's temp dir.
func buildGoExample(t *testing.T, pkg string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), filepath.Base(pkg))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./examples/"+pkg)
	cmd.Dir = ".."
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./examples/%s: %v\n%s", pkg, err, out)
	}
	return bin
}

// TestExampleServiceGo runs examples/service/handler (Scenario 4's database
// service, Go) against a server with Redis storage and plays api_service
// with a Go Bus: the status command gets the service's answer, history of
// services:database holds the service's audit event for it (commands
// themselves are not stored; the handler publishes one event per answer),
// and after a server crash and restart the service is reachable again and
// the audit trail is still there.
func TestExampleServiceGo(t *testing.T) {
	bin := buildGoExample(t, "service/handler")
	r := redistest.Run(t)
	env := redisEnv(r, "ARQONBUS_PERSIST=sync")
	s := startServer(t, env...)
	ctx := testCtx(t, 60*time.Second)

	cmd := exec.Command(bin, "-url", s.URL)
	var stderr syncBuffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	lines := make(chan string, 16)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		exited <- cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		if t.Failed() {
			t.Logf("handler stderr:\n%s", stderr.String())
		}
	})
	select {
	case l := <-lines:
		if l != "ready" {
			t.Fatalf("handler's first line %q, want ready", l)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("handler did not print ready")
	}

	api := connectBus(t, s.URL, client.Config{ClientID: "api_service", ClientType: "service",
		Reconnect: client.Reconnect{MinDelay: 50 * time.Millisecond, MaxDelay: 300 * time.Millisecond}})
	want := []byte(`{"active_connections":15,"max_connections":100,"avg_response_time_ms":2.3}`)
	opts := client.CommandOptions{Room: "services", Channel: "database"}
	res, err := api.Command(ctx, "status", map[string]any{"check": "connection_pool"}, opts)
	if err != nil || !jsonEqual(res, want) {
		t.Fatalf("status answered %s, %v; want %s", res, err, want)
	}

	audits := func() []map[string]any {
		page, err := api.History(ctx, "services:database", client.HistoryOptions{Limit: 100})
		if err != nil {
			t.Fatalf("history: %v", err)
		}
		var out []map[string]any
		for _, e := range page.Entries {
			var p map[string]any
			_ = json.Unmarshal(e.Envelope.Payload, &p)
			if e.Envelope.From == "db_service" && p["event"] == "command_handled" {
				out = append(out, p)
			}
		}
		return out
	}
	a := audits()
	if len(a) != 1 || a[0]["command"] != "status" || a[0]["requester"] != "api_service" || a[0]["request_id"] == "" {
		t.Fatalf("audit trail after one status: %v", a)
	}

	// A crash: the service reconnects by itself and answers again; the
	// audit trail survives in Redis.
	s.kill()
	s = restartServer(t, s, env...)
	var lastErr error
	deadline := time.Now().Add(20 * time.Second)
	for {
		res, lastErr = api.Command(ctx, "status", nil, opts)
		if lastErr == nil && jsonEqual(res, want) {
			break
		}
		// Until the service has rejoined: the built-in status answers (it is
		// a built-in too), or the drop itself fails the call.
		var e *client.Error
		if lastErr != nil && !(errors.As(lastErr, &e) && e.Code == "COMMAND_NOT_FOUND") && !errors.Is(lastErr, client.ErrDisconnected) {
			t.Fatalf("status after the restart: %v", lastErr)
		}
		if time.Now().After(deadline) {
			t.Fatalf("service not back 20s after the restart: %s %v", res, lastErr)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if a := audits(); len(a) != 2 {
		t.Errorf("audit trail after the restart: %v", a)
	}

	// SIGTERM ends the service cleanly.
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("handler exit after SIGTERM: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("handler did not exit after SIGTERM")
	}
	if !strings.Contains(stderr.String(), "status from api_service") {
		t.Errorf("handler did not log the commands: %s", stderr.String())
	}
}
