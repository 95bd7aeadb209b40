package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/arqonbus/arqonbus/internal/redistest"
)

// The JavaScript SDK (sdk/js/arqonbus.js) against the real server: the shared tests of sdk/js/test
// run in Node (node.mjs, the file itself) and in headless Chromium (browser.mjs, page.html, the
// module as the server serves it at /sdk/arqonbus.js).

// sdkJSTest is the path of a file of sdk/js/test.
func sdkJSTest(name string) string { return filepath.Join(repoRoot, "sdk", "js", "test", name) }

type sdkJSCheck struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail"`
}

// sdkJSLine is one line the shared tests print.
type sdkJSLine struct {
	Event  string       `json:"event"`
	Error  string       `json:"error"`
	Checks []sdkJSCheck `json:"checks"`
	// resume.mjs
	Acked    []int `json:"acked"`
	Received []int `json:"received"`
	Failed   []struct {
		Seq     int    `json:"seq"`
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"failed"`
	Gaps   []json.RawMessage   `json:"gaps"`
	Errors []string            `json:"errors"`
	States map[string][]string `json:"states"`
	Phase  string              `json:"phase"`
	Hang   *struct {
		Code        string  `json:"code"`
		Message     string  `json:"message"`
		MsAfterDrop float64 `json:"msAfterDrop"`
	} `json:"hang"`
	MS float64 `json:"ms"`
}

// sdkJSNode runs sdk/js/test/node.mjs TEST against s.
func sdkJSNode(t *testing.T, ctx context.Context, s *server, test string, opts any) *nodeRunner[sdkJSLine] {
	args := []string{sdkJSTest("node.mjs"), test, s.URL}
	if opts != nil {
		b, _ := json.Marshal(opts)
		args = append(args, string(b))
	}
	return startNode[sdkJSLine](t, ctx, exec.CommandContext(ctx, "node", args...))
}

// sdkJSBrowser runs sdk/js/test/page.html?test=TEST in headless Chromium; the page is served from
// another origin than the bus and imports the SDK from s's /sdk/arqonbus.js.
func sdkJSBrowser(t *testing.T, ctx context.Context, s *server, test string, opts any, timeout time.Duration) *nodeRunner[sdkJSLine] {
	web := httptest.NewServer(http.FileServer(http.Dir(sdkJSTest(""))))
	t.Cleanup(web.Close)
	q := url.Values{"test": {test}, "bus": {s.URL}, "sdk": {s.HTTPURL + "/sdk/arqonbus.js"}}
	if opts != nil {
		b, _ := json.Marshal(opts)
		q.Set("opts", string(b))
	}
	page := web.URL + "/page.html?" + q.Encode()
	return startNode[sdkJSLine](t, ctx, exec.CommandContext(ctx, "node", sdkJSTest("browser.mjs"), page, fmt.Sprint(timeout.Milliseconds())))
}

// sdkJSRequireRoute fails when the server does not serve the SDK for pages of other origins.
func sdkJSRequireRoute(t *testing.T, s *server) {
	t.Helper()
	resp, err := http.Get(s.HTTPURL + "/sdk/arqonbus.js")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Access-Control-Allow-Origin") == "" {
		t.Fatalf("GET /sdk/arqonbus.js: %s, Access-Control-Allow-Origin %q; the browser page cannot import the SDK",
			resp.Status, resp.Header.Get("Access-Control-Allow-Origin"))
	}
}

// sdkJSExpectChecks waits for the runner's done line and reports each failed check.
func sdkJSExpectChecks(t *testing.T, r *nodeRunner[sdkJSLine]) {
	t.Helper()
	l := r.next("done")
	if l.Error != "" {
		t.Fatalf("test page/script failed: %s", l.Error)
	}
	if len(l.Checks) == 0 {
		t.Fatalf("no checks reported: %+v", l)
	}
	for _, c := range l.Checks {
		if !c.OK {
			t.Errorf("%s: %s", c.Name, c.Detail)
		}
	}
	t.Logf("%d checks", len(l.Checks))
}

// sdkJSAPIEnv is what sdk/js/test/api.mjs needs of the server: a short history (to make a gap) and a
// short handler timeout (to get TIMEOUT quickly).
var sdkJSAPIEnv = []string{"ARQONBUS_HISTORY_SIZE=5", "ARQONBUS_COMMAND_TIMEOUT=1s"}

// TestSDKJSNode runs every call of the SDK in Node.
func TestSDKJSNode(t *testing.T) {
	requireNode(t, false)
	s := startServer(t, sdkJSAPIEnv...)
	ctx := testCtx(t, 45*time.Second)
	sdkJSExpectChecks(t, sdkJSNode(t, ctx, s, "api", nil))
}

// TestSDKJSBrowser runs the same calls in headless Chromium, with the SDK the server serves.
func TestSDKJSBrowser(t *testing.T) {
	requireNode(t, true)
	s := startServer(t, sdkJSAPIEnv...)
	sdkJSRequireRoute(t, s)
	ctx := testCtx(t, 60*time.Second)
	sdkJSExpectChecks(t, sdkJSBrowser(t, ctx, s, "api", nil, 45*time.Second))
}

// TestSDKJSNodeHalfOpen: a connection the client gave up on while the server still has it; the
// reconnect's resume token takes the id over at once.
func TestSDKJSNodeHalfOpen(t *testing.T) {
	requireNode(t, false)
	s := startServer(t)
	ctx := testCtx(t, 45*time.Second)
	sdkJSExpectChecks(t, sdkJSNode(t, ctx, s, "halfopen", nil))
}

// TestSDKJSNodeResume kills the server (SIGKILL) under a steady acked publish rate and restarts it
// on the same port: the subscriber must see every acked event, once, in order.
func TestSDKJSNodeResume(t *testing.T) {
	requireNode(t, false)
	sdkJSResume(t, false, false, map[string]int{"before": 200, "after": 300})
}

// TestSDKJSNodeShutdownResume is the same with a graceful stop (SIGTERM): the server's shutdown
// notice sends the clients reconnecting.
func TestSDKJSNodeShutdownResume(t *testing.T) {
	requireNode(t, false)
	sdkJSResume(t, false, true, map[string]int{"before": 100, "after": 200})
}

// TestSDKJSBrowserResume is the resume test in headless Chromium, shorter.
func TestSDKJSBrowserResume(t *testing.T) {
	requireNode(t, true)
	sdkJSResume(t, true, false, map[string]int{"before": 100, "after": 150})
}

func sdkJSResume(t *testing.T, browser, graceful bool, opts map[string]int) {
	r := redistest.Run(t)
	env := redisEnv(r, "ARQONBUS_PERSIST=sync", "ARQONBUS_COMMAND_TIMEOUT=30s")
	s := startServer(t, env...)
	ctx := testCtx(t, 90*time.Second)
	var run *nodeRunner[sdkJSLine]
	if browser {
		sdkJSRequireRoute(t, s)
		run = sdkJSBrowser(t, ctx, s, "resume", opts, 70*time.Second)
	} else {
		run = sdkJSNode(t, ctx, s, "resume", opts)
	}
	l := run.next("ready")
	if l.Event != "ready" {
		t.Fatalf("runner did not get ready: event %q, error %q, phase %q, %d acked", l.Event, l.Error, l.Phase, len(l.Acked))
	}
	killed := time.Now()
	if graceful {
		s.stop()
	} else {
		s.kill()
	}
	s2 := restartServer(t, s, env...)
	t.Logf("server stopped (graceful %v) and restarted in %v", graceful, time.Since(killed).Round(time.Millisecond))
	l = run.next("done")
	sdkJSCheckResume(t, l, opts["before"]+opts["after"])
	_ = s2
}

func sdkJSCheckResume(t *testing.T, l sdkJSLine, minAcked int) {
	t.Helper()
	if l.Error != "" {
		t.Fatalf("runner failed: %s", l.Error)
	}
	t.Logf("phase %s in %.0f ms: %d acked, %d received, %d failed %v, gaps %s, errors %q, states %v",
		l.Phase, l.MS, len(l.Acked), len(l.Received), len(l.Failed), l.Failed, l.Gaps, l.Errors, l.States)
	if l.Phase != "after" || len(l.Acked) < minAcked {
		t.Fatalf("publisher did not get through the restart: phase %q, %d acked (want >= %d)", l.Phase, len(l.Acked), minAcked)
	}
	for i := 1; i < len(l.Received); i++ {
		if l.Received[i] <= l.Received[i-1] {
			t.Fatalf("received not strictly increasing at %d: ... %v ...", i, l.Received[max(0, i-5):min(len(l.Received), i+5)])
		}
	}
	got := make(map[int]bool, len(l.Received))
	for _, n := range l.Received {
		got[n] = true
	}
	var missing []int
	for _, n := range l.Acked {
		if !got[n] {
			missing = append(missing, n)
		}
	}
	if len(missing) > 0 {
		t.Errorf("%d acked events never received (gap): %v", len(missing), missing[:min(len(missing), 20)])
	}
	for _, f := range l.Failed {
		if f.Code != "DISCONNECTED" {
			t.Errorf("publish %d failed with %s (%s), want only DISCONNECTED for those in flight at the kill", f.Seq, f.Code, f.Message)
		}
	}
	if len(l.Gaps) > 0 {
		t.Errorf("replay reported gaps: %s", l.Gaps)
	}
	if l.Hang == nil || l.Hang.Code != "DISCONNECTED" || l.Hang.MsAfterDrop > 1000 {
		t.Errorf("command in flight at the kill: %+v, want DISCONNECTED within 1 s of the drop", l.Hang)
	}
}
