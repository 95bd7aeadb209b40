package e2e

// Commands that collide or ask for a lot (issue 9): two services that use
// the same command id, one handler.

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/arqonbus/arqonbus/client"
	"github.com/arqonbus/arqonbus/internal/redistest"
)

// quickstartCommand is the quickstart's Scenario 4 command (id arq_cmd_001) from from.
func quickstartCommand(room, channel, from string) []byte {
	return []byte(`{"version":"1.0","id":"arq_cmd_001","type":"command","room":"` + room + `","channel":"` + channel +
		`","from":"` + from + `","timestamp":"2025-01-01T12:00:00.000Z","payload":{"command":"status","parameters":{"check":"connection_pool"}}}`)
}

// slowAnswers makes h answer every command it receives after delay, with the
// command's sender and id in the result, and records what it received.
func slowAnswers(t *testing.T, h *handler, delay time.Duration) (received func() []client.Envelope) {
	t.Helper()
	var mu sync.Mutex
	var got []client.Envelope
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() { stop(); <-done })
	go func() {
		defer close(done)
		for {
			select {
			case <-ctx.Done():
				return
			case cmd := <-h.commands:
				mu.Lock()
				got = append(got, cmd)
				mu.Unlock()
				select {
				case <-time.After(delay):
				case <-ctx.Done():
					return
				}
				_ = h.reply(cmd, map[string]any{"requester": cmd.From, "id": cmd.ID})
			}
		}
	}()
	return func() []client.Envelope {
		mu.Lock()
		defer mu.Unlock()
		return append([]client.Envelope(nil), got...)
	}
}

// sameIDRequesters has every requester send the quickstart's arq_cmd_001 to
// room:channel at once and checks that each gets its own answer, and that the
// handler saw each command exactly as sent.
func sameIDRequesters(t *testing.T, reqs []*client.Conn, room, channel string, received func() []client.Envelope) {
	t.Helper()
	ctx := testCtx(t, 20*time.Second)
	sent := map[string][]byte{}
	for _, r := range reqs {
		cmd := quickstartCommand(room, channel, r.ClientID())
		sent[r.ClientID()] = cmd
		if err := r.SendRaw(cmd); err != nil {
			t.Fatal(err)
		}
	}
	for _, r := range reqs {
		env, err := r.Expect(ctx, func(e client.Envelope) bool {
			return (e.Type == "error" || e.Type == "command_response") && e.RequestID() == "arq_cmd_001"
		})
		if err != nil {
			t.Errorf("%s: no answer to arq_cmd_001: %v", r.ClientID(), err)
			continue
		}
		var p struct {
			Result struct {
				Requester string `json:"requester"`
				ID        string `json:"id"`
			} `json:"result"`
		}
		_ = json.Unmarshal(env.Payload, &p)
		if env.Type != "command_response" || p.Result.Requester != r.ClientID() || p.Result.ID != "arq_cmd_001" {
			t.Errorf("%s: got %s, want the handler's answer to its own arq_cmd_001", r.ClientID(), env.Raw)
		}
	}
	got := received()
	if len(got) != len(reqs) {
		t.Errorf("handler received %d commands, want %d", len(got), len(reqs))
	}
	for _, cmd := range got {
		if want := sent[cmd.From]; want == nil || !jsonEqual(cmd.Raw, want) {
			t.Errorf("handler got %s, want a command exactly as sent", cmd.Raw)
		}
	}
	for _, r := range reqs {
		expectNothing(t, r, 200*time.Millisecond, "requester after its answer")
	}
}

// TestCommandIDsPerRequester: two services both send the quickstart's
// arq_cmd_001 to one handler (which takes 300 ms to answer): both get their
// own answer, and the handler sees both commands as sent. The same requester
// reusing an id still in flight gets CONFLICT.
func TestCommandIDsPerRequester(t *testing.T) {
	s := startServer(t, "ARQONBUS_COMMAND_TIMEOUT=5s")
	room, ch := "services", uniqueName("database")
	h := startHandler(t, s, uniqueName("db_service"), room, ch, []string{"status"}, false)
	received := slowAnswers(t, h, 300*time.Millisecond)
	api := dial(t, s, client.WithClientID(uniqueName("api_service")), client.WithParam("client_type", "service"))
	web := dial(t, s, client.WithClientID(uniqueName("web_service")), client.WithParam("client_type", "service"))
	sameIDRequesters(t, []*client.Conn{api, web}, room, ch, received)

	// One requester, one id, twice while the first is in flight: the second is refused.
	cmd := quickstartCommand(room, ch, api.ClientID())
	_ = api.SendRaw(cmd)
	_ = api.SendRaw(cmd)
	expectErrorFor(t, api, 3*time.Second, "arq_cmd_001", "CONFLICT", "id")
	ctx := testCtx(t, 5*time.Second)
	if env, err := api.Expect(ctx, func(e client.Envelope) bool { return e.RequestID() == "arq_cmd_001" }); err != nil || env.Type != "command_response" {
		t.Errorf("the first arq_cmd_001: got %s (%v), want its answer", env.Raw, err)
	}
	busServes(t, s, nil)
}

// TestClusterCommandIDsPerRequester: the same on a bus of two nodes, with
// the handler on node 1 and requesters on both nodes (two on node 0, so that
// node 0 forwards two arq_cmd_001 to the same remote handler).
func TestClusterCommandIDsPerRequester(t *testing.T) {
	r := redistest.Run(t)
	nodes := startNodes(t, r.URL(), 2, "ARQONBUS_COMMAND_TIMEOUT=5s")
	room, ch := "services", uniqueName("database")
	h := startHandler(t, nodes[1], uniqueName("db_service"), room, ch, []string{"status"}, false)
	received := slowAnswers(t, h, 300*time.Millisecond)
	var reqs []*client.Conn
	for _, n := range []int{0, 0, 1} {
		reqs = append(reqs, dial(t, nodes[n], client.WithClientID(uniqueName("svc")), client.WithParam("client_type", "service")))
	}
	waitHandlers(t, reqs[0], room, ch, "status", 1)
	sameIDRequesters(t, reqs, room, ch, received)
}
