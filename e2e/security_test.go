package e2e

import (
	"bufio"
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/arqonbus/arqonbus/client"
	"github.com/gobwas/ws"
)

// TestForgedFromAndSystem: an envelope whose from is another client's id is
// refused with FORBIDDEN (field from), a client-sent system envelope with
// FORBIDDEN (field type); neither reaches the channel's members.
func TestForgedFromAndSystem(t *testing.T) {
	s := startServer(t)
	ctx := testCtx(t, 10*time.Second)
	mallory := dial(t, s, client.WithClientID("sec_mallory"))
	victim := dial(t, s, client.WithClientID("sec_victim"))
	for _, c := range []*client.Conn{mallory, victim} {
		if err := c.Join(ctx, "science", "general"); err != nil {
			t.Fatal(err)
		}
	}
	cases := []struct {
		name, id, field string
		change          map[string]any
	}{
		{"event with forged from", "arq_sec_forged_event", "from", map[string]any{"from": "sec_victim"}},
		{"command with forged from", "arq_sec_forged_cmd", "from", map[string]any{"from": "sec_victim", "type": "command",
			"payload": map[string]any{"command": "leave_channel", "parameters": map[string]any{}}}},
		{"private with forged from", "arq_sec_forged_pm", "from", map[string]any{"from": "sec_victim", "type": "private",
			"payload": map[string]any{"target": "sec_victim", "message": "it is me"}}},
		{"client-sent system", "arq_sec_system", "type", map[string]any{"type": "system"}},
		{"client-sent system on *:broadcast", "arq_sec_broadcast", "type", map[string]any{"type": "system", "room": "*", "channel": "broadcast"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if err := mallory.SendRaw(envJSON("sec_mallory", tc.id, tc.change)); err != nil {
				t.Fatal(err)
			}
			expectErrorFor(t, mallory, 3*time.Second, tc.id, "FORBIDDEN", tc.field)
		})
	}
	// The victim got none of it and is still a member of science:general
	// (the forged leave_channel did nothing).
	expectNothing(t, victim, 200*time.Millisecond, "victim of forged envelopes")
	id, _ := mallory.Publish("science", "general", map[string]any{"message": "honest now"})
	if got, err := victim.Expect(ctx, func(e client.Envelope) bool { return e.ID == id }); err != nil || got.From != "sec_mallory" {
		t.Errorf("honest event after the refusals: %s (%v)", got.Raw, err)
	}
	busServes(t, s, nil)
}

// TestAdminToken: without JWT, admin_token=ARQONBUS_ADMIN_TOKEN on the
// upgrade grants admin; create_channel / delete_channel are refused to
// everyone else with FORBIDDEN.
func TestAdminToken(t *testing.T) {
	s := startServer(t, "ARQONBUS_ADMIN_TOKEN="+testAdminToken)
	admin := dial(t, s, client.WithClientID("at_admin"), client.WithParam("admin_token", testAdminToken))
	user := dial(t, s, client.WithClientID("at_user"))

	cmdErr(t, user, "adm", "by-user", "create_channel", nil, "FORBIDDEN", "")
	cmdOK(t, admin, "adm", "by-admin", "create_channel", nil)
	cmdErr(t, user, "adm", "by-admin", "delete_channel", nil, "FORBIDDEN", "")
	cmdOK(t, user, "adm", "by-admin", "channel_info", nil) // still there

	// A wrong admin token grants nothing: refused at the upgrade, or a
	// connection without admin rights.
	status, c, err := dialResult(s, client.WithClientID("at_guesser"), client.WithParam("admin_token", "guess"))
	switch {
	case c != nil:
		cmdErr(t, c, "adm", "by-guesser", "create_channel", nil, "FORBIDDEN", "")
		cmdErr(t, c, "adm", "by-admin", "delete_channel", nil, "FORBIDDEN", "")
		c.Close()
	case status != 401 && status != 403:
		t.Errorf("wrong admin_token: upgrade answered %d (%v), want a connection without admin or 401/403", status, err)
	}
	cmdOK(t, admin, "adm", "by-admin", "delete_channel", nil)
	busServes(t, s, nil)
}

const testJWTSecret = "jwt_secret_issue3_0123456789abcdef"

// jwtFor is a valid token for sub with role and optional extra claims.
func jwtFor(sub, role string, extra map[string]any) string {
	claims := map[string]any{"sub": sub, "exp": time.Now().Add(time.Hour).Unix()}
	if role != "" {
		claims["role"] = role
	}
	for k, v := range extra {
		claims[k] = v
	}
	return mintJWT("HS256", testJWTSecret, claims)
}

// jwtAuth dials with a valid user token for the id.
func jwtAuth(id string) []client.Option {
	return []client.Option{client.WithParam("token", jwtFor(id, "user", nil))}
}

// TestJWT: with ARQONBUS_JWT_SECRET set, every upgrade needs a valid HS256
// token; anything else is HTTP 401 before the upgrade. sub is the client id,
// role admin grants admin, admin_token no longer does.
func TestJWT(t *testing.T) {
	s := startServer(t, "ARQONBUS_JWT_SECRET="+testJWTSecret, "ARQONBUS_ADMIN_TOKEN="+testAdminToken)
	hour := time.Now().Add(time.Hour).Unix()

	refused := []struct {
		name string
		opts []client.Option
	}{
		{"missing token", []client.Option{client.WithClientID("jwt_none")}},
		{"garbage token", []client.Option{client.WithParam("token", "not-a-jwt")}},
		{"empty token", []client.Option{client.WithParam("token", "")}},
		{"bad signature", []client.Option{client.WithParam("token",
			mintJWT("HS256", "another-secret", map[string]any{"sub": "jwt_bad_sig", "exp": hour}))}},
		{"tampered claims", []client.Option{client.WithParam("token", tamper(jwtFor("jwt_user", "user", nil), `{"sub":"jwt_user","role":"admin"}`))}},
		{"expired", []client.Option{client.WithParam("token",
			mintJWT("HS256", testJWTSecret, map[string]any{"sub": "jwt_expired", "exp": time.Now().Add(-time.Minute).Unix()}))}},
		{"wrong alg HS512", []client.Option{client.WithParam("token",
			mintJWT("HS512", testJWTSecret, map[string]any{"sub": "jwt_hs512", "exp": hour}))}},
		{"alg none", []client.Option{client.WithParam("token",
			mintJWT("none", "", map[string]any{"sub": "jwt_none_alg", "exp": hour}))}},
		{"bad bearer header", []client.Option{client.WithHeader("Authorization", "Bearer "+
			mintJWT("HS256", "another-secret", map[string]any{"sub": "jwt_bad_hdr", "exp": hour}))}},
		{"client_id differs from sub", []client.Option{client.WithClientID("jwt_someone_else"),
			client.WithParam("token", jwtFor("jwt_real", "user", nil))}},
		{"admin_token instead of a JWT", []client.Option{client.WithClientID("jwt_admin_tok"),
			client.WithParam("admin_token", testAdminToken)}},
	}
	for _, tc := range refused {
		t.Run(tc.name, func(t *testing.T) { expectHTTPStatus(t, s, 401, tc.name, tc.opts...) })
	}

	t.Run("401 is an HTTP answer before the upgrade", func(t *testing.T) {
		nc, err := net.DialTimeout("tcp", s.Addr, 3*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		_ = nc.SetDeadline(time.Now().Add(3 * time.Second))
		fmt.Fprintf(nc, "GET /?client_id=jwt_raw HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
			"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", s.Addr)
		resp, err := http.ReadResponse(bufio.NewReader(nc), nil)
		if err != nil {
			t.Fatalf("no HTTP answer: %v", err)
		}
		resp.Body.Close()
		if resp.StatusCode != 401 {
			t.Errorf("upgrade without token: HTTP %d, want 401", resp.StatusCode)
		}
	})

	t.Run("valid token in the query", func(t *testing.T) {
		c := dial(t, s, client.WithParam("token", jwtFor("jwt_alice", "user", nil)))
		if c.ClientID() != "jwt_alice" {
			t.Errorf("client id %q, want the token's sub jwt_alice", c.ClientID())
		}
		cmdOK(t, c, "science", "general", "ping", nil)
	})
	t.Run("valid token with matching client_id", func(t *testing.T) {
		c := dial(t, s, client.WithClientID("jwt_bob"), client.WithParam("token", jwtFor("jwt_bob", "", nil)))
		if c.ClientID() != "jwt_bob" {
			t.Errorf("client id %q, want jwt_bob", c.ClientID())
		}
	})
	t.Run("valid token in the Authorization header", func(t *testing.T) {
		c := dial(t, s, client.WithHeader("Authorization", "Bearer "+jwtFor("jwt_carol", "user", nil)))
		if c.ClientID() != "jwt_carol" {
			t.Errorf("client id %q, want jwt_carol", c.ClientID())
		}
	})
	t.Run("client_type claim", func(t *testing.T) {
		c := dial(t, s, client.WithParam("token", jwtFor("jwt_svc", "user", map[string]any{"client_type": "service"})))
		cmdOK(t, c, "jwt", "types", "join_channel", nil)
		info := cmdOK(t, c, "jwt", "types", "channel_info", nil)
		if !strings.Contains(string(info["members"]), `"service"`) {
			t.Errorf("client_type claim not applied: members %s", info["members"])
		}
	})
	t.Run("sub binds from", func(t *testing.T) {
		c := dial(t, s, client.WithParam("token", jwtFor("jwt_dave", "user", nil)))
		cmdOK(t, c, "science", "general", "join_channel", nil)
		if err := c.SendRaw(envJSON("jwt_alice", "arq_jwt_forged", nil)); err != nil {
			t.Fatal(err)
		}
		expectErrorFor(t, c, 3*time.Second, "arq_jwt_forged", "FORBIDDEN", "from")
	})
	t.Run("role user is not admin, admin_token does not help", func(t *testing.T) {
		c := dial(t, s, client.WithParam("token", jwtFor("jwt_eve", "user", nil)), client.WithParam("admin_token", testAdminToken))
		cmdErr(t, c, "jwt", "eve-made", "create_channel", nil, "FORBIDDEN", "")
		cmdErr(t, c, "science", "general", "delete_channel", map[string]any{"room": "jwt:types"}, "FORBIDDEN", "")
	})
	t.Run("role admin", func(t *testing.T) {
		c := dial(t, s, client.WithParam("token", jwtFor("jwt_root", "admin", nil)))
		cmdOK(t, c, "jwt", "admin-made", "create_channel", nil)
		cmdOK(t, c, "jwt", "admin-made", "delete_channel", nil)
	})

	busServes(t, s, jwtAuth)
}

// tamper replaces a token's claims without re-signing it.
func tamper(token, claims string) string {
	parts := strings.Split(token, ".")
	parts[1] = base64.RawURLEncoding.EncodeToString([]byte(claims))
	return strings.Join(parts, ".")
}

// TestAllowedOrigins: with ARQONBUS_ALLOWED_ORIGINS set, an upgrade whose
// Origin is not in the list is HTTP 403; listed origins and requests without
// an Origin (non-browser clients) are served.
func TestAllowedOrigins(t *testing.T) {
	s := startServer(t, "ARQONBUS_ALLOWED_ORIGINS=http://127.0.0.1:8000,http://localhost:8000")
	for _, origin := range []string{
		"http://evil.example",
		"http://127.0.0.1:8001",
		"http://127.0.0.1:8000.evil.example",
		"https://127.0.0.1:8000",
		"null",
	} {
		expectHTTPStatus(t, s, 403, "Origin "+origin, client.WithClientID("origin_bad"), client.WithHeader("Origin", origin))
	}
	for _, origin := range []string{"http://127.0.0.1:8000", "http://localhost:8000"} {
		c := dial(t, s, client.WithHeader("Origin", origin))
		cmdOK(t, c, "science", "general", "ping", nil)
		c.Close()
	}
	busServes(t, s, nil) // no Origin header
}

// TestDuplicateClientID: a second connection with a live client id gets
// CONFLICT and is closed with 1008; the first one keeps working.
func TestDuplicateClientID(t *testing.T) {
	s := startServer(t)
	ctx := testCtx(t, 10*time.Second)
	first := dial(t, s, client.WithClientID("dup_x"))
	if err := first.Join(ctx, "dup", "room"); err != nil {
		t.Fatal(err)
	}
	second := dial(t, s, client.WithClientID("dup_x"), client.WithoutWelcome())
	var conflict bool
	for {
		env, err := second.Next(ctx)
		if err != nil {
			break
		}
		if e := client.AsError(env); e != nil {
			checkErr(t, "duplicate client id", env, e, "CONFLICT", "")
			conflict = true
		} else if !(env.Type == "system") {
			t.Errorf("duplicate connection received %s", env.Raw)
		}
	}
	if !conflict {
		t.Errorf("duplicate connection got no CONFLICT error")
	}
	if code, reason := second.CloseCode(); code != ws.StatusPolicyViolation {
		t.Errorf("duplicate connection closed with %d %q, want 1008", code, reason)
	}
	// The first connection is untouched.
	peer := dial(t, s, client.WithClientID("dup_peer"))
	if err := peer.Join(ctx, "dup", "room"); err != nil {
		t.Fatal(err)
	}
	id, _ := peer.Publish("dup", "room", map[string]any{"message": "still you?"})
	if _, err := first.Expect(ctx, func(e client.Envelope) bool { return e.ID == id }); err != nil {
		t.Errorf("first dup_x connection no longer served: %v", err)
	}
	busServes(t, s, nil)
}

// TestReplaceDuplicate: with ARQONBUS_REPLACE_DUPLICATE=true the old
// connection is closed with 1008 and the new one takes the id.
func TestReplaceDuplicate(t *testing.T) {
	s := startServer(t, "ARQONBUS_REPLACE_DUPLICATE=true")
	ctx := testCtx(t, 10*time.Second)
	old := dial(t, s, client.WithClientID("dup_y"))
	if err := old.Join(ctx, "dup", "room"); err != nil {
		t.Fatal(err)
	}
	fresh := dial(t, s, client.WithClientID("dup_y"))
	if fresh.ClientID() != "dup_y" {
		t.Errorf("replacing connection welcomed as %q, want dup_y", fresh.ClientID())
	}
	select {
	case <-old.Done():
	case <-time.After(3 * time.Second):
		t.Fatalf("old dup_y connection still open after being replaced")
	}
	if code, reason := old.CloseCode(); code != ws.StatusPolicyViolation {
		t.Errorf("replaced connection closed with %d %q, want 1008", code, reason)
	}
	peer := dial(t, s, client.WithClientID("dup_peer"))
	for _, c := range []*client.Conn{fresh, peer} {
		if err := c.Join(ctx, "dup", "room"); err != nil {
			t.Fatal(err)
		}
	}
	id, _ := peer.Publish("dup", "room", map[string]any{"message": "new you"})
	if _, err := fresh.Expect(ctx, func(e client.Envelope) bool { return e.ID == id }); err != nil {
		t.Errorf("replacing connection not served: %v", err)
	}
	id, _ = fresh.Publish("dup", "room", map[string]any{"message": "from the new one"})
	if got, err := peer.Expect(ctx, func(e client.Envelope) bool { return e.ID == id }); err != nil || got.From != "dup_y" {
		t.Errorf("event from the replacing connection: %s (%v)", got.Raw, err)
	}
	busServes(t, s, nil)
}

// TestConnectionCap: beyond ARQONBUS_MAX_CONNECTIONS an upgrade gets HTTP
// 503; once connections leave, newcomers are served again.
func TestConnectionCap(t *testing.T) {
	s := startServer(t, "ARQONBUS_MAX_CONNECTIONS=4")
	var conns []*client.Conn
	for i := 0; i < 4; i++ {
		conns = append(conns, dial(t, s, client.WithClientID(fmt.Sprintf("cap_%d", i))))
	}
	expectHTTPStatus(t, s, 503, "fifth connection", client.WithClientID("cap_extra"))
	cmdOK(t, conns[0], "science", "general", "ping", nil) // those inside are fine
	conns[0].Close()
	conns[1].Close()
	// The server notices the closes shortly.
	deadline := time.Now().Add(3 * time.Second)
	for {
		status, c, _ := dialResult(s, client.WithClientID("cap_probe"))
		if c != nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still refused (%d) after two connections left", status)
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond)
	busServes(t, s, nil)
}
