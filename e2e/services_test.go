package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/arqonbus/arqonbus/client"
)

// handler is a service client registered with parameters.handles; its
// goroutine reads everything it receives and, when it answers, replies to
// each command with a command_response carrying its own id in the result.
type handler struct {
	c        *client.Conn
	commands chan client.Envelope // every command it received
	others   chan client.Envelope // everything else (not notices)
}

func startHandler(t *testing.T, s *server, id, room, channel string, handles []string, answer bool) *handler {
	t.Helper()
	h := &handler{
		c:        dial(t, s, client.WithClientID(id), client.WithParam("client_type", "service")),
		commands: make(chan client.Envelope, 1024),
		others:   make(chan client.Envelope, 1024),
	}
	cmdOK(t, h.c, room, channel, "join_channel", map[string]any{"handles": handles})
	go func() {
		for {
			env, err := h.c.Next(context.Background())
			if err != nil {
				return
			}
			if isNotice(env) {
				continue
			}
			if env.Type != "command" {
				select {
				case h.others <- env:
				default:
				}
				continue
			}
			select {
			case h.commands <- env:
			default:
			}
			if answer {
				_ = h.reply(env, map[string]any{"handler": id})
			}
		}
	}()
	return h
}

// reply sends a command_response to cmd from h.
func (h *handler) reply(cmd client.Envelope, res any) error {
	p, _ := json.Marshal(map[string]any{"request_id": cmd.ID, "status": "success", "result": res})
	return h.c.Send(client.Envelope{ID: client.NewID("resp"), Type: "command_response", Room: cmd.Room, Channel: cmd.Channel, Payload: p})
}

// waitCommand waits for the next command h receives.
func (h *handler) waitCommand(t *testing.T, d time.Duration) client.Envelope {
	t.Helper()
	select {
	case env := <-h.commands:
		return env
	case <-time.After(d):
		t.Fatalf("handler %s received no command within %v", h.c.ClientID(), d)
	}
	return client.Envelope{}
}

// TestServiceTimeout: a handler that never answers makes the requester get
// TIMEOUT after ARQONBUS_COMMAND_TIMEOUT; its late answer then matches no
// pending request and is refused with NOT_FOUND.
func TestServiceTimeout(t *testing.T) {
	s := startServer(t, "ARQONBUS_COMMAND_TIMEOUT=500ms")
	h := startHandler(t, s, "slow_service", "svc", "slow", []string{"slow_op"}, false)
	req := dial(t, s, client.WithClientID("slow_requester"))

	start := time.Now()
	id, err := sendCommand(req, "svc", "slow", "slow_op", map[string]any{"n": 1})
	if err != nil {
		t.Fatal(err)
	}
	cmd := h.waitCommand(t, 3*time.Second)
	if cmd.ID != id || cmd.From != "slow_requester" {
		t.Errorf("handler got %s, want command %s", cmd.Raw, id)
	}
	_, e := expectErrorFor(t, req, 4*time.Second, id, "TIMEOUT", "")
	elapsed := time.Since(start)
	if e != nil && (elapsed < 400*time.Millisecond || elapsed > 2500*time.Millisecond) {
		t.Errorf("TIMEOUT after %v, want about 500ms", elapsed)
	}

	// The late answer: nobody waits for it any more.
	p, _ := json.Marshal(map[string]any{"request_id": id, "status": "success", "result": map[string]any{}})
	late := client.NewID("resp")
	if err := h.c.Send(client.Envelope{ID: late, Type: "command_response", Room: "svc", Channel: "slow", Payload: p}); err != nil {
		t.Fatal(err)
	}
	select {
	case env := <-h.others:
		if e := client.AsError(env); e == nil || env.Type != "error" {
			t.Errorf("late command_response: handler got %s, want error NOT_FOUND", env.Raw)
		} else {
			checkErr(t, "late command_response", env, e, "NOT_FOUND", "payload.request_id")
			if e.RequestID != late {
				t.Errorf("late command_response: error request_id %q, want the response's id %q", e.RequestID, late)
			}
		}
	case <-time.After(3 * time.Second):
		t.Errorf("late command_response: no error to the handler")
	}
	expectNothing(t, req, 200*time.Millisecond, "requester after its TIMEOUT")
	busServes(t, s, nil)
}

// TestServiceHandlerLoss: a handler that disconnects with requests in flight
// makes their requesters get UNAVAILABLE at once (well before the 5 s
// timeout); with no handler left the command is no longer routed.
func TestServiceHandlerLoss(t *testing.T) {
	s := startServer(t, "ARQONBUS_COMMAND_TIMEOUT=5s")
	h := startHandler(t, s, "lossy_service", "svc", "lossy", []string{"work"}, false)
	r1 := dial(t, s, client.WithClientID("loss_req_1"))
	r2 := dial(t, s, client.WithClientID("loss_req_2"))
	id1, _ := sendCommand(r1, "svc", "lossy", "work", nil)
	id2, _ := sendCommand(r2, "svc", "lossy", "work", nil)
	h.waitCommand(t, 3*time.Second)
	h.waitCommand(t, 3*time.Second)

	start := time.Now()
	h.c.Abort() // no close handshake: the TCP connection just goes
	for _, x := range []struct {
		c  *client.Conn
		id string
	}{{r1, id1}, {r2, id2}} {
		_, e := expectErrorFor(t, x.c, 3*time.Second, x.id, "UNAVAILABLE", "")
		if e != nil && time.Since(start) > 1500*time.Millisecond {
			t.Errorf("%s: UNAVAILABLE %v after the handler left, want at once", x.c.ClientID(), time.Since(start))
		}
	}

	// A handler that closes cleanly does the same.
	h2 := startHandler(t, s, "polite_service", "svc", "lossy", []string{"work"}, false)
	id3, _ := sendCommand(r1, "svc", "lossy", "work", nil)
	h2.waitCommand(t, 3*time.Second)
	start = time.Now()
	h2.c.Close()
	if _, e := expectErrorFor(t, r1, 3*time.Second, id3, "UNAVAILABLE", ""); e != nil && time.Since(start) > 1500*time.Millisecond {
		t.Errorf("UNAVAILABLE %v after a clean close, want at once", time.Since(start))
	}

	// No handler of "work" any more, and it is no built-in.
	cmdErr(t, r2, "svc", "lossy", "work", nil, "COMMAND_NOT_FOUND", "payload.command")
	busServes(t, s, nil)
}

// TestServiceRoundRobin: three handlers of one command share 9 requests 3
// each; answers go to the requester alone, unchanged; commands the handlers
// do not handle, or sent to other channels, are answered by the server.
func TestServiceRoundRobin(t *testing.T) {
	s := startServer(t)
	ctx := testCtx(t, 20*time.Second)
	var hs []*handler
	for i := 1; i <= 3; i++ {
		hs = append(hs, startHandler(t, s, fmt.Sprintf("rr_handler_%d", i), "svc", "pool", []string{"rr_job", "status"}, true))
	}
	member := dial(t, s, client.WithClientID("rr_member"))
	if err := member.Join(ctx, "svc", "pool"); err != nil {
		t.Fatal(err)
	}
	req := dial(t, s, client.WithClientID("rr_requester"))

	count := map[string]int{}
	for i := 0; i < 9; i++ {
		env, err := req.Command(ctx, "svc", "pool", "rr_job", map[string]any{"i": i})
		if err != nil {
			t.Fatalf("request %d: %v (%s)", i, err, env.Raw)
		}
		var p struct {
			Result struct {
				Handler string `json:"handler"`
			} `json:"result"`
		}
		_ = json.Unmarshal(env.Payload, &p)
		if env.From != p.Result.Handler || env.Type != "command_response" {
			t.Errorf("request %d: answer not delivered as the handler sent it: %s", i, env.Raw)
		}
		count[p.Result.Handler]++
	}
	for _, h := range hs {
		if n := count[h.c.ClientID()]; n != 3 {
			t.Errorf("round robin: %s answered %d of 9, want 3 (counts %v)", h.c.ClientID(), n, count)
		}
		if n := len(h.commands); n != 3 {
			t.Errorf("%s received %d commands, want the 3 it answered", h.c.ClientID(), n)
		}
		select {
		case env := <-h.others:
			t.Errorf("%s received %s", h.c.ClientID(), env.Raw)
		default:
		}
	}
	expectNothing(t, member, 100*time.Millisecond, "non-handler member of svc:pool")

	// "status" is handled on svc:pool, so it goes to a handler there ...
	env, err := req.Command(ctx, "svc", "pool", "status", nil)
	if err != nil || env.From == client.ServerFrom {
		t.Errorf("status on svc:pool: got %s (%v), want a handler's answer", env.Raw, err)
	}
	// ... but elsewhere, and for commands nobody handles, the server answers.
	r := cmdOK(t, req, "svc", "elsewhere", "status", nil)
	requireKeys(t, "built-in status", r, "node_id")
	cmdOK(t, req, "svc", "pool", "ping", nil)
	total := 0
	for _, h := range hs {
		total += len(h.commands)
	}
	if total != 10 {
		t.Errorf("handlers received %d commands in all, want 9 rr_job + 1 status", total)
	}
	busServes(t, s, nil)
}

// TestServiceUnmatchedResponse: a command_response that answers no pending
// request, or one that went to another handler, is refused with NOT_FOUND
// (field payload.request_id) to its sender and reaches nobody.
func TestServiceUnmatchedResponse(t *testing.T) {
	s := startServer(t)
	ctx := testCtx(t, 15*time.Second)
	stray := dial(t, s, client.WithClientID("stray_responder"))
	p, _ := json.Marshal(map[string]any{"request_id": "arq_cmd_nobody_asked", "status": "success", "result": map[string]any{}})
	rid := client.NewID("resp")
	if err := stray.Send(client.Envelope{ID: rid, Type: "command_response", Room: "svc", Channel: "pick", Payload: p}); err != nil {
		t.Fatal(err)
	}
	expectErrorFor(t, stray, 3*time.Second, rid, "NOT_FOUND", "payload.request_id")

	h1 := startHandler(t, s, "pick_1", "svc", "pick", []string{"pick"}, false)
	h2 := startHandler(t, s, "pick_2", "svc", "pick", []string{"pick"}, false)
	req := dial(t, s, client.WithClientID("pick_requester"))
	id, _ := sendCommand(req, "svc", "pick", "pick", nil)
	var chosen, other *handler
	var cmd client.Envelope
	select {
	case cmd = <-h1.commands:
		chosen, other = h1, h2
	case cmd = <-h2.commands:
		chosen, other = h2, h1
	case <-time.After(3 * time.Second):
		t.Fatalf("no handler received the command")
	}
	// The other handler answers in the chosen one's place: refused.
	forged := client.NewID("resp")
	fp, _ := json.Marshal(map[string]any{"request_id": id, "status": "success", "result": map[string]any{"by": "impostor"}})
	if err := other.c.Send(client.Envelope{ID: forged, Type: "command_response", Room: "svc", Channel: "pick", Payload: fp}); err != nil {
		t.Fatal(err)
	}
	select {
	case env := <-other.others:
		if e := client.AsError(env); e == nil {
			t.Errorf("answer from the handler that was not chosen: got %s, want NOT_FOUND", env.Raw)
		} else {
			checkErr(t, "answer from the handler that was not chosen", env, e, "NOT_FOUND", "payload.request_id")
		}
	case <-time.After(3 * time.Second):
		t.Errorf("answer from the handler that was not chosen: no error")
	}
	// The chosen handler's answer still goes through, and it is the only one.
	if err := chosen.reply(cmd, map[string]any{"by": chosen.c.ClientID()}); err != nil {
		t.Fatal(err)
	}
	env, err := req.Expect(ctx, func(e client.Envelope) bool { return e.RequestID() == id })
	if err != nil || env.Type != "command_response" || env.From != chosen.c.ClientID() {
		t.Errorf("requester: got %s (%v), want the chosen handler's answer", env.Raw, err)
	}
	expectNothing(t, req, 200*time.Millisecond, "requester after its one answer")
	busServes(t, s, nil)
}

// TestServicePendingLimit: at most ARQONBUS_MAX_PENDING_COMMANDS requests in
// flight per requester; the next one is refused with RATE_LIMITED and does
// not reach the handler.
func TestServicePendingLimit(t *testing.T) {
	s := startServer(t, "ARQONBUS_MAX_PENDING_COMMANDS=3", "ARQONBUS_COMMAND_TIMEOUT=5s")
	h := startHandler(t, s, "hold_service", "svc", "hold", []string{"hold"}, false)
	req := dial(t, s, client.WithClientID("hold_requester"))
	var held []client.Envelope
	for i := 0; i < 3; i++ {
		if _, err := sendCommand(req, "svc", "hold", "hold", map[string]any{"i": i}); err != nil {
			t.Fatal(err)
		}
		held = append(held, h.waitCommand(t, 3*time.Second))
	}
	id4, _ := sendCommand(req, "svc", "hold", "hold", map[string]any{"i": 3})
	expectErrorFor(t, req, 3*time.Second, id4, "RATE_LIMITED", "")
	select {
	case env := <-h.commands:
		t.Errorf("the refused 4th command reached the handler: %s", env.Raw)
	case <-time.After(100 * time.Millisecond):
	}
	// One answer frees a slot.
	if err := h.reply(held[0], map[string]any{"ok": true}); err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t, 5*time.Second)
	if _, err := req.Expect(ctx, func(e client.Envelope) bool { return e.RequestID() == held[0].ID }); err != nil {
		t.Fatalf("answer to the first held command: %v", err)
	}
	id5, _ := sendCommand(req, "svc", "hold", "hold", map[string]any{"i": 4})
	if got := h.waitCommand(t, 3*time.Second); got.ID != id5 {
		t.Errorf("after a slot freed: handler got %s, want %s", got.ID, id5)
	}
	// Another requester has its own budget.
	other := dial(t, s, client.WithClientID("hold_other"))
	id6, _ := sendCommand(other, "svc", "hold", "hold", nil)
	if got := h.waitCommand(t, 3*time.Second); got.ID != id6 {
		t.Errorf("other requester: handler got %s, want %s", got.ID, id6)
	}
	busServes(t, s, nil)
}
