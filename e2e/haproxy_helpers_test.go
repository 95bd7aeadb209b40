package e2e

// HAProxy in front of test servers, configured from the shipped
// deploy/haproxy/arqonbus.cfg so that the tests exercise its mode, timeouts,
// balance, retries and health check, not a look-alike.

import (
	"bufio"
	"context"
	"encoding/csv"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/arqonbus/arqonbus/client"
)

// haproxy is one running haproxy process in front of test servers.
type haproxy struct {
	Addr string // 127.0.0.1:PORT, the client frontend
	URL  string // ws://127.0.0.1:PORT/

	Config string // the configuration it runs, for failure messages
	sock   string // runtime API socket
	cmd    *exec.Cmd
	out    *syncBuffer
	exited chan struct{}
}

// haproxyBin finds haproxy on PATH or in /usr/sbin (Debian's place, not on
// every user's PATH). Without it the test is skipped, or fails under
// CI=true, where scripts/install-test-deps.sh must have installed it.
func haproxyBin(t testing.TB) string {
	t.Helper()
	if p, err := exec.LookPath("haproxy"); err == nil {
		return p
	}
	if fi, err := os.Stat("/usr/sbin/haproxy"); err == nil && fi.Mode()&0o111 != 0 {
		return "/usr/sbin/haproxy"
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("haproxy not found: run scripts/install-test-deps.sh")
	}
	t.Skip("haproxy not found (scripts/install-test-deps.sh installs it)")
	return ""
}

// haproxyServerName is the name of backends[i] in the generated config (and
// in status).
func haproxyServerName(i int) string { return "node" + strconv.Itoa(i) }

// startHAProxy runs haproxy in the foreground with a frontend on a free
// loopback port and one server per backend, health-checked on the server's
// HTTP port (GET /ready, from the shipped file) every 200 ms: down after 2
// failures, up after 1 success. It waits until the frontend accepts and
// stops haproxy at cleanup; its log goes to the test log if the test failed.
func startHAProxy(t testing.TB, backends []*server) *haproxy {
	t.Helper()
	bin := haproxyBin(t)
	shipped, err := os.ReadFile(filepath.Join(repoRoot, "deploy", "haproxy", "arqonbus.cfg"))
	if err != nil {
		t.Fatalf("read the shipped haproxy config: %v", err)
	}
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ { // a free port may be taken before haproxy binds it
		h, err := tryStartHAProxy(t, bin, string(shipped), backends)
		if err == nil {
			return h
		}
		lastErr = err
	}
	t.Fatalf("haproxy did not start: %v", lastErr)
	return nil
}

func tryStartHAProxy(t testing.TB, bin, shipped string, backends []*server) (*haproxy, error) {
	dir := t.TempDir()
	port := freePort(t)
	h := &haproxy{
		Addr:   "127.0.0.1:" + strconv.Itoa(port),
		sock:   filepath.Join(dir, "admin.sock"),
		out:    &syncBuffer{},
		exited: make(chan struct{}),
	}
	h.URL = "ws://" + h.Addr + "/"
	cfg, err := haproxyTestConfig(shipped, h.Addr, h.sock, backends, func() int { return freePort(t) })
	if err != nil {
		t.Fatalf("deriving the test config from deploy/haproxy/arqonbus.cfg: %v", err)
	}
	h.Config = cfg
	path := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}

	// -db: foreground, no daemon, logs (see the global section) on stderr.
	h.cmd = exec.Command(bin, "-f", path, "-db")
	h.cmd.Stdout, h.cmd.Stderr = h.out, h.out
	h.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := h.cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		_ = h.cmd.Wait()
		close(h.exited)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", h.Addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			break
		}
		select {
		case <-h.exited:
			return nil, fmt.Errorf("haproxy exited before accepting (%v):\n%s\nconfig:\n%s", h.cmd.ProcessState, h.out, cfg)
		default:
		}
		if time.Now().After(deadline) {
			h.stop()
			return nil, fmt.Errorf("haproxy frontend %s not accepting after 10s:\n%s", h.Addr, h.out)
		}
		time.Sleep(25 * time.Millisecond)
	}
	t.Cleanup(func() {
		h.stop()
		if t.Failed() {
			t.Logf("haproxy output:\n%s", h.out)
		}
	})
	return h, nil
}

// stop kills haproxy (it holds no state worth a graceful stop) and waits.
func (h *haproxy) stop() {
	_ = h.cmd.Process.Kill()
	<-h.exited
}

// Output is what haproxy logged so far.
func (h *haproxy) Output() string { return h.out.String() }

// haproxyTestConfig derives a loopback configuration from the shipped one:
//   - global is replaced (no chroot, user, syslog or system socket): logs go
//     to stderr, the runtime API to sock;
//   - defaults, and every other section, are kept as shipped;
//   - every bind line of a frontend or listen section is replaced: the
//     frontend whose default_backend holds the servers binds addr, others a
//     free loopback port from free;
//   - in the backend holding the servers, the server and default-server
//     lines are replaced by one server per backend, checked on its HTTP port
//     with test timings (inter 200 fall 2 rise 1 instead of 1s/2/2).
//
// It fails when the shipped file no longer has that shape (a backend with
// servers, a frontend routing to it), which is the point: the test must
// follow the file.
func haproxyTestConfig(shipped, addr, sock string, backends []*server, free func() int) (string, error) {
	type section struct {
		kind, name string
		lines      []string // the body, header excluded
	}
	var sections []*section
	header := regexp.MustCompile(`^(global|defaults|frontend|backend|listen|peers|resolvers|userlist|program|http-errors|ring|cache|mailers)\b\s*(\S*)`)
	for _, line := range strings.Split(shipped, "\n") {
		if m := header.FindStringSubmatch(line); m != nil {
			sections = append(sections, &section{kind: m[1], name: m[2]})
			continue
		}
		if len(sections) == 0 { // comments before the first section
			continue
		}
		s := sections[len(sections)-1]
		s.lines = append(s.lines, line)
	}
	first := func(s *section, keyword string) []string {
		for _, l := range s.lines {
			if f := strings.Fields(l); len(f) > 1 && f[0] == keyword {
				return f
			}
		}
		return nil
	}
	// The nodes' backend: the one with server lines.
	nodes := ""
	for _, s := range sections {
		if s.kind == "backend" && first(s, "server") != nil {
			if nodes != "" {
				return "", fmt.Errorf("two backends with servers (%s, %s): say which one is the nodes'", nodes, s.name)
			}
			nodes = s.name
		}
	}
	if nodes == "" {
		return "", fmt.Errorf("no backend with server lines")
	}

	var b strings.Builder
	b.WriteString("# Generated by e2e/haproxy_helpers_test.go from deploy/haproxy/arqonbus.cfg.\n")
	fmt.Fprintf(&b, "global\n    log stderr format raw local0 info\n    maxconn 1000\n    stats socket %s level admin\n\n", sock)
	clientFrontend := false
	for _, s := range sections {
		if s.kind == "global" {
			continue
		}
		if s.name != "" {
			fmt.Fprintf(&b, "%s %s\n", s.kind, s.name)
		} else {
			fmt.Fprintf(&b, "%s\n", s.kind)
		}
		isClient := s.kind == "frontend" && slices.Equal(first(s, "default_backend"), []string{"default_backend", nodes})
		clientFrontend = clientFrontend || isClient
		bound := false
		for _, l := range s.lines {
			f := strings.Fields(l)
			kw := ""
			if len(f) > 0 {
				kw = f[0]
			}
			switch {
			case kw == "bind" && (s.kind == "frontend" || s.kind == "listen"):
				if bound {
					continue // one loopback bind replaces them all
				}
				bound = true
				a := addr
				if !isClient {
					a = "127.0.0.1:" + strconv.Itoa(free())
				}
				fmt.Fprintf(&b, "    bind %s\n", a)
			case s.kind == "backend" && s.name == nodes && (kw == "server" || kw == "default-server"):
				// replaced below
			default:
				b.WriteString(l + "\n")
			}
		}
		if s.kind == "backend" && s.name == nodes {
			for i, srv := range backends {
				fmt.Fprintf(&b, "    server %s 127.0.0.1:%d check port %d inter 200 fall 2 rise 1\n",
					haproxyServerName(i), srv.Port, srv.HTTPPort)
			}
			b.WriteString("\n")
		}
	}
	if !clientFrontend {
		return "", fmt.Errorf("no frontend with default_backend %s", nodes)
	}
	return b.String(), nil
}

// status is haproxy's view of the backends: server name (haproxyServerName)
// to status ("UP", "DOWN", "UP 1/2", ...), from `show stat` on the runtime
// API.
func (h *haproxy) status(t testing.TB) map[string]string {
	t.Helper()
	c, err := net.DialTimeout("unix", h.sock, time.Second)
	if err != nil {
		t.Fatalf("haproxy runtime API: %v", err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.WriteString(c, "show stat\n"); err != nil {
		t.Fatalf("haproxy show stat: %v", err)
	}
	raw, err := io.ReadAll(bufio.NewReader(c))
	if err != nil {
		t.Fatalf("haproxy show stat: %v", err)
	}
	text := strings.TrimPrefix(string(raw), "# ") // the CSV header line starts with "# "
	r := csv.NewReader(strings.NewReader(text))
	r.FieldsPerRecord = -1
	rows, err := r.ReadAll()
	if err != nil || len(rows) == 0 {
		t.Fatalf("haproxy show stat: %v: %q", err, raw)
	}
	col := map[string]int{}
	for i, name := range rows[0] {
		col[name] = i
	}
	out := map[string]string{}
	for _, row := range rows[1:] {
		if len(row) <= col["status"] {
			continue
		}
		if sv := row[col["svname"]]; sv != "FRONTEND" && sv != "BACKEND" {
			out[sv] = row[col["status"]]
		}
	}
	return out
}

// dialURL connects a Go client to url (haproxy's, typically) and closes it
// at cleanup.
func dialURL(t testing.TB, url string, opts ...client.Option) *client.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, url, opts...)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}
