package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/arqonbus/arqonbus/client"
)

// floodOutcome collects, for a flood of n envelopes, which were refused with
// RATE_LIMITED (by the sender) and which arrived (at a receiver, or answered
// with success).
type floodOutcome struct {
	refused    map[string]bool
	ok         map[string]bool
	maxRetryMS int64
	last       time.Time // when the last outcome was seen
}

// collectRefusals reads c's answers to the ids in sent (RATE_LIMITED errors
// or successes) until done says enough, nothing came for quiet, or max passed.
func collectRefusals(t *testing.T, c *client.Conn, sent map[string]bool, out *floodOutcome, done func() bool, quiet, max time.Duration) {
	t.Helper()
	end := time.Now().Add(max)
	for !done() && time.Now().Before(end) {
		ctx, cancel := context.WithTimeout(context.Background(), quiet)
		env, err := c.Next(ctx)
		cancel()
		if err != nil {
			return
		}
		if isNotice(env) {
			continue
		}
		id := env.RequestID()
		if !sent[id] {
			t.Errorf("%s: unexpected %s", c.ClientID(), env.Raw)
			continue
		}
		out.last = time.Now()
		e := client.AsError(env)
		if e == nil {
			out.ok[id] = true
			continue
		}
		if e.Code != "RATE_LIMITED" || e.Status != 429 || env.Type != "error" {
			t.Errorf("flood: got %s, want RATE_LIMITED 429", env.Raw)
			continue
		}
		if e.RetryAfterMS <= 0 {
			t.Errorf("flood: RATE_LIMITED without retry_after_ms > 0: %s", env.Raw)
		}
		if e.RetryAfterMS > out.maxRetryMS {
			out.maxRetryMS = e.RetryAfterMS
		}
		out.refused[id] = true
	}
}

// TestMessageRateLimit: a client publishing far beyond its message rate has
// the excess refused with RATE_LIMITED (retry_after_ms), nothing refused is
// routed, what is routed stays within the bucket, the client is not
// disconnected (rate refusals are no violations) and may publish again later.
func TestMessageRateLimit(t *testing.T) {
	s := startServer(t, "ARQONBUS_RATE_LIMIT=50", "ARQONBUS_RATE_BURST=50")
	ctx := testCtx(t, 20*time.Second)
	sender := dial(t, s, client.WithClientID("rl_sender"))
	recv := dial(t, s, client.WithClientID("rl_receiver"))
	for _, c := range []*client.Conn{sender, recv} {
		if err := c.Join(ctx, "rl", "flood"); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(100 * time.Millisecond)

	const n = 200
	sent := map[string]bool{}
	start := time.Now()
	for i := 0; i < n; i++ {
		p, _ := json.Marshal(map[string]any{"message": "flood", "i": i})
		id := client.NewID("msg")
		sent[id] = true
		if err := sender.Send(client.Envelope{ID: id, Type: "event", Room: "rl", Channel: "flood", Payload: p}); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
	}
	out := &floodOutcome{refused: map[string]bool{}, ok: map[string]bool{}}
	collectRefusals(t, sender, sent, out, func() bool { return false }, 500*time.Millisecond, 5*time.Second)
	elapsed := out.last.Sub(start)
	if elapsed < 0 {
		elapsed = time.Since(start)
	}
	// The receiver's queue holds what was routed, in order.
	delivered := map[string]bool{}
	for {
		rctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		env, err := recv.Next(rctx)
		cancel()
		if err != nil {
			break
		}
		if env.Type == "event" && sent[env.ID] {
			delivered[env.ID] = true
		}
	}

	if len(out.refused) == 0 {
		t.Fatalf("200 events at once with --rate-limit 50 --rate-burst 50: nothing refused (%d delivered)", len(delivered))
	}
	for id := range delivered {
		if out.refused[id] {
			t.Errorf("event %s was refused and routed anyway", id)
		}
	}
	if got := len(delivered) + len(out.refused); got != n {
		t.Errorf("%d delivered + %d refused = %d, want every one of the %d events accounted for", len(delivered), len(out.refused), got, n)
	}
	allowed := 50 + int(50*elapsed.Seconds()) + 5
	if len(delivered) > allowed {
		t.Errorf("%d events routed in %v, want at most ~%d (burst 50 + 50/s)", len(delivered), elapsed, allowed)
	}
	t.Logf("flood: %d routed, %d refused in %v, max retry_after_ms %d", len(delivered), len(out.refused), elapsed, out.maxRetryMS)

	// Not disconnected (150 refusals would exceed 10 violations a minute).
	select {
	case <-sender.Done():
		code, reason := sender.CloseCode()
		t.Fatalf("sender disconnected by rate limiting: %d %q", code, reason)
	default:
	}
	wait := time.Duration(out.maxRetryMS)*time.Millisecond + 50*time.Millisecond
	if wait > 2*time.Second {
		t.Errorf("retry_after_ms %d is far beyond what 50/s needs", out.maxRetryMS)
		wait = 2 * time.Second
	}
	time.Sleep(wait)
	id, _ := sender.Publish("rl", "flood", map[string]any{"message": "after the flood"})
	if _, err := recv.Expect(ctx, func(e client.Envelope) bool { return e.ID == id }); err != nil {
		t.Errorf("event after retry_after_ms not delivered: %v", err)
	}
	busServes(t, s, nil)
}

// TestCommandRateLimit: commands have their own bucket: a command flood is
// refused with RATE_LIMITED (retry_after_ms) beyond it, while events of the
// same client still flow.
func TestCommandRateLimit(t *testing.T) {
	s := startServer(t, "ARQONBUS_COMMAND_RATE=20", "ARQONBUS_COMMAND_BURST=20")
	ctx := testCtx(t, 20*time.Second)
	c := dial(t, s, client.WithClientID("cr_flooder"))
	recv := dial(t, s, client.WithClientID("cr_receiver"))
	for _, x := range []*client.Conn{c, recv} {
		if err := x.Join(ctx, "cr", "flood"); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(1100 * time.Millisecond) // the joins' tokens are back

	const n = 100
	sent := map[string]bool{}
	start := time.Now()
	for i := 0; i < n; i++ {
		id, err := sendCommand(c, "cr", "flood", "ping", nil)
		if err != nil {
			t.Fatal(err)
		}
		sent[id] = true
	}
	out := &floodOutcome{refused: map[string]bool{}, ok: map[string]bool{}}
	collectRefusals(t, c, sent, out, func() bool { return len(out.refused)+len(out.ok) >= n }, 2*time.Second, 5*time.Second)
	elapsed := out.last.Sub(start)
	if len(out.refused)+len(out.ok) != n {
		t.Errorf("%d commands answered, %d refused: want all %d accounted for", len(out.ok), len(out.refused), n)
	}
	if len(out.refused) == 0 {
		t.Fatalf("100 commands at once with --command-rate 20 --command-burst 20: nothing refused")
	}
	allowed := 20 + int(20*elapsed.Seconds()) + 3
	if len(out.ok) > allowed {
		t.Errorf("%d commands answered in %v, want at most ~%d (burst 20 + 20/s)", len(out.ok), elapsed, allowed)
	}
	t.Logf("command flood: %d answered, %d refused in %v, max retry_after_ms %d", len(out.ok), len(out.refused), elapsed, out.maxRetryMS)

	// The command bucket is empty; events still flow.
	id, _ := c.Publish("cr", "flood", map[string]any{"message": "events are not commands"})
	if _, err := recv.Expect(ctx, func(e client.Envelope) bool { return e.ID == id }); err != nil {
		t.Errorf("event right after the command flood not delivered: %v", err)
	}
	select {
	case <-c.Done():
		t.Fatalf("command flooder disconnected")
	default:
	}
	wait := time.Duration(out.maxRetryMS)*time.Millisecond + 50*time.Millisecond
	if wait > 2*time.Second {
		t.Errorf("retry_after_ms %d is far beyond what 20/s needs", out.maxRetryMS)
		wait = 2 * time.Second
	}
	time.Sleep(wait)
	cmdOK(t, c, "cr", "flood", "ping", nil)
	busServes(t, s, nil)
}

// TestSubscriptionLimit: joining more than ARQONBUS_MAX_SUBSCRIPTIONS
// channels is FORBIDDEN; leaving one makes room.
func TestSubscriptionLimit(t *testing.T) {
	s := startServer(t, "ARQONBUS_MAX_SUBSCRIPTIONS=3")
	c := dial(t, s, client.WithClientID("sub_collector"))
	for i := 0; i < 3; i++ {
		cmdOK(t, c, "sub", fmt.Sprintf("ch%d", i), "join_channel", nil)
	}
	cmdErr(t, c, "sub", "ch3", "join_channel", nil, "FORBIDDEN", "")
	info := cmdOK(t, c, "sub", "ch0", "channel_info", nil)
	if n, _ := info.num("member_count"); n != 1 {
		t.Errorf("sub:ch0 member_count %v", n)
	}
	cmdOK(t, c, "sub", "ch0", "leave_channel", nil)
	cmdOK(t, c, "sub", "ch3", "join_channel", nil)
	// Others have their own budget.
	busServes(t, s, nil)
}

// TestFlagsWinOverEnv: every limit has a flag and an env variable; the flag
// wins.
func TestFlagsWinOverEnv(t *testing.T) {
	s := startServerArgs(t, []string{"--max-connections", "2", "--jwt-secret", testJWTSecret},
		"ARQONBUS_MAX_CONNECTIONS=1", "ARQONBUS_JWT_SECRET=env-secret-loses")
	expectHTTPStatus(t, s, 401, "token signed with the env's secret",
		client.WithParam("token", mintJWT("HS256", "env-secret-loses", map[string]any{"sub": "flag_d", "exp": time.Now().Add(time.Hour).Unix()})))
	a := dial(t, s, jwtAuth("flag_a")...)
	b := dial(t, s, jwtAuth("flag_b")...) // a cap of 1 (the env) would refuse this one
	expectHTTPStatus(t, s, 503, "third connection with --max-connections 2", jwtAuth("flag_c")...)
	cmdOK(t, a, "science", "general", "ping", nil)
	a.Close()
	b.Close()
	time.Sleep(200 * time.Millisecond)
	busServes(t, s, jwtAuth)
}
