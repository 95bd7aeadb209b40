package codec

import (
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/bytedance/sonic"
)

var now = time.Date(2025, 1, 1, 12, 0, 0, 7_654_321, time.FixedZone("x", 2*3600))

// parse decodes out with encoding/json (the strict reference) and with sonic, and returns the object.
func parse(t *testing.T, out []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(out, &m); err != nil {
		t.Fatalf("encoding/json: %v in %s", err, out)
	}
	var m2 map[string]any
	if err := sonic.ConfigDefault.Unmarshal(out, &m2); err != nil {
		t.Fatalf("sonic: %v in %s", err, out)
	}
	return m
}

func wantFields(t *testing.T, m map[string]any, want map[string]any) {
	t.Helper()
	for k, v := range want {
		if got, ok := m[k]; !ok || got != v {
			t.Errorf("%s = %#v (present %v), want %#v", k, got, ok, v)
		}
	}
}

func TestAppendEnvelope(t *testing.T) {
	o := Out{ID: "arq_sys_n1_1", Type: "system", Room: "*", Channel: "welcome", From: ServerFrom, Timestamp: now}
	out := AppendEnvelope([]byte("prefix"), o, []byte(`{"client_id":"c\"1"}`), nil)
	if !strings.HasPrefix(string(out), "prefix{") {
		t.Fatalf("dst not appended to: %s", out)
	}
	m := parse(t, out[len("prefix"):])
	wantFields(t, m, map[string]any{"version": "1.0", "id": "arq_sys_n1_1", "type": "system", "room": "*",
		"channel": "welcome", "from": ServerFrom, "timestamp": "2025-01-01T10:00:00.007Z"})
	if p := m["payload"].(map[string]any); p["client_id"] != `c"1` {
		t.Errorf("payload = %v", p)
	}
	if _, ok := m["metadata"]; ok {
		t.Error("metadata present though nil")
	}

	out = AppendEnvelope(nil, Out{Type: "event"}, nil, []byte(`{"seq":"1-0"}`))
	m = parse(t, out)
	wantFields(t, m, map[string]any{"room": "", "channel": "", "id": ""})
	if md := m["metadata"].(map[string]any); md["seq"] != "1-0" {
		t.Errorf("metadata = %v", md)
	}
	if len(m["payload"].(map[string]any)) != 0 {
		t.Errorf("nil payload = %v, want {}", m["payload"])
	}
}

func TestAppendEnvelopeRoundTrip(t *testing.T) {
	for _, tc := range validCases() {
		env, err := Decode([]byte(tc.in))
		if err != nil {
			t.Fatal(err)
		}
		roundTrip(t, env)
	}
}

// roundTrip re-encodes env the way the bus forwards it and checks Decode gives it back. The timestamp is
// the one field that changes: AppendEnvelope writes the server's time.
func roundTrip(t *testing.T, env *Envelope) {
	t.Helper()
	o := Out{ID: env.ID, Type: env.Type.String(), Room: env.Room, Channel: env.Channel, From: env.From, Timestamp: now}
	out := AppendEnvelope(nil, o, env.Payload, env.Metadata)
	if !json.Valid(out) {
		t.Fatalf("invalid JSON: %s", out)
	}
	back, err := Decode(out)
	if err != nil {
		t.Fatalf("Decode(AppendEnvelope(...)) = %v for %s", err, out)
	}
	want := *env
	want.Timestamp = "2025-01-01T10:00:00.007Z"
	assertEnvelope(t, back, &want)
}

func TestAppendError(t *testing.T) {
	e := Validation("id", "id must start with arq_")
	e.RequestID = "msg_1"
	m := parse(t, AppendError(nil, "arq_err_n1_1", "science", "general", now, e))
	wantFields(t, m, map[string]any{"version": "1.0", "id": "arq_err_n1_1", "type": "error", "room": "science",
		"channel": "general", "from": ServerFrom, "timestamp": "2025-01-01T10:00:00.007Z"})
	wantFields(t, m["payload"].(map[string]any), map[string]any{"request_id": "msg_1", "code": "VALIDATION_ERROR",
		"status": 400.0, "message": "id must start with arq_", "field": "id"})
	if _, ok := m["payload"].(map[string]any)["retry_after_ms"]; ok {
		t.Error("retry_after_ms present though 0")
	}

	m = parse(t, AppendError(nil, "arq_err_n1_2", "", "", now, RateLimited("slow \"down\"\n", 250)))
	p := m["payload"].(map[string]any)
	wantFields(t, p, map[string]any{"code": "RATE_LIMITED", "status": 429.0, "message": "slow \"down\"\n", "retry_after_ms": 250.0})
	for _, k := range []string{"request_id", "field"} {
		if _, ok := p[k]; ok {
			t.Errorf("%s present though empty", k)
		}
	}
	wantFields(t, m, map[string]any{"room": "", "channel": ""})
}

func TestAppendResponse(t *testing.T) {
	m := parse(t, AppendResponse(nil, "arq_res_n1_1", "science", "general", now, "arq_cmd_1", []byte(`{"pong":true}`)))
	wantFields(t, m, map[string]any{"type": "command_response", "from": ServerFrom})
	p := m["payload"].(map[string]any)
	wantFields(t, p, map[string]any{"request_id": "arq_cmd_1", "status": "success"})
	if r := p["result"].(map[string]any); r["pong"] != true {
		t.Errorf("result = %v", r)
	}
	m = parse(t, AppendResponse(nil, "arq_res_n1_2", "a", "b", now, "arq_cmd_2", nil))
	if r := m["payload"].(map[string]any)["result"].(map[string]any); len(r) != 0 {
		t.Errorf("nil result = %v", r)
	}
}

func TestAppendString(t *testing.T) {
	cases := map[string]string{
		"":                 "\"\"",
		"plain":            `"plain"`,
		`q"b\`:             `"q\"b\\"`,
		"\n\r\t\b\f":       `"\n\r\t\b\f"`,
		"\x00\x01\x1f\x7f": `"\u0000\u0001\u001f` + "\x7f" + `"`,
		"héllo 世界 🎉":       `"héllo 世界 🎉"`,
		"\u2028\u2029":     `"\u2028\u2029"`,
		"a\xffb":           `"a\ufffdb"`,
		"</script>&":       `"</script>&"`,
	}
	for in, want := range cases {
		got := string(AppendString(nil, in))
		if got != want {
			t.Errorf("AppendString(%q) = %s, want %s", in, got, want)
		}
		var back string
		if err := json.Unmarshal([]byte(got), &back); err != nil {
			t.Errorf("%s: %v", got, err)
		} else if utf8.ValidString(in) && back != in {
			t.Errorf("round trip of %q gave %q", in, back)
		}
	}
}

func TestAppendTimestamp(t *testing.T) {
	for _, tc := range []struct {
		t    time.Time
		want string
	}{
		{now, `"2025-01-01T10:00:00.007Z"`},
		{time.Date(1999, 12, 31, 23, 59, 59, 999_999_999, time.UTC), `"1999-12-31T23:59:59.999Z"`},
		{time.Date(5, 3, 4, 5, 6, 7, 0, time.UTC), `"0005-03-04T05:06:07.000Z"`},
		{time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC), `"10000-01-01T00:00:00.000Z"`},
	} {
		if got := string(AppendTimestamp(nil, tc.t)); got != tc.want {
			t.Errorf("AppendTimestamp(%v) = %s, want %s", tc.t, got, tc.want)
		}
	}
	got := string(AppendTimestamp(nil, now))
	if !ValidTimestamp(got[1 : len(got)-1]) {
		t.Errorf("%s fails ValidTimestamp", got)
	}
}

func TestIDGen(t *testing.T) {
	g := NewIDGen("node 1")
	if id := g.Next("err"); id != "arq_err_node_1_1" || !ValidID(id) {
		t.Fatalf("first id = %q", id)
	}
	if id := string(g.Append([]byte("x"), "msg")); id != "xarq_msg_node_1_2" {
		t.Fatalf("append = %q", id)
	}
	seen := sync.Map{}
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 1000; i++ {
				id := g.Next("err")
				if _, dup := seen.LoadOrStore(id, true); dup {
					t.Errorf("duplicate id %s", id)
					return
				}
			}
		}()
	}
	wg.Wait()
	if g2 := NewIDGen("n"); g2.Next("err") != "arq_err_n_1" {
		t.Error("generators share state")
	}
}

func TestErrorConstructors(t *testing.T) {
	for _, tc := range []struct {
		e      *Error
		code   string
		status int
	}{
		{Validation("f", "m"), CodeValidation, 400}, {Unauthorized("m"), CodeUnauthorized, 401},
		{Forbidden("m"), CodeForbidden, 403}, {NotFound("m"), CodeNotFound, 404},
		{TargetNotFound("m"), CodeTargetNotFound, 404}, {CommandNotFound("m"), CodeCommandNotFound, 404},
		{Conflict("m"), CodeConflict, 409}, {RateLimited("m", 5), CodeRateLimited, 429},
		{Timeout("m"), CodeTimeout, 504}, {Unavailable("m"), CodeUnavailable, 503}, {Internal("m"), CodeInternal, 500},
	} {
		if tc.e.Code != tc.code || tc.e.Status != tc.status || tc.e.Message != "m" {
			t.Errorf("%+v, want %s %d", tc.e, tc.code, tc.status)
		}
	}
	if s := Validation("id", "bad").Error(); s != "VALIDATION_ERROR (400) id: bad" {
		t.Errorf("Error() = %q", s)
	}
}

func BenchmarkAppendError(b *testing.B) {
	e := Validation("id", "id must start with arq_")
	e.RequestID = "arq_msg_001"
	buf := make([]byte, 0, 512)
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendError(buf[:0], "arq_err_node1_1a2b", "science", "general", now, e)
	}
}

func BenchmarkAppendEnvelope(b *testing.B) {
	o := Out{ID: "arq_msg_001", Type: "event", Room: "science", Channel: "general", From: "web_client_1", Timestamp: now}
	payload := []byte(`{"message":"Hello everyone!"}`)
	meta := []byte(`{"seq":"1735732800000-0"}`)
	buf := make([]byte, 0, 512)
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendEnvelope(buf[:0], o, payload, meta)
	}
}

func BenchmarkIDGenAppend(b *testing.B) {
	g := NewIDGen("node1")
	buf := make([]byte, 0, 64)
	b.ReportAllocs()
	for b.Loop() {
		buf = g.Append(buf[:0], "err")
	}
}
