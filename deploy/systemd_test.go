package deploy

// deploy/systemd and deploy/sysctl: systemd accepts the unit, the env file
// lists every setting at its real default, the stop timeout covers the
// drain, and the sandbox (system call filter, address families,
// MemoryDenyWriteExecute) allows everything a real server does under traffic.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/arqonbus/arqonbus/client"
	"github.com/arqonbus/arqonbus/internal/redistest"
)

const (
	unitFile   = "systemd/arqonbus.service"
	envFile    = "systemd/arqonbus.env"
	sysctlFile = "sysctl/99-arqonbus.conf"
)

// toolBin finds a Debian tool on PATH or in /usr/sbin. Without it the test
// is skipped, or fails under CI=true, where scripts/install-test-deps.sh
// must have installed pkg.
func toolBin(t *testing.T, name, pkg string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	if p := "/usr/sbin/" + name; isExecutable(p) {
		return p
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s not found: run scripts/install-test-deps.sh (Debian package %s)", name, pkg)
	}
	t.Skipf("%s not found (scripts/install-test-deps.sh installs Debian's %s)", name, pkg)
	return ""
}

func run(t *testing.T, timeout time.Duration, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// unit is a parsed unit file: section -> key -> values, in order (a key may
// repeat: SystemCallFilter=, After=).
type unit map[string]map[string][]string

func readUnit(t *testing.T) unit {
	t.Helper()
	f, err := os.Open(unitFile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	u, section := unit{}, ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = line[1 : len(line)-1]
			u[section] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("%s: cannot read %q", unitFile, line)
			}
			u[section][k] = append(u[section][k], v)
		}
	}
	return u
}

func (u unit) last(section, key string) string {
	vs := u[section][key]
	if len(vs) == 0 {
		return ""
	}
	return vs[len(vs)-1]
}

// TestSystemdUnitVerify runs `systemd-analyze verify` on the unit, its
// ExecStart pointed at a freshly built server (verify checks the binary
// exists), and fails on any complaint, warnings included. systemd need not
// be running: verify reads files only. `systemd-analyze security` scores
// the sandbox offline; the unit must stay in its "OK" band.
func TestSystemdUnitVerify(t *testing.T) {
	analyze := toolBin(t, "systemd-analyze", "systemd")
	bin := serverBin(t)
	text, err := os.ReadFile(unitFile)
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`(?m)^ExecStart=/usr/local/bin/arqonbus$`)
	if !re.Match(text) {
		t.Fatalf("%s: want ExecStart=/usr/local/bin/arqonbus (the install path deploy/README.md gives)", unitFile)
	}
	path := filepath.Join(t.TempDir(), "arqonbus.service")
	if err := os.WriteFile(path, re.ReplaceAll(text, []byte("ExecStart="+bin)), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := run(t, time.Minute, analyze, "verify", path)
	if err != nil || strings.TrimSpace(out) != "" {
		t.Errorf("systemd-analyze verify %s: %v\n%s", unitFile, err, out)
	}

	out, err = run(t, time.Minute, analyze, "security", "--offline=true", path)
	if err != nil {
		t.Fatalf("systemd-analyze security --offline=true: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`Overall exposure level for \S+: ([0-9.]+) (\S+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("systemd-analyze security: no overall exposure level in:\n%s", out)
	}
	if score, _ := strconv.ParseFloat(m[1], 64); score > 2.0 {
		t.Errorf("exposure %s %s: the sandbox got weaker (it scored 1.2 OK when written):\n%s", m[1], m[2], out)
	}
	t.Logf("systemd-analyze security: exposure %s %s", m[1], m[2])
}

// helpDefaults is every ARQONBUS_* variable the binary knows, with its
// default, from `arqonbus --help`.
func helpDefaults(t *testing.T) map[string]string {
	t.Helper()
	out, err := run(t, 30*time.Second, serverBin(t), "--help")
	if err != nil {
		t.Fatalf("arqonbus --help: %v\n%s", err, out)
	}
	defaults := map[string]string{}
	re := regexp.MustCompile(`\(env (ARQONBUS_\w+)\)(?: \(default "(.*)"\))?$`)
	for _, line := range strings.Split(out, "\n") {
		if m := re.FindStringSubmatch(strings.TrimSpace(line)); m != nil {
			defaults[m[1]] = m[2]
		}
	}
	if len(defaults) < 20 {
		t.Fatalf("read only %d settings from arqonbus --help:\n%s", len(defaults), out)
	}
	return defaults
}

// TestSystemdEnvFile: arqonbus.env lists every ARQONBUS_* setting of the
// binary exactly once, commented out at its real default, and nothing else.
func TestSystemdEnvFile(t *testing.T) {
	defaults := helpDefaults(t)
	text, err := os.ReadFile(envFile)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	re := regexp.MustCompile(`^(#?)\s*(ARQONBUS_\w+)=(.*)$`)
	for i, line := range strings.Split(string(text), "\n") {
		m := re.FindStringSubmatch(line)
		if m == nil {
			if l := strings.TrimSpace(line); l != "" && !strings.HasPrefix(l, "#") {
				t.Errorf("%s:%d: not a comment nor a setting: %q", envFile, i+1, line)
			}
			continue
		}
		if m[1] == "" {
			t.Errorf("%s:%d: %s is set; the shipped file sets nothing (uncommenting is the user's choice)", envFile, i+1, m[2])
		}
		if strings.HasPrefix(line, "#   ") { // an example in the header
			continue
		}
		name, value := m[2], m[3]
		seen[name]++
		def, ok := defaults[name]
		switch {
		case !ok:
			t.Errorf("%s:%d: %s is not a setting of the server", envFile, i+1, name)
		case value != def:
			t.Errorf("%s:%d: %s=%s, but its default is %q", envFile, i+1, name, value, def)
		}
	}
	var missing []string
	for name := range defaults {
		switch seen[name] {
		case 0:
			missing = append(missing, name)
		case 1:
		default:
			t.Errorf("%s: %s listed %d times", envFile, name, seen[name])
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("%s lacks %v (add each, commented out at its default)", envFile, missing)
	}
}

// TestSystemdUnitSettings: the directives the deployment depends on.
func TestSystemdUnitSettings(t *testing.T) {
	u := readUnit(t)
	svc := "Service"
	for key, want := range map[string]string{
		"Restart":                  "on-failure",
		"KillSignal":               "SIGTERM",
		"NoNewPrivileges":          "yes",
		"ProtectSystem":            "strict",
		"ProtectHome":              "yes",
		"PrivateTmp":               "yes",
		"PrivateDevices":           "yes",
		"ProtectKernelTunables":    "yes",
		"ProtectKernelModules":     "yes",
		"ProtectControlGroups":     "yes",
		"MemoryDenyWriteExecute":   "yes",
		"CapabilityBoundingSet":    "",
		"RestartPreventExitStatus": "2",
	} {
		if got, ok := u[svc][key]; !ok || u.last(svc, key) != want {
			t.Errorf("[Service] %s=%q, want %q (%v)", key, u.last(svc, key), want, got)
		}
	}
	if u.last(svc, "DynamicUser") != "yes" && u.last(svc, "User") == "" {
		t.Errorf("the unit must not run as root: DynamicUser=yes or User=")
	}
	families := strings.Fields(u.last(svc, "RestrictAddressFamilies"))
	for _, f := range []string{"AF_INET", "AF_INET6", "AF_UNIX"} {
		if !slices.Contains(families, f) {
			// AF_UNIX: the server holds an abstract unix socket as its port lock.
			t.Errorf("RestrictAddressFamilies lacks %s", f)
		}
	}
	if ef := u.last(svc, "EnvironmentFile"); strings.TrimPrefix(ef, "-") != "/etc/arqonbus/arqonbus.env" {
		t.Errorf("EnvironmentFile=%s, want /etc/arqonbus/arqonbus.env (deploy/README.md installs it there)", ef)
	}

	// The descriptor limit is the connection cap, and the kernel must allow it.
	nofile, err := strconv.Atoi(u.last(svc, "LimitNOFILE"))
	if err != nil || nofile < 65536 {
		t.Errorf("LimitNOFILE=%q: want a number of at least 65536 (one descriptor per client)", u.last(svc, "LimitNOFILE"))
	}
	sysctl := readSysctl(t)
	if nrOpen, _ := strconv.Atoi(sysctl["fs.nr_open"]); nrOpen < nofile {
		t.Errorf("%s: fs.nr_open=%s is below the unit's LimitNOFILE=%d: systemd cannot set the limit", sysctlFile, sysctl["fs.nr_open"], nofile)
	}

	// SIGTERM -> drain grace -> shutdown within the shutdown timeout: systemd
	// must not SIGKILL before that, with the values the env file and its
	// README suggest.
	stop, err := time.ParseDuration(u.last(svc, "TimeoutStopSec"))
	if err != nil {
		t.Fatalf("TimeoutStopSec=%q: %v", u.last(svc, "TimeoutStopSec"), err)
	}
	defaults := helpDefaults(t)
	shutdown, _ := time.ParseDuration(defaults["ARQONBUS_SHUTDOWN_TIMEOUT"])
	grace := 3 * time.Second // the README's and the HAProxy README's advice
	if need := grace + shutdown + 5*time.Second; stop < need {
		t.Errorf("TimeoutStopSec=%s: below drain grace %s + shutdown timeout %s + 5s", stop, grace, shutdown)
	}
}

func readSysctl(t *testing.T) map[string]string {
	t.Helper()
	text, err := os.ReadFile(sysctlFile)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for i, line := range strings.Split(string(text), "\n") {
		l := strings.TrimSpace(line)
		if l == "" || strings.HasPrefix(l, "#") || strings.HasPrefix(l, ";") {
			continue
		}
		k, v, ok := strings.Cut(l, "=")
		if !ok {
			t.Fatalf("%s:%d: not key = value: %q", sysctlFile, i+1, line)
		}
		out[strings.TrimSpace(k)] = strings.Join(strings.Fields(v), " ")
	}
	return out
}

// TestSysctlKeys: every key of 99-arqonbus.conf exists in this kernel (a
// typo would only show as an error of `sysctl --system`) and has as many
// fields as the kernel's value (tcp_mem: three).
func TestSysctlKeys(t *testing.T) {
	if _, err := os.Stat("/proc/sys/fs"); err != nil {
		t.Skip("no /proc/sys here")
	}
	for k, v := range readSysctl(t) {
		path := "/proc/sys/" + strings.ReplaceAll(k, ".", "/")
		cur, err := os.ReadFile(path)
		if err != nil {
			t.Errorf("%s: %s: %v (no such kernel setting?)", sysctlFile, k, err)
			continue
		}
		if got, want := len(strings.Fields(v)), len(strings.Fields(string(cur))); got != want {
			t.Errorf("%s: %s = %q has %d fields, the kernel's value %q has %d", sysctlFile, k, v, got, strings.TrimSpace(string(cur)), want)
		}
		for _, f := range strings.Fields(v) {
			if _, err := strconv.ParseInt(f, 10, 64); err != nil {
				t.Errorf("%s: %s: %q is not a number", sysctlFile, k, f)
			}
		}
	}
}

// syscallGroups expands systemd's @groups of system calls, as this
// systemd-analyze knows them.
func syscallGroups(t *testing.T, analyze string) map[string][]string {
	t.Helper()
	out, err := run(t, 30*time.Second, analyze, "syscall-filter")
	if err != nil {
		t.Fatalf("systemd-analyze syscall-filter: %v\n%s", err, out)
	}
	groups, cur := map[string][]string{}, ""
	for _, line := range strings.Split(out, "\n") {
		s := strings.TrimSpace(line)
		switch {
		case s == "" || strings.HasPrefix(s, "#"):
		case strings.HasPrefix(line, "@"):
			cur = s
		case cur != "":
			groups[cur] = append(groups[cur], s)
		}
	}
	return groups
}

func expandSyscalls(t *testing.T, groups map[string][]string, items []string, into map[string]bool) {
	t.Helper()
	for _, it := range items {
		if strings.HasPrefix(it, "@") {
			members, ok := groups[it]
			if !ok {
				t.Fatalf("unknown system call group %s", it)
			}
			expandSyscalls(t, groups, members, into)
			continue
		}
		into[it] = true
	}
}

// allowedSyscalls is what the unit's SystemCallFilter= lines allow: the
// first line is an allow list (no ~), later ~ lines take calls out of it.
func allowedSyscalls(t *testing.T, u unit, groups map[string][]string) map[string]bool {
	t.Helper()
	allow, deny := map[string]bool{}, map[string]bool{}
	lines := u["Service"]["SystemCallFilter"]
	if len(lines) == 0 || strings.HasPrefix(lines[0], "~") {
		t.Fatalf("the unit's first SystemCallFilter= must be an allow list: %q", lines)
	}
	for _, l := range lines {
		if rest, ok := strings.CutPrefix(l, "~"); ok {
			expandSyscalls(t, groups, strings.Fields(rest), deny)
		} else {
			expandSyscalls(t, groups, strings.Fields(l), allow)
		}
	}
	for s := range deny {
		delete(allow, s)
	}
	return allow
}

// TestSystemdSandboxCoversServer runs the real server (Redis storage,
// clustered) under strace through start, client traffic (events, private
// messages, commands, history, telemetry port, every HTTP endpoint) and a
// graceful SIGTERM stop, then checks the unit's sandbox against the trace:
// every system call is in its SystemCallFilter, every socket family in its
// RestrictAddressFamilies, and no mapping is writable and executable at once
// (MemoryDenyWriteExecute=yes).
func TestSystemdSandboxCoversServer(t *testing.T) {
	analyze := toolBin(t, "systemd-analyze", "systemd")
	strace := toolBin(t, "strace", "strace")
	setpriv := toolBin(t, "setpriv", "util-linux")
	bin := serverBin(t)
	u := readUnit(t)
	allowed := allowedSyscalls(t, u, syscallGroups(t, analyze))
	families := strings.Fields(u.last("Service", "RestrictAddressFamilies"))

	r := redistest.Run(t)
	trace := filepath.Join(t.TempDir(), "strace.out")
	// setpriv: the server dies with strace (a traced process outlives its
	// tracer otherwise); its own calls before exec are left out below.
	n := startNode(t, []string{strace, "-f", "-qq", "-e", "signal=none", "-o", trace, setpriv, "--pdeathsig", "KILL", bin},
		"ARQONBUS_STORAGE=redis", "ARQONBUS_REDIS_URL="+r.URL(), "ARQONBUS_NODE_ID=deploy-sandbox", "ARQONBUS_DRAIN_GRACE=200ms")
	exercise(t, n)

	// SIGTERM to the server itself (strace's child), then strace exits.
	kids, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", n.cmd.Process.Pid, n.cmd.Process.Pid))
	if err != nil || len(strings.Fields(string(kids))) != 1 {
		t.Fatalf("strace's child: %q %v", kids, err)
	}
	pid, _ := strconv.Atoi(strings.Fields(string(kids))[0])
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-n.exited:
	case <-time.After(30 * time.Second):
		t.Fatalf("the traced server did not stop within 30s of SIGTERM:\n%s", n.out)
	}
	if !strings.Contains(n.out.String(), "msg=stopped") {
		t.Errorf("the server did not stop cleanly:\n%s", n.out)
	}

	text, err := os.ReadFile(trace)
	if err != nil {
		t.Fatal(err)
	}
	reCall := regexp.MustCompile(`^\d+\s+(?:<\.\.\. )?([a-z0-9_]+)[( ]`)
	reSocket := regexp.MustCompile(`\bsocket\((AF_\w+)`)
	reWX := regexp.MustCompile(`\b(mmap|mprotect|pkey_mprotect)\(.*PROT_WRITE.*PROT_EXEC|\b(mmap|mprotect|pkey_mprotect)\(.*PROT_EXEC.*PROT_WRITE`)
	execLine := fmt.Sprintf(`execve(%q`, bin)
	started := false
	calls := map[string]int{}
	for _, line := range strings.Split(string(text), "\n") {
		if !started {
			started = strings.Contains(line, execLine) && strings.HasSuffix(line, "= 0")
			continue
		}
		m := reCall.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		calls[m[1]]++
		if f := reSocket.FindStringSubmatch(line); f != nil && !slices.Contains(families, f[1]) {
			t.Errorf("the server opened an %s socket, which RestrictAddressFamilies=%s refuses: %s", f[1], strings.Join(families, " "), line)
		}
		if reWX.MatchString(line) {
			t.Errorf("a writable and executable mapping, which MemoryDenyWriteExecute=yes refuses: %s", line)
		}
	}
	if !started || len(calls) < 20 {
		t.Fatalf("no trace of the server after %s (%d calls):\n%.2000s", execLine, len(calls), text)
	}
	var refused []string
	for c := range calls {
		if !allowed[c] && c != "exit_group" && c != "exit" {
			refused = append(refused, fmt.Sprintf("%s (%d calls)", c, calls[c]))
		}
	}
	sort.Strings(refused)
	if len(refused) > 0 {
		t.Errorf("the unit's SystemCallFilter refuses system calls the server makes: %v", refused)
	} else {
		t.Logf("%d distinct system calls traced, all allowed by the unit", len(calls))
	}
}

// exercise drives a node through what a deployment does: clients of two
// types, an event, a private message, commands, history, the telemetry
// port, and every HTTP endpoint.
func exercise(t *testing.T, n *node) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	wsURL := fmt.Sprintf("ws://127.0.0.1:%d/", n.Port)
	dial := func(id, typ string) *client.Conn {
		q := url.Values{"client_type": {typ}}
		c, err := client.Dial(ctx, wsURL+"?"+q.Encode(), client.WithClientID(id))
		if err != nil {
			t.Fatalf("dial %s: %v", id, err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	a, b := dial("deploy_a", "human"), dial("deploy_b", "ai-agent")
	for _, c := range []*client.Conn{a, b} {
		if err := c.Join(ctx, "deploy", "check"); err != nil {
			t.Fatalf("join: %v", err)
		}
	}
	if _, err := a.Publish("deploy", "check", map[string]any{"hello": "sandbox"}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Expect(ctx, func(e client.Envelope) bool { return e.Type == "event" && e.Room == "deploy" }); err != nil {
		t.Fatalf("event not delivered: %v", err)
	}
	p, _ := json.Marshal(map[string]any{"target": "deploy_a", "text": "hi"})
	if err := b.Send(client.Envelope{ID: client.NewID("msg"), Type: "private", Room: "deploy", Channel: "check", Payload: p}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Expect(ctx, func(e client.Envelope) bool { return e.Type == "private" }); err != nil {
		t.Fatalf("private message not delivered: %v", err)
	}
	for _, c := range []struct {
		name   string
		params any
	}{
		{"status", nil}, {"ping", nil}, {"list_channels", nil}, {"channel_info", nil},
		{"history", map[string]any{"limit": 10}},
	} {
		if _, err := a.Command(ctx, "deploy", "check", c.name, c.params); err != nil {
			t.Errorf("command %s: %v", c.name, err)
		}
	}
	tel, err := client.Dial(ctx, fmt.Sprintf("ws://127.0.0.1:%d/", n.TelemetryPort), client.WithoutWelcome())
	if err != nil {
		t.Fatalf("telemetry port: %v", err)
	}
	tel.Close()
	for _, path := range []string{"/health", "/ready", "/metrics", "/version", "/"} {
		get(t, n.httpURL(path))
	}
	b.Close()
	a.Close()
}
