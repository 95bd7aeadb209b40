package e2e

// Helpers shared by the tests of commands, services, filters, access control
// and limits (issue 3).

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/arqonbus/arqonbus/client"
	"github.com/arqonbus/arqonbus/internal/procnet"
	"github.com/gobwas/ws"
)

// seedQuickstart returns the seed quickstart.md, or skips when it cannot be
// found (it lives in the shared folder beside the repository, not in it).
func seedQuickstart(t *testing.T) []byte {
	t.Helper()
	var candidates []string
	if dir := os.Getenv("ARQONBUS_SHARED"); dir != "" {
		candidates = append(candidates, filepath.Join(dir, "seed", "quickstart.md"))
	}
	candidates = append(candidates,
		filepath.Join(repoRoot, "..", "shared", "seed", "quickstart.md"),
		"/work/shared/seed/quickstart.md")
	for _, p := range candidates {
		if md, err := os.ReadFile(p); err == nil {
			return md
		}
	}
	t.Skip("seed quickstart.md not found; set ARQONBUS_SHARED to the shared folder")
	return nil
}

// readTestdata reads e2e/testdata/name.
func readTestdata(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestSeedMessagesAreVerbatim checks that the JSON messages the Scenario 3
// and 4 tests send are still, byte for byte, the ones in the seed quickstart.
func TestSeedMessagesAreVerbatim(t *testing.T) {
	md := seedQuickstart(t)
	for _, name := range []string{"scenario3-agent.json", "scenario4-command.json", "scenario4-response.json"} {
		ours := bytes.TrimSuffix(readTestdata(t, name), []byte("\n"))
		if !bytes.Contains(md, ours) {
			t.Errorf("testdata/%s is not a verbatim excerpt of the seed quickstart", name)
		}
	}
}

// jsonEqualIgnoringMetadata reports whether two envelopes are the same JSON
// value once top-level metadata is dropped (SPEC: the server may add under
// metadata only).
func jsonEqualIgnoringMetadata(a, b []byte) bool {
	var ma, mb map[string]any
	if json.Unmarshal(a, &ma) != nil || json.Unmarshal(b, &mb) != nil {
		return false
	}
	delete(ma, "metadata")
	delete(mb, "metadata")
	return reflect.DeepEqual(ma, mb)
}

// jsonEqual reports whether two JSON texts hold the same value.
func jsonEqual(a, b []byte) bool {
	var va, vb any
	if json.Unmarshal(a, &va) != nil || json.Unmarshal(b, &vb) != nil {
		return false
	}
	return reflect.DeepEqual(va, vb)
}

// result is a decoded command result: its top-level fields, raw.
type result map[string]json.RawMessage

func (r result) has(keys ...string) []string {
	var missing []string
	for _, k := range keys {
		if _, ok := r[k]; !ok {
			missing = append(missing, k)
		}
	}
	return missing
}

func (r result) str(k string) string {
	var s string
	_ = json.Unmarshal(r[k], &s)
	return s
}

func (r result) num(k string) (float64, bool) {
	var f float64
	err := json.Unmarshal(r[k], &f)
	return f, err == nil && len(r[k]) > 0
}

func (r result) boolean(k string) (bool, bool) {
	var b bool
	err := json.Unmarshal(r[k], &b)
	return b, err == nil && len(r[k]) > 0
}

func (r result) obj(k string) result {
	var m result
	_ = json.Unmarshal(r[k], &m)
	return m
}

func (r result) list(k string) []result {
	var l []result
	_ = json.Unmarshal(r[k], &l)
	return l
}

// requireKeys reports the keys r lacks.
func requireKeys(t *testing.T, what string, r result, keys ...string) {
	t.Helper()
	if m := r.has(keys...); len(m) > 0 {
		raw, _ := json.Marshal(r)
		t.Errorf("%s: result lacks %v: %s", what, m, raw)
	}
}

// sendCommand sends a command with a fresh id and returns the id.
func sendCommand(c *client.Conn, room, channel, name string, params any) (string, error) {
	if params == nil {
		params = map[string]any{}
	}
	payload, err := json.Marshal(map[string]any{"command": name, "parameters": params})
	if err != nil {
		return "", err
	}
	id := client.NewID("cmd")
	return id, c.Send(client.Envelope{ID: id, Type: "command", Room: room, Channel: channel, Payload: payload})
}

// cmdOK runs a built-in command that must succeed and returns its result. It
// checks the answer's shape: a command_response from the server with
// request_id, status success, a result object, and room/channel echoing the
// command envelope's.
func cmdOK(t *testing.T, c *client.Conn, room, channel, name string, params any) result {
	t.Helper()
	ctx := testCtx(t, 5*time.Second)
	env, err := c.Command(ctx, room, channel, name, params)
	if err != nil {
		t.Fatalf("%s on %s:%s (params %v) by %s: %v (%s)", name, room, channel, params, c.ClientID(), err, env.Raw)
	}
	if env.Type != "command_response" || env.From != client.ServerFrom || env.Version != "1.0" || !strings.HasPrefix(env.ID, "arq_") {
		t.Errorf("%s: malformed answer: %s", name, env.Raw)
	}
	if env.Room != room || env.Channel != channel {
		t.Errorf("%s: answer on %s:%s, want the command's %s:%s: %s", name, env.Room, env.Channel, room, channel, env.Raw)
	}
	var p struct {
		Status string `json:"status"`
		Result result `json:"result"`
	}
	if err := json.Unmarshal(env.Payload, &p); err != nil || p.Status != "success" || p.Result == nil {
		t.Fatalf("%s: want status success with a result object: %s", name, env.Raw)
	}
	return p.Result
}

// cmdErr runs a command that must fail with code (and field, unless empty)
// and returns the error.
func cmdErr(t *testing.T, c *client.Conn, room, channel, name string, params any, code, field string) *client.Error {
	t.Helper()
	ctx := testCtx(t, 5*time.Second)
	env, err := c.Command(ctx, room, channel, name, params)
	var e *client.Error
	if !errors.As(err, &e) {
		t.Errorf("%s on %s:%s (params %v): got %v (%s), want error %s", name, room, channel, params, err, env.Raw, code)
		return nil
	}
	checkErr(t, name, env, e, code, field)
	return e
}

// checkErr checks an error envelope against code, SPEC status and field.
func checkErr(t *testing.T, what string, env client.Envelope, e *client.Error, code, field string) {
	t.Helper()
	if env.Type != "error" {
		t.Errorf("%s: failure as %q, want an error envelope: %s", what, env.Type, env.Raw)
	}
	if e.Code != code || e.Status != statusOf[code] {
		t.Errorf("%s: got %s %d, want %s %d: %s", what, e.Code, e.Status, code, statusOf[code], env.Raw)
	}
	if field != "" && e.Field != field {
		t.Errorf("%s: field %q, want %q: %s", what, e.Field, field, env.Raw)
	}
	if e.Message == "" {
		t.Errorf("%s: error without message: %s", what, env.Raw)
	}
	if env.From != client.ServerFrom || env.Version != "1.0" || !strings.HasPrefix(env.ID, "arq_") {
		t.Errorf("%s: malformed error envelope: %s", what, env.Raw)
	}
}

// expectErrorFor waits for the error envelope whose request_id is id.
func expectErrorFor(t *testing.T, c *client.Conn, d time.Duration, id, code, field string) (client.Envelope, *client.Error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	env, err := c.Expect(ctx, func(e client.Envelope) bool {
		return (e.Type == "error" || e.Type == "command_response") && e.RequestID() == id
	})
	if err != nil {
		t.Errorf("%s: no answer to %s within %v (want %s): %v", c.ClientID(), id, d, code, err)
		return env, nil
	}
	e := client.AsError(env)
	if e == nil {
		t.Errorf("%s: answer to %s is not an error (want %s): %s", c.ClientID(), id, code, env.Raw)
		return env, nil
	}
	checkErr(t, id, env, e, code, field)
	return env, e
}

// nextReal returns the next envelope that is not a server notice.
func nextReal(ctx context.Context, c *client.Conn) (client.Envelope, error) {
	for {
		env, err := c.Next(ctx)
		if err != nil || !isNotice(env) {
			return env, err
		}
	}
}

var uniq atomic.Int64

// uniqueName is a fresh lowercase name for rooms, channels and client ids.
func uniqueName(prefix string) string {
	return fmt.Sprintf("%s%d_%d", prefix, time.Now().UnixNano()%1e6, uniq.Add(1))
}

// busServes proves the bus still serves newcomers: two fresh clients join a
// fresh channel and an event goes from one to the other. auth gives the dial
// options for a client id (nil: just the client_id).
func busServes(t *testing.T, s *server, auth func(id string) []client.Option) {
	t.Helper()
	ctx := testCtx(t, 5*time.Second)
	opts := func(id string) []client.Option {
		if auth != nil {
			return auth(id)
		}
		return []client.Option{client.WithClientID(id)}
	}
	a := dial(t, s, opts(uniqueName("hc_a"))...)
	b := dial(t, s, opts(uniqueName("hc_b"))...)
	room, ch := "health", uniqueName("ch")
	for _, c := range []*client.Conn{a, b} {
		if err := c.Join(ctx, room, ch); err != nil {
			t.Fatalf("bus no longer serves: %s cannot join %s:%s: %v", c.ClientID(), room, ch, err)
		}
	}
	id, err := a.Publish(room, ch, map[string]any{"message": "still there?"})
	if err != nil {
		t.Fatalf("bus no longer serves: publish: %v", err)
	}
	if _, err := b.Expect(ctx, func(e client.Envelope) bool { return e.ID == id }); err != nil {
		t.Fatalf("bus no longer serves: event %s not delivered: %v", id, err)
	}
	a.Close()
	b.Close()
}

// dialResult tries an upgrade and reports the HTTP status the server
// answered (101 when it upgraded) and the connection, if any.
func dialResult(s *server, opts ...client.Option) (int, *client.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, s.URL, opts...)
	if err == nil {
		return 101, c, nil
	}
	var se ws.StatusError
	if errors.As(err, &se) {
		return int(se), nil, err
	}
	return 0, nil, err
}

// expectHTTPStatus asserts that an upgrade with opts is refused with status.
func expectHTTPStatus(t *testing.T, s *server, status int, what string, opts ...client.Option) {
	t.Helper()
	got, c, err := dialResult(s, opts...)
	if c != nil {
		c.Close()
	}
	if got != status {
		t.Errorf("%s: upgrade answered %d (%v), want HTTP %d", what, got, err, status)
	}
}

// startServerArgs is startServer with extra command-line flags, for tests of
// the flag/env precedence.
func startServerArgs(t *testing.T, args []string, env ...string) *server {
	t.Helper()
	s := launchServer(t, nil, args, env)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if c, err := net.DialTimeout("tcp", s.Addr, 200*time.Millisecond); err == nil {
			c.Close()
			if procnet.ListensOn(s.cmd.Process.Pid, s.Port) { // not another test's server on a reused port
				return s
			}
		}
		if !s.Alive() || time.Now().After(deadline) {
			t.Fatalf("server with %v did not start: %s", args, s.Output())
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// launchServer starts the binary on fresh ports with args and env (and the
// environment without its ARQONBUS_ settings), run through wrap when it is
// not empty (wrap's last word is followed by the binary and its arguments),
// and stops it when the test ends. It does not wait for it to listen.
func launchServer(t *testing.T, wrap, args, env []string) *server {
	t.Helper()
	if buildErr != nil {
		t.Fatalf("server binary not available: %v", buildErr)
	}
	s := &server{Port: freePort(t), HTTPPort: freePort(t), TelemetryPort: freePort(t), out: &syncBuffer{}, exited: make(chan struct{})}
	s.Addr = "127.0.0.1:" + strconv.Itoa(s.Port)
	s.URL = "ws://" + s.Addr + "/"
	s.HTTPURL = "http://127.0.0.1:" + strconv.Itoa(s.HTTPPort)
	all := append(append(append([]string(nil), wrap...), binPath, "--host", "127.0.0.1", "--port", strconv.Itoa(s.Port),
		"--http-port", strconv.Itoa(s.HTTPPort), "--telemetry-port", strconv.Itoa(s.TelemetryPort)), args...)
	s.cmd = exec.Command(all[0], all[1:]...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "ARQONBUS_") {
			s.cmd.Env = append(s.cmd.Env, kv)
		}
	}
	s.cmd.Env = append(s.cmd.Env, testLoops)
	s.cmd.Env = append(s.cmd.Env, env...)
	s.cmd.Stdout, s.cmd.Stderr = s.out, s.out
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = s.cmd.Wait(); close(s.exited) }()
	t.Cleanup(func() {
		s.stop()
		if t.Failed() {
			out := s.Output()
			if len(out) > 20000 {
				out = "...\n" + out[len(out)-20000:]
			}
			t.Logf("arqonbus %v output:\n%s", args, out)
		}
	})
	return s
}

// mintJWT signs claims as a compact JWT with alg HS256, HS512 or none.
func mintJWT(alg, secret string, claims map[string]any) string {
	enc := base64.RawURLEncoding
	h, _ := json.Marshal(map[string]string{"alg": alg, "typ": "JWT"})
	c, _ := json.Marshal(claims)
	signing := enc.EncodeToString(h) + "." + enc.EncodeToString(c)
	var mac hash.Hash
	switch alg {
	case "HS256":
		mac = hmac.New(sha256.New, []byte(secret))
	case "HS512":
		mac = hmac.New(sha512.New, []byte(secret))
	default:
		return signing + "."
	}
	mac.Write([]byte(signing))
	return signing + "." + enc.EncodeToString(mac.Sum(nil))
}
