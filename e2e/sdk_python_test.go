package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/arqonbus/arqonbus/internal/redistest"
)

// The Python SDK (sdk/python) runs on Debian's python3 with Debian's
// python3-websockets; the pyenv python3 on PATH has no websockets.
const systemPython = "/usr/bin/python3"

// requirePython skips (or, under CI=true, fails) when /usr/bin/python3 cannot
// import websockets; scripts/install-test-deps.sh installs it.
func requirePython(t *testing.T) {
	t.Helper()
	err := exec.Command(systemPython, "-c", "import websockets").Run()
	if err == nil {
		return
	}
	msg := fmt.Sprintf("%s cannot import websockets (%v): run scripts/install-test-deps.sh", systemPython, err)
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// pyRun is one Python script of sdk/python/tests (or examples/) while it
// runs: its stdout lines as they come, a pipe to its stdin.
type pyRun struct {
	t      *testing.T
	ctx    context.Context
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	lines  chan string
	out    syncBuffer // every stdout line, for failure reports
	stderr syncBuffer
	waited bool
}

// startPython runs /usr/bin/python3 script (relative to the repository root)
// with PYTHONPATH=sdk/python, ARQONBUS_URL=s.URL and env, in a process group
// killed whole when ctx ends.
func startPython(t *testing.T, ctx context.Context, s *server, script string, env ...string) *pyRun {
	t.Helper()
	path := filepath.Join(repoRoot, script)
	cmd := exec.CommandContext(ctx, systemPython, "-u", path)
	cmd.Dir = filepath.Dir(path)
	cmd.Env = append(os.Environ(),
		"PYTHONPATH="+filepath.Join(repoRoot, "sdk", "python"),
		"PYTHONDONTWRITEBYTECODE=1",
		"ARQONBUS_URL="+s.URL)
	cmd.Env = append(cmd.Env, env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 2 * time.Second
	r := &pyRun{t: t, ctx: ctx, cmd: cmd, lines: make(chan string, 1024)}
	cmd.Stderr = &r.stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	r.stdin = stdin
	pr, pw := io.Pipe()
	cmd.Stdout = pw
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %v: %v", cmd.Args, err)
	}
	t.Cleanup(func() {
		if !r.waited {
			_ = cmd.Cancel()
			_ = cmd.Wait()
		}
		pw.Close()
		if t.Failed() {
			t.Logf("%s stdout:\n%s\nstderr:\n%s", script, r.out.String(), r.stderr.String())
		}
	})
	go func() {
		defer close(r.lines)
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 1<<20), 16<<20)
		for sc.Scan() {
			line := sc.Text()
			r.out.Write([]byte(line + "\n"))
			select {
			case r.lines <- line:
			default: // nobody reads the chatter; r.out keeps it
			}
		}
	}()
	return r
}

// pyEvent is a JSON line a script prints for the Go side.
type pyEvent map[string]any

// next returns the next JSON line whose "event" is name, skipping others.
func (r *pyRun) next(name string) pyEvent {
	r.t.Helper()
	for {
		select {
		case line, ok := <-r.lines:
			if !ok {
				r.t.Fatalf("script ended before printing %q", name)
			}
			var ev pyEvent
			if json.Unmarshal([]byte(line), &ev) == nil && ev["event"] == name {
				return ev
			}
		case <-r.ctx.Done():
			r.t.Fatalf("timed out waiting for the script's %q", name)
		}
	}
}

// send writes one line to the script's stdin.
func (r *pyRun) send(line string) {
	r.t.Helper()
	if _, err := io.WriteString(r.stdin, line+"\n"); err != nil {
		r.t.Fatalf("write %q to the script: %v", line, err)
	}
}

// mustSucceed waits for the script and fails the test unless it exited 0
// with "ok" as its last line (the harness in sdk/python/tests/_check.py).
func (r *pyRun) mustSucceed() {
	r.t.Helper()
	err := r.cmd.Wait()
	r.waited = true
	out := strings.TrimSpace(r.out.String())
	if err != nil || !strings.HasSuffix(out, "ok") {
		r.t.Fatalf("script failed (%v):\n%s\nstderr:\n%s", err, out, r.stderr.String())
	}
}

// TestSDKPythonCalls runs every call of the Python SDK against the real
// server: connect and identity, join (filter, since, replay gap), publish
// with and without ack, events through async for and callbacks, leave,
// private messages, commands and their errors, handlers (results, errors,
// timeouts), history paging, the bounded event queue and close.
func TestSDKPythonCalls(t *testing.T) {
	requirePython(t)
	s := startServer(t, "ARQONBUS_HISTORY_SIZE=20")
	ctx := testCtx(t, 90*time.Second)
	startPython(t, ctx, s, "sdk/python/tests/test_calls.py").mustSucceed()
}

// TestSDKPythonResume crashes (SIGKILL) and then stops (SIGTERM) a Redis-backed
// server in sync persistence mode while a Python publisher publishes with ack
// at ~150 events/s, restarting it on the same port each time. The Python
// subscriber must see strictly increasing sequence numbers (no duplicate, in
// order) that include every acked publish (no gap); commands in flight at the
// drop fail at once with DISCONNECTED, calls made while down wait, handlers
// come back.
func TestSDKPythonResume(t *testing.T) {
	requirePython(t)
	r := redistest.Run(t)
	env := redisEnv(r, "ARQONBUS_PERSIST=sync")
	s := startServer(t, env...)
	ctx := testCtx(t, 150*time.Second)
	p := startPython(t, ctx, s, "sdk/python/tests/test_resume.py", "CYCLES=kill,stop", "RATE=150", "AFTER=150", "ARQONBUS_DEBUG=1")
	for _, how := range []string{"kill", "stop"} {
		ev := p.next("ready")
		t.Logf("cycle %v (%s): acked %v, received %v", ev["cycle"], how, ev["acked"], ev["received"])
		if how == "kill" {
			s.kill()
		} else {
			s.stop()
		}
		p.send("down")
		time.Sleep(300 * time.Millisecond) // the clients knock on a closed port meanwhile
		s = restartServer(t, s, env...)
		p.send("up")
	}
	done := p.next("done")
	t.Logf("done: %v", done)
	p.mustSucceed()
}

// TestSDKPythonTakeover: a client whose connection the server still holds
// (half-open: the client stopped reading and moved on) reconnects with the
// resume token of its welcome and takes its id over at once; without the
// token the same id gets CONFLICT.
func TestSDKPythonTakeover(t *testing.T) {
	requirePython(t)
	s := startServer(t)
	ctx := testCtx(t, 60*time.Second)
	startPython(t, ctx, s, "sdk/python/tests/test_takeover.py").mustSucceed()
}
