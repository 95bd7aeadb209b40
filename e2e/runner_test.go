package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// nodeRunner runs one of the Node scripts in e2e/node and hands over the JSON
// lines it prints on stdout, decoded as L, while it runs.
type nodeRunner[L any] struct {
	t      *testing.T
	ctx    context.Context
	cmd    *exec.Cmd
	lines  chan L
	stderr syncBuffer
	junk   syncBuffer // stdout lines that were not JSON
	waited bool
}

// startNode starts cmd (made with exec.CommandContext(ctx, "node", ...)) in
// e2e/node, in a process group of its own that is killed whole when ctx ends,
// so that a stuck Chromium started by the script does not outlive the test.
func startNode[L any](t *testing.T, ctx context.Context, cmd *exec.Cmd) *nodeRunner[L] {
	t.Helper()
	r := &nodeRunner[L]{t: t, ctx: ctx, cmd: cmd, lines: make(chan L, 64)}
	cmd.Dir = nodeDir()
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 2 * time.Second
	cmd.Stderr = &r.stderr
	// An io.Pipe rather than StdoutPipe: exec copies into it, so cmd.Wait may
	// run while the scanner below still reads.
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
			t.Logf("runner stderr:\n%s\nother runner output:\n%s", r.stderr.String(), r.junk.String())
		}
	})
	go func() {
		defer close(r.lines)
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 1<<20), 16<<20)
		for sc.Scan() {
			var l L
			if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
				r.junk.Write(append(sc.Bytes(), '\n'))
				continue
			}
			select {
			case r.lines <- l: // the scripts print a few lines: the buffer never fills
			default:
			}
		}
	}()
	return r
}

// next returns the runner's next line; what names it in failures.
func (r *nodeRunner[L]) next(what string) L {
	r.t.Helper()
	select {
	case l, ok := <-r.lines:
		if !ok {
			r.t.Fatalf("runner ended before %s", what)
		}
		return l
	case <-r.ctx.Done():
		r.t.Fatalf("timed out waiting for the runner's %s", what)
	}
	var zero L
	return zero
}

// wait waits for the script to exit.
func (r *nodeRunner[L]) wait() error {
	err := r.cmd.Wait()
	r.waited = true
	return err
}
