package e2e

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/arqonbus/arqonbus/client"
)

// checkServerEnvelope checks the fields every server-made envelope must carry
// (SPEC "Envelope" applies to the server's own envelopes too).
func checkServerEnvelope(t *testing.T, env client.Envelope, typ string) {
	t.Helper()
	if env.Version != "1.0" {
		t.Errorf("%s: version %q, want 1.0: %s", typ, env.Version, env.Raw)
	}
	if env.Type != typ {
		t.Errorf("type %q, want %q: %s", env.Type, typ, env.Raw)
	}
	if !strings.HasPrefix(env.ID, "arq_") {
		t.Errorf("%s: id %q does not start with arq_: %s", typ, env.ID, env.Raw)
	}
	if env.From != client.ServerFrom {
		t.Errorf("%s: from %q, want %q: %s", typ, env.From, client.ServerFrom, env.Raw)
	}
	if _, err := time.Parse(time.RFC3339Nano, env.Timestamp); err != nil {
		t.Errorf("%s: timestamp %q is not RFC 3339: %s", typ, env.Timestamp, env.Raw)
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(env.Payload, &obj); err != nil || obj == nil {
		t.Errorf("%s: payload is not an object: %s", typ, env.Raw)
	}
}

// TestIdentity covers the welcome envelope, the generated client id, and the
// built-in ping and status commands.
func TestIdentity(t *testing.T) {
	s := startServer(t)
	ctx := testCtx(t, 20*time.Second)

	t.Run("welcome with client_id", func(t *testing.T) {
		c := dial(t, s, client.WithClientID("ident_alice"), client.WithParam("client_type", "service"))
		w := c.Welcome()
		checkServerEnvelope(t, w, "system")
		if w.Room != "*" || w.Channel != "welcome" {
			t.Errorf("welcome on %s:%s, want *:welcome: %s", w.Room, w.Channel, w.Raw)
		}
		var p struct {
			ClientID        string `json:"client_id"`
			ServerVersion   string `json:"server_version"`
			ProtocolVersion string `json:"protocol_version"`
			NodeID          string `json:"node_id"`
		}
		if err := json.Unmarshal(w.Payload, &p); err != nil {
			t.Fatalf("welcome payload: %v: %s", err, w.Raw)
		}
		if p.ClientID != "ident_alice" {
			t.Errorf("welcome client_id %q, want ident_alice: %s", p.ClientID, w.Raw)
		}
		if p.ServerVersion == "" || p.NodeID == "" {
			t.Errorf("welcome lacks server_version or node_id: %s", w.Raw)
		}
		if p.ProtocolVersion != "1.0" {
			t.Errorf("welcome protocol_version %q, want 1.0: %s", p.ProtocolVersion, w.Raw)
		}
	})

	t.Run("generated client id", func(t *testing.T) {
		a := dial(t, s)
		b := dial(t, s)
		if !strings.HasPrefix(a.ClientID(), "arq_client_") {
			t.Errorf("generated id %q does not start with arq_client_", a.ClientID())
		}
		if a.ClientID() == b.ClientID() {
			t.Errorf("two connections got the same generated id %q", a.ClientID())
		}
	})

	t.Run("ping", func(t *testing.T) {
		c := dial(t, s, client.WithClientID("ident_ping"))
		env, err := c.Command(ctx, "science", "general", "ping", nil)
		if err != nil {
			t.Fatalf("ping: %v (%s)", err, env.Raw)
		}
		checkServerEnvelope(t, env, "command_response")
		var p struct {
			Status string          `json:"status"`
			Result json.RawMessage `json:"result"`
		}
		_ = json.Unmarshal(env.Payload, &p)
		if p.Status != "success" {
			t.Errorf("ping status %q, want success: %s", p.Status, env.Raw)
		}
		// SPEC: "ping: pong with server time". The key names are not fixed,
		// so look for the word and for an object result.
		if !strings.Contains(string(p.Result), "pong") || !strings.HasPrefix(string(p.Result), "{") {
			t.Errorf("ping result does not say pong: %s", env.Raw)
		}
		if env.Room != "science" || env.Channel != "general" {
			t.Logf("note: ping answered on %s:%s", env.Room, env.Channel)
		}
	})

	t.Run("status", func(t *testing.T) {
		c := dial(t, s, client.WithClientID("ident_status"))
		if err := c.Join(ctx, "science", "general"); err != nil {
			t.Fatalf("join: %v", err)
		}
		env, err := c.Command(ctx, "science", "general", "status", nil)
		if err != nil {
			t.Fatalf("status: %v (%s)", err, env.Raw)
		}
		checkServerEnvelope(t, env, "command_response")
		var p struct {
			Status string                     `json:"status"`
			Result map[string]json.RawMessage `json:"result"`
		}
		if err := json.Unmarshal(env.Payload, &p); err != nil {
			t.Fatalf("status payload: %v: %s", err, env.Raw)
		}
		if p.Status != "success" || len(p.Result) == 0 {
			t.Errorf("status answer has no result: %s", env.Raw)
		}
		// SPEC lists uptime and the node id among status fields; names vary,
		// so look for them loosely.
		raw := strings.ToLower(string(env.Payload))
		for _, want := range []string{"uptime", "node"} {
			if !strings.Contains(raw, want) {
				t.Errorf("status result mentions no %q: %s", want, env.Raw)
			}
		}
	})

	t.Run("unknown command", func(t *testing.T) {
		c := dial(t, s, client.WithClientID("ident_unknown"))
		env, err := c.Command(ctx, "science", "general", "no_such_command", nil)
		e, ok := err.(*client.Error)
		if !ok {
			t.Fatalf("unknown command: got %v (%s), want COMMAND_NOT_FOUND", err, env.Raw)
		}
		if e.Code != "COMMAND_NOT_FOUND" || e.Status != 404 {
			t.Errorf("unknown command: got %s %d, want COMMAND_NOT_FOUND 404: %s", e.Code, e.Status, env.Raw)
		}
	})
}

// TestPrivate checks direct messages: delivered unchanged to payload.target
// only, TARGET_NOT_FOUND when the target is not connected.
func TestPrivate(t *testing.T) {
	s := startServer(t)
	ctx := testCtx(t, 15*time.Second)
	a := dial(t, s, client.WithClientID("pm_a"))
	b := dial(t, s, client.WithClientID("pm_b"))
	other := dial(t, s, client.WithClientID("pm_other"))

	raw := `{"version":"1.0","id":"arq_pm_001","type":"private","from":"pm_a","timestamp":"2025-01-01T12:00:00.000Z","payload":{"target":"pm_b","message":"psst"}}`
	if err := a.SendRaw([]byte(raw)); err != nil {
		t.Fatal(err)
	}
	got, err := b.Expect(ctx, func(e client.Envelope) bool { return e.ID == "arq_pm_001" })
	if err != nil {
		t.Fatalf("pm_b did not get the private message: %v", err)
	}
	if got.Type != "private" || got.From != "pm_a" || got.Timestamp != "2025-01-01T12:00:00.000Z" {
		t.Errorf("private message changed in transit: %s", got.Raw)
	}
	if string(got.Payload) != `{"target":"pm_b","message":"psst"}` {
		t.Errorf("private payload changed: %s", got.Payload)
	}

	raw = `{"version":"1.0","id":"arq_pm_002","type":"private","from":"pm_a","timestamp":"2025-01-01T12:00:00.000Z","payload":{"target":"pm_nobody","message":"hello?"}}`
	if err := a.SendRaw([]byte(raw)); err != nil {
		t.Fatal(err)
	}
	env, err := a.Expect(ctx, func(e client.Envelope) bool { return e.RequestID() == "arq_pm_002" })
	if err != nil {
		t.Fatalf("no answer to a private message for an absent target: %v", err)
	}
	if e := client.AsError(env); e == nil || e.Code != "TARGET_NOT_FOUND" || e.Status != 404 {
		t.Errorf("private to absent target: got %s, want TARGET_NOT_FOUND 404", env.Raw)
	}
	expectNothing(t, other, 300*time.Millisecond, "bystander of private messages")
	expectNothing(t, b, 100*time.Millisecond, "target after its one message")
}
