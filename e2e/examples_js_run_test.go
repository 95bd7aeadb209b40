package e2e

// The JavaScript examples (examples/chat, examples/dashboard, examples/service/requester.mjs) run
// end to end against the real server. (Not named examples_js_test.go: a _js suffix makes Go build
// the file only for GOOS=js.)

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/arqonbus/arqonbus/client"
	"github.com/arqonbus/arqonbus/internal/redistest"
)

// exjsProc is an example program running, its output collected.
type exjsProc struct {
	cmd      *exec.Cmd
	out, err syncBuffer
	done     chan struct{}
}

// exjsStart starts name args in dir (its own process group, killed at the end of the test).
func exjsStart(t *testing.T, ctx context.Context, dir, name string, args ...string) *exjsProc {
	t.Helper()
	p := &exjsProc{done: make(chan struct{})}
	p.cmd = exec.CommandContext(ctx, name, args...)
	p.cmd.Dir = dir
	p.cmd.Stdout, p.cmd.Stderr = &p.out, &p.err
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	p.cmd.Cancel = func() error { return syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL) }
	p.cmd.WaitDelay = 2 * time.Second
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s %v: %v", name, args, err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
		if t.Failed() {
			t.Logf("%s stdout:\n%s\nstderr:\n%s", filepath.Base(args[0]), p.out.String(), p.err.String())
		}
	})
	return p
}

// waitFor waits until the output holds every one of want (each on one line).
func (p *exjsProc) waitFor(t *testing.T, d time.Duration, want ...string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		var missing []string
		out := p.out.String()
		for _, w := range want {
			if !strings.Contains(out, w) {
				missing = append(missing, w)
			}
		}
		if len(missing) == 0 {
			return
		}
		select {
		case <-p.done:
			t.Fatalf("exited (%v) without printing %q", p.cmd.ProcessState, missing)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %q within %v", missing, d)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestExampleChat drives examples/chat (Scenario 1) in two headless Chromium pages that chat, then
// kills and restarts the server: both pages reconnect by themselves and the chat goes on.
func TestExampleChat(t *testing.T) {
	requireNode(t, true)
	s := startServer(t)
	sdkJSRequireRoute(t, s)
	web := httptest.NewServer(http.FileServer(http.Dir(filepath.Join(repoRoot, "examples", "chat"))))
	defer web.Close()
	ctx := testCtx(t, 75*time.Second)
	q := url.Values{"bus": {s.URL}, "sdk": {s.HTTPURL + "/sdk/arqonbus.js"}}
	cmd := exec.CommandContext(ctx, "node", sdkJSTest("chat-browser.mjs"), web.URL+"/index.html?"+q.Encode(), "60000")
	if dir := os.Getenv("ARQONBUS_E2E_ARTIFACTS"); dir != "" {
		cmd.Env = append(os.Environ(), "ARQ_SCREENSHOT="+filepath.Join(dir, "example-chat.png"))
	}
	run := startNode[sdkJSLine](t, ctx, cmd)
	if l := run.next("chatted"); l.Event != "chatted" {
		sdkJSReport(t, l)
		t.Fatal("pages did not chat before the restart")
	}
	s.kill()
	restartServer(t, s)
	sdkJSReport(t, run.next("done"))
}

// sdkJSReport reports the failed checks of a done line.
func sdkJSReport(t *testing.T, l sdkJSLine) {
	t.Helper()
	if l.Error != "" {
		t.Errorf("runner: %s", l.Error)
	}
	for _, c := range l.Checks {
		if !c.OK {
			t.Errorf("%s: %s", c.Name, c.Detail)
		}
	}
}

// TestExampleDashboard runs examples/dashboard/dashboard.mjs (Scenario 2); an AI agent that
// connects afterwards must show up in what it prints, from the bus channels and from the telemetry
// WebSocket.
func TestExampleDashboard(t *testing.T) {
	requireNode(t, false)
	s := startServer(t, "ARQONBUS_TELEMETRY_SNAPSHOT_INTERVAL=1s")
	ctx := testCtx(t, 40*time.Second)
	// Run from e2e/node, where the ws package is installed.
	dash := exjsStart(t, ctx, nodeDir(), "node", filepath.Join(repoRoot, "examples", "dashboard", "dashboard.mjs"),
		"--url", s.URL, "--telemetry", fmt.Sprintf("ws://127.0.0.1:%d", s.TelemetryPort))
	dash.waitFor(t, 15*time.Second, "ready", "[telemetry-ws] connected")

	const agent = "research_agent_dash_e2e"
	c := dial(t, s, client.WithClientID(agent), client.WithParam("client_type", "ai-agent"), client.WithParam("personality", "analytical"))
	if err := c.Join(ctx, "science", "general"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Publish("science", "general", map[string]string{"message": "starting analysis phase"}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	c.Close()
	dash.waitFor(t, 15*time.Second,
		"[bus integriguard:telemetry-stream] client_connected client_id="+agent,
		"[bus integriguard:dashboard-events] agent_activity agent_id="+agent,
		"[telemetry-ws] client_connected client_id="+agent,
		"[bus integriguard:telemetry-stream] client_disconnected client_id="+agent,
		"[telemetry-ws] metrics_snapshot clients=",
	)
}

// TestExampleServiceJS runs Scenario 4: the Go database service (examples/service/handler) serves
// `status` on services:database, with history in Redis, and examples/service/requester.mjs asks it.
func TestExampleServiceJS(t *testing.T) {
	requireNode(t, false)
	handlerDir := filepath.Join(repoRoot, "examples", "service", "handler")
	if _, err := os.Stat(handlerDir); err != nil {
		t.Skip("examples/service/handler is not in this tree yet")
	}
	r := redistest.Run(t)
	s := startServer(t, redisEnv(r)...)
	ctx := testCtx(t, 120*time.Second)
	bin := filepath.Join(t.TempDir(), "handler")
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, "./examples/service/handler")
	build.Dir = repoRoot
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./examples/service/handler: %v\n%s", err, out)
	}
	h := exjsStart(t, ctx, repoRoot, bin, "-url", s.URL, "-room", "services", "-channel", "database")
	h.waitFor(t, 15*time.Second, "ready")

	req := exjsStart(t, ctx, nodeDir(), "node", filepath.Join(repoRoot, "examples", "service", "requester.mjs"),
		"--url", s.URL, "--room", "services", "--channel", "database")
	req.waitFor(t, 20*time.Second, "result ")
	<-req.done
	if code := req.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("requester exited %d", code)
	}
	var result map[string]any
	for _, line := range strings.Split(req.out.String(), "\n") {
		if rest, ok := strings.CutPrefix(line, "result "); ok {
			if err := json.Unmarshal([]byte(rest), &result); err != nil {
				t.Fatalf("result is not JSON: %q", rest)
			}
		}
	}
	for _, k := range []string{"active_connections", "max_connections", "avg_response_time_ms"} {
		if _, ok := result[k].(float64); !ok {
			t.Errorf("result lacks numeric %s: %v (the built-in status answered instead of the handler?)", k, result)
		}
	}
}
