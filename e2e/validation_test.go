package e2e

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/arqonbus/arqonbus/client"
	"github.com/gobwas/ws"
)

// statusOf is the HTTP-style status SPEC "Errors" pairs with each code.
var statusOf = map[string]int{
	"VALIDATION_ERROR": 400, "UNAUTHORIZED": 401, "FORBIDDEN": 403, "NOT_FOUND": 404,
	"TARGET_NOT_FOUND": 404, "COMMAND_NOT_FOUND": 404, "CONFLICT": 409, "RATE_LIMITED": 429,
	"TIMEOUT": 504, "UNAVAILABLE": 503, "INTERNAL": 500,
}

// envJSON builds an envelope as a map from a valid event for room science,
// channel general, with the given fields replaced (a nil value deletes the
// field), so each case breaks exactly one rule.
func envJSON(from, id string, change map[string]any) []byte {
	m := map[string]any{
		"version": "1.0", "id": id, "type": "event", "room": "science", "channel": "general",
		"from": from, "timestamp": "2025-01-01T12:00:00.000Z", "payload": map[string]any{"message": "x"},
	}
	for k, v := range change {
		if v == nil {
			delete(m, k)
		} else {
			m[k] = v
		}
	}
	b, _ := json.Marshal(m)
	return b
}

// expectError waits for the error envelope answering requestID and checks
// its code, status and (when field is not empty) field.
func expectError(t *testing.T, c *client.Conn, requestID, code, field string) *client.Error {
	t.Helper()
	ctx := testCtx(t, 5*time.Second)
	// Match on the next error envelope rather than on request_id, so that an
	// error with a wrong or missing request_id is reported as such instead of
	// as a timeout.
	env, err := c.Expect(ctx, func(e client.Envelope) bool { return e.Type == "error" })
	if err != nil {
		t.Errorf("no error envelope for %s (want %s): %v", requestID, code, err)
		return nil
	}
	e := client.AsError(env)
	// An id that is itself invalid need not be echoed (SPEC: request_id is
	// given "whenever there is one"); a valid one must be.
	if got := e.RequestID; requestID != "" && got != requestID &&
		!(got == "" && !strings.HasPrefix(requestID, "arq_")) {
		t.Errorf("error request_id %q, want %q: %s", got, requestID, env.Raw)
	}
	if e.Code != code {
		t.Errorf("request %s: code %q, want %q: %s", requestID, e.Code, code, env.Raw)
	}
	if e.Status != statusOf[code] {
		t.Errorf("request %s: status %d, want %d for %s: %s", requestID, e.Status, statusOf[code], code, env.Raw)
	}
	if field != "" && e.Field != field {
		t.Errorf("request %s: field %q, want %q: %s", requestID, e.Field, field, env.Raw)
	}
	if e.Message == "" {
		t.Errorf("request %s: error without message: %s", requestID, env.Raw)
	}
	if env.Version != "1.0" || env.From != client.ServerFrom || !strings.HasPrefix(env.ID, "arq_") {
		t.Errorf("request %s: malformed error envelope: %s", requestID, env.Raw)
	}
	return e
}

// TestValidationErrors sends envelopes that each break one SPEC rule and
// checks the error envelope, and that a fellow member of the channel receives
// none of them: it must see the valid marker event sent after them first.
func TestValidationErrors(t *testing.T) {
	s := startServer(t)
	ctx := testCtx(t, 20*time.Second)
	a := dial(t, s, client.WithClientID("val_a"))
	b := dial(t, s, client.WithClientID("val_b"))
	for _, c := range []*client.Conn{a, b} {
		if err := c.Join(ctx, "science", "general"); err != nil {
			t.Fatalf("%s join: %v", c.ClientID(), err)
		}
	}

	// At most 7 bad envelopes on one connection: SPEC closes it after 10
	// violations a minute (ARQONBUS_MAX_VIOLATIONS), which is tested apart.
	cases := []struct {
		name, id string
		change   map[string]any
		field    string
	}{
		{"wrong version", "arq_val_version", map[string]any{"version": "2.0"}, "version"},
		{"id without arq_", "val_no_prefix", nil, "id"},
		{"unknown type", "arq_val_type", map[string]any{"type": "shout"}, "type"},
		{"uppercase room", "arq_val_room", map[string]any{"room": "Science"}, "room"},
		{"bad timestamp", "arq_val_ts", map[string]any{"timestamp": "yesterday"}, "timestamp"},
		{"payload not an object", "arq_val_payload", map[string]any{"payload": "hello"}, "payload"},
		{"missing channel", "arq_val_channel", map[string]any{"channel": nil}, "channel"},
	}
	for _, tc := range cases {
		if err := a.SendRaw(envJSON("val_a", tc.id, tc.change)); err != nil {
			t.Fatalf("%s: send: %v", tc.name, err)
		}
		t.Run(tc.name, func(t *testing.T) { expectError(t, a, tc.id, "VALIDATION_ERROR", tc.field) })
	}

	t.Run("duplicate keys", func(t *testing.T) {
		// Two "from" keys: the server reads one, a recipient's parser may read the other. Refused,
		// and nothing reaches the channel (the marker below proves b got nothing).
		c := dial(t, s, client.WithClientID("val_dup"))
		if err := c.Join(ctx, "science", "general"); err != nil {
			t.Fatal(err)
		}
		raw := envJSON("val_dup", "arq_val_dup", nil)
		raw = append([]byte(`{"from":"val_a",`), raw[1:]...)
		if err := c.SendRaw(raw); err != nil {
			t.Fatal(err)
		}
		expectError(t, c, "arq_val_dup", "VALIDATION_ERROR", "from")
		dupType := append([]byte(`{"type":"command",`), envJSON("val_dup", "arq_val_dup2", nil)[1:]...)
		if err := c.SendRaw(dupType); err != nil {
			t.Fatal(err)
		}
		expectError(t, c, "arq_val_dup2", "VALIDATION_ERROR", "type")
	})

	// The marker proves b got nothing before it (events keep their order).
	marker, err := a.Publish("science", "general", map[string]any{"message": "marker"})
	if err != nil {
		t.Fatal(err)
	}
	env, err := b.Next(ctx)
	for err == nil && isNotice(env) {
		env, err = b.Next(ctx)
	}
	if err != nil || env.ID != marker {
		t.Errorf("val_b: first thing received should be the marker %s, got %s (err %v)", marker, env.Raw, err)
	}

	t.Run("not JSON", func(t *testing.T) {
		c := dial(t, s, client.WithClientID("val_notjson"))
		if err := c.SendRaw([]byte("hello, bus")); err != nil {
			t.Fatal(err)
		}
		// No id could be read, so no request_id to match on.
		expectError(t, c, "", "VALIDATION_ERROR", "")
	})

	t.Run("client sends system", func(t *testing.T) {
		c := dial(t, s, client.WithClientID("val_system"))
		if err := c.Join(ctx, "science", "general"); err != nil {
			t.Fatalf("join: %v", err)
		}
		if err := c.SendRaw(envJSON("val_system", "arq_val_system", map[string]any{"type": "system"})); err != nil {
			t.Fatal(err)
		}
		// SPEC says the client gets "an error envelope" without naming the
		// code; a validation error on type or FORBIDDEN both fit.
		env, err := c.Expect(ctx, func(e client.Envelope) bool { return e.RequestID() == "arq_val_system" })
		if err != nil {
			t.Fatalf("no answer to a client-sent system envelope: %v", err)
		}
		e := client.AsError(env)
		if e == nil || env.Type != "error" || (e.Code != "VALIDATION_ERROR" && e.Code != "FORBIDDEN") {
			t.Errorf("client-sent system: got %s, want an error VALIDATION_ERROR or FORBIDDEN", env.Raw)
		}
		expectNothing(t, b, 200*time.Millisecond, "member after a client-sent system envelope")
	})

	t.Run("event to channel not joined", func(t *testing.T) {
		c := dial(t, s, client.WithClientID("val_outsider"))
		if err := c.SendRaw(envJSON("val_outsider", "arq_val_outsider", nil)); err != nil {
			t.Fatal(err)
		}
		expectError(t, c, "arq_val_outsider", "FORBIDDEN", "")
		expectNothing(t, b, 200*time.Millisecond, "member after a non-member's event")
	})

	t.Run("from does not match client_id", func(t *testing.T) {
		c := dial(t, s, client.WithClientID("val_honest"))
		if err := c.Join(ctx, "science", "general"); err != nil {
			t.Fatalf("join: %v", err)
		}
		// The client gave client_id on the upgrade, so there is no claim to
		// make: another from is forged from the first envelope on.
		if err := c.SendRaw(envJSON("val_b", "arq_val_forged0", nil)); err != nil {
			t.Fatal(err)
		}
		expectError(t, c, "arq_val_forged0", "FORBIDDEN", "")
		expectNothing(t, b, 200*time.Millisecond, "member after a forged event")
	})

	t.Run("claim once then forged from", func(t *testing.T) {
		c := dial(t, s) // no client_id: the first envelope may claim one
		claim := `{"version":"1.0","id":"arq_claim_1","type":"command","room":"science","channel":"general","from":"val_claimer","timestamp":"2025-01-01T12:00:00.000Z","payload":{"command":"join_channel","parameters":{}}}`
		if err := c.SendRaw([]byte(claim)); err != nil {
			t.Fatal(err)
		}
		env, err := c.Expect(ctx, func(e client.Envelope) bool { return e.RequestID() == "arq_claim_1" })
		if err != nil || env.Type != "command_response" || client.AsError(env) != nil {
			t.Fatalf("claiming val_claimer with the first envelope: got %s (%v), want success", env.Raw, err)
		}
		// Forged: the claim is spent, another from is rejected.
		if err := c.SendRaw(envJSON("val_someone_else", "arq_claim_forged", nil)); err != nil {
			t.Fatal(err)
		}
		expectError(t, c, "arq_claim_forged", "FORBIDDEN", "")
		expectNothing(t, b, 200*time.Millisecond, "member after a forged event")
		// The claimed id keeps working and reaches b unchanged.
		if err := c.SendRaw(envJSON("val_claimer", "arq_claim_ok", nil)); err != nil {
			t.Fatal(err)
		}
		got, err := b.Expect(ctx, func(e client.Envelope) bool { return e.ID == "arq_claim_ok" })
		if err != nil || got.From != "val_claimer" {
			t.Errorf("event from the claimed id: got %s (%v)", got.Raw, err)
		}
	})

	t.Run("duplicate client_id", func(t *testing.T) {
		first := dial(t, s, client.WithClientID("val_dup"))
		dctx := testCtx(t, 5*time.Second)
		second, err := client.Dial(dctx, s.URL, client.WithClientID("val_dup"))
		switch {
		case err == nil:
			// Accepted at the upgrade: then it must not be val_dup, and a
			// CONFLICT error must follow.
			defer second.Close()
			if second.ClientID() == "val_dup" {
				t.Errorf("second connection welcomed as val_dup while the first is live: %s", second.Welcome().Raw)
			}
			expectError(t, second, "", "CONFLICT", "")
		default:
			var e *client.Error
			var se ws.StatusError
			if errors.As(err, &e) {
				if e.Code != "CONFLICT" || e.Status != 409 {
					t.Errorf("duplicate client_id: got %v, want CONFLICT 409", err)
				}
			} else if errors.As(err, &se) {
				if int(se) != 409 {
					t.Errorf("duplicate client_id refused with HTTP %d, want 409", int(se))
				}
			} else {
				t.Errorf("duplicate client_id: got %v, want CONFLICT (error envelope or HTTP 409)", err)
			}
		}
		// The first connection is untouched.
		if _, err := first.Command(ctx, "science", "general", "ping", nil); err != nil {
			t.Errorf("first val_dup connection broken after the duplicate: %v", err)
		}
	})

	t.Run("duplicate claim through from", func(t *testing.T) {
		c := dial(t, s)
		claim := `{"version":"1.0","id":"arq_claim_dup","type":"command","room":"science","channel":"general","from":"val_a","timestamp":"2025-01-01T12:00:00.000Z","payload":{"command":"ping","parameters":{}}}`
		if err := c.SendRaw([]byte(claim)); err != nil {
			t.Fatal(err)
		}
		expectError(t, c, "arq_claim_dup", "CONFLICT", "")
	})

	t.Run("too many violations", func(t *testing.T) {
		c := dial(t, s, client.WithClientID("val_spammer"))
		// ARQONBUS_MAX_VIOLATIONS defaults to 10 a minute; 12 must close.
		for i := 0; i < 12; i++ {
			if err := c.SendRaw(envJSON("val_spammer", "bad_id", nil)); err != nil {
				break // already closed: fine
			}
		}
		select {
		case <-c.Done():
		case <-time.After(5 * time.Second):
			t.Fatalf("connection still open after 12 violations")
		}
		if code, reason := c.CloseCode(); code != ws.StatusPolicyViolation {
			t.Errorf("close after violations: %d %q, want 1008", code, reason)
		}
	})
}
