package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/arqonbus/arqonbus/client"
)

// quickstartURL is the endpoint as written in the quickstart's Scenario 1.
const quickstartURL = "ws://localhost:9100"

// scenario1JS is the quickstart's Scenario 1 code block with only the port
// changed to the test server's: testdata/scenario1.js is a verbatim copy of
// the block (TestScenario1CodeIsVerbatim keeps it so).
func scenario1JS(t *testing.T, port int) string {
	t.Helper()
	b, err := os.ReadFile("testdata/scenario1.js")
	if err != nil {
		t.Fatal(err)
	}
	src := string(b)
	if strings.Count(src, quickstartURL) != 1 {
		t.Fatalf("testdata/scenario1.js should contain %s exactly once", quickstartURL)
	}
	return strings.Replace(src, quickstartURL, fmt.Sprintf("ws://localhost:%d", port), 1)
}

// TestScenario1CodeIsVerbatim checks that testdata/scenario1.js is still the
// code block of Scenario 1 in the seed quickstart, when the quickstart can be
// found (it lives in the shared folder beside the repository, not in it).
func TestScenario1CodeIsVerbatim(t *testing.T) {
	md := seedQuickstart(t)
	const open = "**Code Example** (JavaScript):\n```javascript\n"
	i := bytes.Index(md, []byte(open))
	if i < 0 {
		t.Fatal("quickstart: Scenario 1 code block not found")
	}
	block := md[i+len(open):]
	block = block[:bytes.Index(block, []byte("```"))]
	if !bytes.Equal(block, readTestdata(t, "scenario1.js")) {
		t.Fatal("testdata/scenario1.js differs from Scenario 1's code block in the quickstart")
	}
}

// nodeDir is e2e/node, where the Node scripts and their node_modules live.
func nodeDir() string { return filepath.Join(repoRoot, "e2e", "node") }

// requireNode skips (or, under CI=true, fails) when Node or the packages of
// e2e/node are missing; scripts/install-test-deps.sh installs them.
func requireNode(t *testing.T, needChromium bool) {
	t.Helper()
	var missing []string
	if _, err := exec.LookPath("node"); err != nil {
		missing = append(missing, "node")
	}
	if _, err := os.Stat(filepath.Join(nodeDir(), "node_modules", "ws")); err != nil {
		missing = append(missing, "e2e/node/node_modules/ws")
	}
	if needChromium {
		if _, err := os.Stat(filepath.Join(nodeDir(), "node_modules", "playwright-core")); err != nil {
			missing = append(missing, "e2e/node/node_modules/playwright-core")
		}
		if _, err := os.Stat("/usr/bin/chromium"); err != nil {
			missing = append(missing, "/usr/bin/chromium")
		}
	}
	if len(missing) == 0 {
		return
	}
	msg := fmt.Sprintf("missing %s: run scripts/install-test-deps.sh", strings.Join(missing, ", "))
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// nodeLine is one JSON line a Scenario 1 runner prints.
type nodeLine struct {
	Event   string `json:"event"`
	Data    string `json:"data"`
	Outcome string `json:"outcome"`
	State   struct {
		Arq struct {
			Opened     bool     `json:"opened"`
			Subscribed bool     `json:"subscribed"`
			SentText   string   `json:"sentText"`
			Received   []string `json:"received"`
			Errors     []string `json:"errors"`
			Closed     *struct {
				Code   int    `json:"code"`
				Reason string `json:"reason"`
			} `json:"closed"`
		} `json:"arq"`
		Log string `json:"log"`
	} `json:"state"`
}

// runScenario1 drives one Scenario 1 run. A Go client joined to
// science:general must receive the runner's "Hello everyone!" event as sent;
// then the Go client publishes a reply the runner must receive.
// makeCmd builds the runner command for the text the reply carries.
func runScenario1(t *testing.T, s *server, timeout time.Duration, makeCmd func(ctx context.Context, expect string) *exec.Cmd) {
	ctx := testCtx(t, timeout)
	goc := dial(t, s, client.WithClientID("go_client_1"))
	if err := goc.Join(ctx, "science", "general"); err != nil {
		t.Fatalf("go client join science:general: %v", err)
	}
	expect := "Hello from Go " + client.NewID("reply")

	runner := startNode[nodeLine](t, ctx, makeCmd(ctx, expect))

	// 1. The runner subscribed and sent the quickstart's message.
	l := runner.next(`"sent"`)
	if l.Event == "done" {
		t.Fatalf("runner finished without sending the message: outcome %s, state %+v", l.Outcome, l.State.Arq)
	}
	var sent client.Envelope
	if err := json.Unmarshal([]byte(l.Data), &sent); err != nil {
		t.Fatalf("runner sent non-JSON %q", l.Data)
	}
	var sentFields map[string]json.RawMessage
	_ = json.Unmarshal([]byte(l.Data), &sentFields)

	// 2. The Go member of science:general receives it unchanged.
	got, err := goc.Expect(ctx, func(e client.Envelope) bool { return e.ID == "arq_msg_001" })
	if err != nil {
		t.Fatalf("go client did not receive the quickstart message arq_msg_001: %v", err)
	}
	if got.ID != "arq_msg_001" || got.From != "web_client_1" || got.Type != "event" ||
		got.Room != "science" || got.Channel != "general" || got.Version != "1.0" {
		t.Errorf("routed message differs from the quickstart's: %s", got.Raw)
	}
	if got.Timestamp != sent.Timestamp {
		t.Errorf("timestamp changed in routing: sent %q, got %q", sent.Timestamp, got.Timestamp)
	}
	if !bytes.Equal(got.Payload, sentFields["payload"]) {
		t.Errorf("payload changed in routing: sent %s, got %s", sentFields["payload"], got.Payload)
	}
	var msg struct {
		Message string `json:"message"`
	}
	if json.Unmarshal(got.Payload, &msg); msg.Message != "Hello everyone!" {
		t.Errorf("payload.message %q, want Hello everyone!", msg.Message)
	}

	// 3. The Go client's reply reaches the runner.
	replyID, err := goc.Publish("science", "general", map[string]string{"message": expect})
	if err != nil {
		t.Fatal(err)
	}
	l = runner.next(`"done"`)
	for l.Event != "done" {
		l = runner.next(`"done"`)
	}
	waitErr := runner.wait()
	arq := l.State.Arq
	if l.Outcome != "ok" || waitErr != nil {
		t.Errorf("runner outcome %q (exit: %v); page log:\n%s", l.Outcome, waitErr, l.State.Log)
	}
	if !arq.Opened || !arq.Subscribed {
		t.Errorf("runner state: opened=%v subscribed=%v", arq.Opened, arq.Subscribed)
	}
	if len(arq.Errors) > 0 {
		t.Errorf("runner saw errors: %q", arq.Errors)
	}
	if len(arq.Received) == 0 {
		t.Fatalf("runner received nothing")
	}
	var first client.Envelope
	if json.Unmarshal([]byte(arq.Received[0]), &first); first.Type != "system" || first.Channel != "welcome" {
		t.Errorf("runner's first message is not the welcome: %s", arq.Received[0])
	}
	found := false
	for _, r := range arq.Received {
		var e client.Envelope
		if json.Unmarshal([]byte(r), &e) != nil || e.ID != replyID {
			continue
		}
		found = true
		if e.Type != "event" || e.From != "go_client_1" || e.Room != "science" || e.Channel != "general" {
			t.Errorf("reply arrived altered: %s", r)
		}
		if !strings.Contains(string(e.Payload), expect) {
			t.Errorf("reply payload altered: %s", r)
		}
	}
	if !found {
		t.Errorf("runner did not receive the Go client's reply %s; received:\n%s", replyID, strings.Join(arq.Received, "\n"))
	}
	for _, r := range arq.Received {
		if strings.Contains(r, `"id":"arq_msg_001"`) && !strings.Contains(r, "request_id") {
			t.Errorf("sender received its own event back: %s", r)
		}
	}
}

// TestScenario1Browser runs Scenario 1's JavaScript, as the quickstart has it,
// in headless Chromium against the real server.
func TestScenario1Browser(t *testing.T) {
	requireNode(t, true)
	s := startServer(t)
	script := scenario1JS(t, s.Port)
	harness, err := os.ReadFile("testdata/harness.js")
	if err != nil {
		t.Fatal(err)
	}
	// The quickstart's block goes into the page unchanged except for the
	// port (see scenario1JS); the harness follows in a second script.
	page := "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>ArqonBus Scenario 1</title></head>\n" +
		"<body><h1>ArqonBus Scenario 1</h1><pre id=\"log\" style=\"white-space:pre-wrap\"></pre>\n" +
		"<script>\n" + script + "</script>\n" +
		"<script>\n" + string(harness) + "</script>\n</body></html>\n"
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write([]byte(page))
	}))
	defer web.Close()

	runScenario1(t, s, 60*time.Second, func(ctx context.Context, expect string) *exec.Cmd {
		cmd := exec.CommandContext(ctx, "node", "scenario1-browser.mjs", web.URL+"/", expect, "30000")
		if dir := os.Getenv("ARQONBUS_E2E_ARTIFACTS"); dir != "" {
			cmd.Env = append(os.Environ(), "ARQ_SCREENSHOT="+filepath.Join(dir, "scenario1-browser.png"))
		}
		return cmd
	})
}

// TestScenario1Node runs the same code and harness in Node, with the ws
// package as WebSocket: no browser involved.
func TestScenario1Node(t *testing.T) {
	requireNode(t, false)
	s := startServer(t)
	dir := t.TempDir()
	scriptPath := filepath.Join(dir, "scenario1.js")
	if err := os.WriteFile(scriptPath, []byte(scenario1JS(t, s.Port)), 0o644); err != nil {
		t.Fatal(err)
	}
	harnessPath, err := filepath.Abs("testdata/harness.js")
	if err != nil {
		t.Fatal(err)
	}
	runScenario1(t, s, 30*time.Second, func(ctx context.Context, expect string) *exec.Cmd {
		return exec.CommandContext(ctx, "node", "scenario1-ws.mjs", scriptPath, harnessPath, expect, "15000")
	})
}
