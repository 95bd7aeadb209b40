package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/arqonbus/arqonbus/client"
)

// TestScenario4Go runs the quickstart's Scenario 4 (enterprise command /
// response) with Go clients: db_service handles "status" on
// services:database, api_service sends the seed's command verbatim,
// db_service answers with the seed's response verbatim, and api_service gets
// that answer, unchanged, as the only answer to arq_cmd_001.
func TestScenario4Go(t *testing.T) {
	s := startServer(t)
	ctx := testCtx(t, 15*time.Second)
	cmdJSON := bytes.TrimSpace(readTestdata(t, "scenario4-command.json"))
	respJSON := bytes.TrimSpace(readTestdata(t, "scenario4-response.json"))

	db := dial(t, s, client.WithClientID("db_service"), client.WithParam("client_type", "service"))
	api := dial(t, s, client.WithClientID("api_service"), client.WithParam("client_type", "service"))
	// A plain member of the channel: it must see neither the command nor the
	// response (commands go to one handler, responses to the requester).
	bystander := dial(t, s, client.WithClientID("s4_bystander"))
	if err := bystander.Join(ctx, "services", "database"); err != nil {
		t.Fatalf("bystander join: %v", err)
	}
	joined := cmdOK(t, db, "services", "database", "join_channel", map[string]any{"handles": []string{"status"}})
	if joined.str("room") != "services" || joined.str("channel") != "database" {
		t.Errorf("join_channel result names another channel: %v", joined)
	}

	// The requester is not a member of services:database.
	if err := api.SendRaw(cmdJSON); err != nil {
		t.Fatal(err)
	}
	got, err := db.Expect(ctx, func(e client.Envelope) bool { return e.Type == "command" })
	if err != nil {
		t.Fatalf("db_service did not receive the command: %v", err)
	}
	if got.ID != "arq_cmd_001" || got.From != "api_service" || got.Timestamp != "2025-01-01T12:00:00.000Z" {
		t.Errorf("command reached db_service altered: %s", got.Raw)
	}
	if !jsonEqualIgnoringMetadata(got.Raw, cmdJSON) {
		t.Errorf("command reached db_service altered:\nsent %s\ngot  %s", cmdJSON, got.Raw)
	}

	if err := db.SendRaw(respJSON); err != nil {
		t.Fatal(err)
	}
	resp, err := api.Expect(ctx, func(e client.Envelope) bool {
		return (e.Type == "command_response" || e.Type == "error") && e.RequestID() == "arq_cmd_001"
	})
	if err != nil {
		t.Fatalf("api_service got no answer to arq_cmd_001: %v", err)
	}
	if resp.Type != "command_response" || resp.ID != "arq_resp_001" || resp.From != "db_service" ||
		resp.Timestamp != "2025-01-01T12:00:00.025Z" || resp.Room != "services" || resp.Channel != "database" {
		t.Errorf("api_service's answer is not db_service's response: %s", resp.Raw)
	}
	if !jsonEqualIgnoringMetadata(resp.Raw, respJSON) {
		t.Errorf("response reached api_service altered:\nsent %s\ngot  %s", respJSON, resp.Raw)
	}
	var p struct {
		Status string          `json:"status"`
		Result json.RawMessage `json:"result"`
	}
	_ = json.Unmarshal(resp.Payload, &p)
	if p.Status != "success" || !jsonEqual(p.Result, []byte(`{"active_connections":15,"max_connections":100,"avg_response_time_ms":2.3}`)) {
		t.Errorf("response result differs from the seed's: %s", resp.Raw)
	}
	// Nothing else: no built-in status answer, no copy to the bystander, no
	// echo of the response to db_service.
	expectNothing(t, api, 300*time.Millisecond, "requester after the handler's answer")
	expectNothing(t, bystander, 50*time.Millisecond, "non-handler member of services:database")
	expectNothing(t, db, 50*time.Millisecond, "handler after answering")
}

// s4Line is one JSON line of scenario4-ws.mjs.
type s4Line struct {
	Event   string   `json:"event"`
	Data    string   `json:"data"`
	Outcome string   `json:"outcome"`
	Errors  []string `json:"errors"`
	DB      []string `json:"db"`
	API     []string `json:"api"`
}

// TestScenario4Node runs Scenario 4 between two Node clients over the ws
// package: the seed's two messages are sent as the exact text of the
// quickstart.
func TestScenario4Node(t *testing.T) {
	requireNode(t, false)
	s := startServer(t)
	cmdPath, _ := filepath.Abs("testdata/scenario4-command.json")
	respPath, _ := filepath.Abs("testdata/scenario4-response.json")
	cmdJSON := bytes.TrimSpace(readTestdata(t, "scenario4-command.json"))
	respJSON := bytes.TrimSpace(readTestdata(t, "scenario4-response.json"))

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", "scenario4-ws.mjs", s.URL, cmdPath, respPath, strconv.Itoa(10000))
	cmd.Dir = nodeDir()
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 2 * time.Second
	var stderr syncBuffer
	cmd.Stderr = &stderr
	out, runErr := cmd.Output()
	defer func() {
		if t.Failed() {
			t.Logf("node stdout:\n%s\nnode stderr:\n%s", out, stderr.String())
		}
	}()

	var dbGot, apiGot string
	var done *s4Line
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var l s4Line
		if json.Unmarshal(sc.Bytes(), &l) != nil {
			continue
		}
		switch l.Event {
		case "db_received":
			dbGot = l.Data
		case "api_received":
			apiGot = l.Data
		case "done":
			l := l
			done = &l
		}
	}
	if done == nil {
		t.Fatalf("node runner did not finish (exit %v)", runErr)
	}
	if done.Outcome != "ok" || runErr != nil {
		t.Errorf("node runner outcome %q (exit %v), errors %q", done.Outcome, runErr, done.Errors)
	}
	if dbGot == "" {
		t.Fatalf("db_service (node) never received the command")
	}
	if !jsonEqualIgnoringMetadata([]byte(dbGot), cmdJSON) {
		t.Errorf("command reached db_service altered:\nsent %s\ngot  %s", cmdJSON, dbGot)
	}
	if apiGot == "" {
		t.Fatalf("api_service (node) never received the response")
	}
	if !jsonEqualIgnoringMetadata([]byte(apiGot), respJSON) {
		t.Errorf("response reached api_service altered:\nsent %s\ngot  %s", respJSON, apiGot)
	}
	// Everything each side received: the welcome, db's join answer, the
	// command / the response; nothing else that answers arq_cmd_001.
	answers := 0
	for _, r := range done.API {
		var e client.Envelope
		if json.Unmarshal([]byte(r), &e) == nil && e.RequestID() == "arq_cmd_001" {
			answers++
		}
	}
	if answers != 1 {
		t.Errorf("api_service got %d answers to arq_cmd_001, want 1:\n%q", answers, done.API)
	}
}
