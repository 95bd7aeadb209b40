package codec

import (
	"bytes"
	"strings"
	"testing"
)

const eventJSON = `{"version":"1.0","id":"arq_msg_001","type":"event","room":"science","channel":"general",` +
	`"from":"web_client_1","timestamp":"2025-01-01T12:00:00.000Z","payload":{"message":"Hello everyone!"},"metadata":{}}`

var baseKeys = []string{"version", "id", "type", "room", "channel", "from", "timestamp", "payload"}

var baseVals = map[string]string{
	"version":   `"1.0"`,
	"id":        `"arq_msg_001"`,
	"type":      `"event"`,
	"room":      `"science"`,
	"channel":   `"general"`,
	"from":      `"web_client_1"`,
	"timestamp": `"2025-01-01T12:00:00.000Z"`,
	"payload":   `{"message":"hi"}`,
}

// mk builds an envelope from the base one: pairs of key and raw JSON value replace a base field (or add
// one, at the end); the value "-" removes the field.
func mk(kv ...string) string {
	vals := map[string]string{}
	for k, v := range baseVals {
		vals[k] = v
	}
	keys := append([]string(nil), baseKeys...)
	for i := 0; i < len(kv); i += 2 {
		if _, ok := vals[kv[i]]; !ok {
			keys = append(keys, kv[i])
		}
		vals[kv[i]] = kv[i+1]
	}
	var b strings.Builder
	b.WriteByte('{')
	first := true
	for _, k := range keys {
		v := vals[k]
		if v == "-" {
			continue
		}
		if !first {
			b.WriteByte(',')
		}
		first = false
		b.WriteString(`"` + k + `":` + v)
	}
	b.WriteByte('}')
	return b.String()
}

type validCase struct {
	name string
	in   string
	want Envelope
}

func validCases() []validCase {
	base := Envelope{Version: "1.0", ID: "arq_msg_001", Type: TypeEvent, Room: "science", Channel: "general",
		From: "web_client_1", Timestamp: "2025-01-01T12:00:00.000Z", Payload: []byte(`{"message":"hi"}`)}
	with := func(f func(e *Envelope)) Envelope { e := base; f(&e); return e }
	return []validCase{
		{"quickstart event", eventJSON, with(func(e *Envelope) {
			e.Payload = []byte(`{"message":"Hello everyone!"}`)
			e.Metadata = []byte(`{}`)
		})},
		{"base", mk(), base},
		{"room:channel split", mk("room", `"science:general"`, "channel", "-"), base},
		{"room:channel split, empty channel", mk("room", `"science:general"`, "channel", `""`), base},
		{"metadata null", mk("metadata", "null"), base},
		{"metadata object", mk("metadata", `{"ack":true}`), with(func(e *Envelope) { e.Metadata = []byte(`{"ack":true}`) })},
		{"unknown fields ignored", mk("extra", `[1,{"a":null}]`, "Version", `5`, "ID", `"x"`), base},
		{"duplicate key last wins", mk("type", `"command"`, "type", `"event"`), base},
		{"whitespace", " \n" + strings.ReplaceAll(mk(), ",", " ,\t") + " \r\n", base},
		{"escaped strings", mk("id", `"arq\u005fmsg_001"`, "from", `"web_client\u005f1"`), base},
		{"ts no fraction", mk("timestamp", `"2025-01-01T12:00:00Z"`), with(func(e *Envelope) { e.Timestamp = "2025-01-01T12:00:00Z" })},
		{"ts offset", mk("timestamp", `"2025-01-01T12:00:00+02:00"`), with(func(e *Envelope) { e.Timestamp = "2025-01-01T12:00:00+02:00" })},
		{"ts negative offset nanos", mk("timestamp", `"2024-02-29T23:59:60.123456789-05:30"`), with(func(e *Envelope) { e.Timestamp = "2024-02-29T23:59:60.123456789-05:30" })},
		{"ts lowercase", mk("timestamp", `"2025-01-01t12:00:00z"`), with(func(e *Envelope) { e.Timestamp = "2025-01-01t12:00:00z" })},
		{"payload nested", mk("payload", `{"a":[1,2,{"b":"c"}],"d":null}`), with(func(e *Envelope) { e.Payload = []byte(`{"a":[1,2,{"b":"c"}],"d":null}`) })},
		{"empty payload", mk("payload", `{}`), with(func(e *Envelope) { e.Payload = []byte(`{}`) })},
		{"id charset and max length", mk("id", `"arq_`+strings.Repeat("A.:-9", 24)+`xyzw"`), with(func(e *Envelope) { e.ID = "arq_" + strings.Repeat("A.:-9", 24) + "xyzw" })},
		{"names charset", mk("room", `"a0_.-b"`, "channel", `"9"`), with(func(e *Envelope) { e.Room, e.Channel = "a0_.-b", "9" })},
		{"name max length", mk("room", `"`+strings.Repeat("r", 64)+`"`), with(func(e *Envelope) { e.Room = strings.Repeat("r", 64) })},
		{"command", mk("type", `"command"`, "payload", `{"command":"join_channel","parameters":{}}`), with(func(e *Envelope) {
			e.Type = TypeCommand
			e.Payload = []byte(`{"command":"join_channel","parameters":{}}`)
		})},
		{"command no parameters", mk("type", `"command"`, "payload", `{"command":"ping"}`), with(func(e *Envelope) {
			e.Type = TypeCommand
			e.Payload = []byte(`{"command":"ping"}`)
		})},
		{"private defaults", mk("type", `"private"`, "room", "-", "channel", "-", "payload", `{"target":"bob","message":"x"}`), with(func(e *Envelope) {
			e.Type, e.Room, e.Channel = TypePrivate, "", "pm"
			e.Payload = []byte(`{"target":"bob","message":"x"}`)
		})},
		{"private with room", mk("type", `"private"`, "channel", "-", "payload", `{"target":"bob"}`), with(func(e *Envelope) {
			e.Type, e.Channel = TypePrivate, "pm"
			e.Payload = []byte(`{"target":"bob"}`)
		})},
		{"private with room:channel", mk("type", `"private"`, "room", `"a:b"`, "channel", "-", "payload", `{"target":"bob"}`), with(func(e *Envelope) {
			e.Type, e.Room, e.Channel = TypePrivate, "a", "b"
			e.Payload = []byte(`{"target":"bob"}`)
		})},
		{"telemetry", mk("type", `"telemetry"`, "payload", `{"eventType":"cpu","payload":{"v":1}}`), with(func(e *Envelope) {
			e.Type = TypeTelemetry
			e.Payload = []byte(`{"eventType":"cpu","payload":{"v":1}}`)
		})},
		{"command_response", mk("type", `"command_response"`, "payload", `{"request_id":"arq_cmd_001","status":"success","result":{}}`), with(func(e *Envelope) {
			e.Type = TypeCommandResponse
			e.Payload = []byte(`{"request_id":"arq_cmd_001","status":"success","result":{}}`)
		})},
		{"payload escapes", mk("payload", `{"s":"\"\\\/\b\f\n\r\t\u00e9\uD83D\uDE00"}`), with(func(e *Envelope) {
			e.Payload = []byte(`{"s":"\"\\\/\b\f\n\r\t\u00e9\uD83D\uDE00"}`)
		})},
		{"pretty printed", "{\n  \"version\": \"1.0\",\n  \"id\": \"arq_msg_001\",\n  \"type\": \"event\",\n" +
			"  \"room\": \"science\",\n  \"channel\": \"general\",\n  \"from\": \"web_client_1\",\n" +
			"  \"timestamp\": \"2025-01-01T12:00:00.000Z\",\n  \"payload\": {\"message\": \"hi\"}\n}\n",
			with(func(e *Envelope) { e.Payload = []byte(`{"message": "hi"}`) })},
	}
}

type invalidCase struct {
	name, in        string
	field, msg, req string // msg: substring of the message
	room, channel   string // partial address expected
}

func invalidCases() []invalidCase {
	const id = "arq_msg_001"
	return []invalidCase{
		{"not json", `{"version":`, "", "invalid JSON", "", "", ""},
		{"garbage", `hello`, "", "invalid JSON", "", "", ""},
		{"empty", ``, "", "invalid JSON", "", "", ""},
		{"array", `[` + mk() + `]`, "", "invalid JSON", "", "", ""},
		{"null", `null`, "", "invalid JSON", "", "", ""},
		{"string", `"x"`, "", "invalid JSON", "", "", ""},
		{"trailing garbage", mk() + `x`, "", "invalid JSON", "", "", ""},
		{"two objects", mk() + mk(), "", "invalid JSON", "", "", ""},
		{"bad payload json", mk("payload", `{"a":}`), "", "invalid JSON", "", "", ""},
		{"bad skipped value", mk("extra", `[1,]`), "", "invalid JSON", "", "", ""},
		// sonic's ConfigDefault accepts these; forwarded, they would break the receivers' JSON.parse.
		{"raw control in payload", mk("payload", "{\"\x00\":true}"), "", "invalid JSON", "", "", ""},
		{"raw newline in payload string", mk("payload", "{\"a\":\"x\ny\"}"), "", "invalid JSON", "", "", ""},
		{"raw tab in skipped field", mk("extra", "\"\t\""), "", "invalid JSON", "", "", ""},
		{"bad escape in payload", mk("payload", `{"a":"\x"}`), "", "invalid JSON", "", "", ""},
		{"short unicode escape", mk("payload", `{"a":"\u12"}`), "", "invalid JSON", "", "", ""},
		{"bad escape in skipped field", mk("extra", `"\q"`), "", "invalid JSON", "", "", ""},
		{"bad escape at end", `{"a":"\`, "", "invalid JSON", "", "", ""},

		// Parsers disagree on duplicate keys (sonic keeps the last, others the first), and the envelope
		// is forwarded as sent: refused whatever the key.
		{"duplicate from", `{"from":"mallory",` + mk()[1:], "from", "duplicate key", id, "science", "general"},
		{"duplicate room", mk()[:len(mk())-1] + `,"room":"other"}`, "room", "duplicate key", id, "other", "general"},
		{"duplicate type escaped", `{"typ\u0065":"command",` + mk()[1:], "type", "duplicate key", id, "science", "general"},
		{"duplicate payload", mk()[:len(mk())-1] + `,"payload":{"message":"x"}}`, "payload", "duplicate key", id, "science", "general"},
		{"duplicate unknown key", strings.TrimSuffix(mk("extra", `[{"a":"}"},"\"", 1.5e3, null]`), "}") + `,"extra":2}`, "extra", "duplicate key", id, "science", "general"},
		{"duplicate with bad field", `{"id":"arq_x",` + mk("from", `1`)[1:], "id", "duplicate key", id, "science", "general"},

		{"version missing", mk("version", "-"), "version", "version is required", id, "science", "general"},
		{"version wrong", mk("version", `"2.0"`), "version", `version must be "1.0"`, id, "science", "general"},
		{"version number", mk("version", `1`), "version", "version must be a string", id, "science", "general"},
		{"version number 1.0", mk("version", `1.0`), "version", "version must be a string", id, "science", "general"},
		{"version null", mk("version", `null`), "version", "version is required", id, "science", "general"},

		{"id missing", mk("id", "-"), "id", "id is required", "", "science", "general"},
		{"id prefix", mk("id", `"msg_1"`), "id", "id must start with arq_", "msg_1", "science", "general"},
		{"id too long", mk("id", `"arq_`+strings.Repeat("x", 125)+`"`), "id", "at most 128", "", "science", "general"},
		{"id charset", mk("id", `"arq_a b"`), "id", "may contain only", "arq_a b", "science", "general"},
		{"id number", mk("id", `7`), "id", "id must be a string", "", "science", "general"},
		{"id object", mk("id", `{"a":1}`), "id", "id must be a string", "", "science", "general"},

		{"type missing", mk("type", "-"), "type", "type is required", id, "science", "general"},
		{"type unknown", mk("type", `"Event"`), "type", "type must be one of", id, "science", "general"},
		{"type array", mk("type", `["event"]`), "type", "type must be a string", id, "science", "general"},

		{"room missing", mk("room", "-"), "room", "room is required", id, "", "general"},
		{"room upper", mk("room", `"Science"`), "room", "room must match", id, "", "general"},
		{"room starts with dash", mk("room", `"-a"`), "room", "room must match", id, "", "general"},
		{"room too long", mk("room", `"`+strings.Repeat("r", 65)+`"`), "room", "room must match", id, "", "general"},
		{"room star", mk("room", `"*"`), "room", "room must match", id, "", "general"},
		{"room colon with channel", mk("room", `"a:b"`, "channel", `"c"`), "room", `must not contain ":"`, id, "", "c"},
		{"room split empty channel", mk("room", `"a:"`, "channel", "-"), "room", `room:channel`, id, "a", ""},
		{"room split empty room", mk("room", `":b"`, "channel", "-"), "room", `room:channel`, id, "", "b"},
		{"room split bad channel", mk("room", `"a:b:c"`, "channel", "-"), "room", `room:channel`, id, "a", ""},
		{"room bool", mk("room", `true`), "room", "room must be a string", id, "", "general"},
		{"channel missing", mk("channel", "-"), "channel", "channel is required", id, "science", ""},
		{"channel bad", mk("channel", `"gen eral"`), "channel", "channel must match", id, "science", ""},
		{"channel number", mk("channel", `3`), "channel", "channel must be a string", id, "science", ""},
		{"private bad room", mk("type", `"private"`, "room", `"A"`, "payload", `{"target":"b"}`), "room", "room must match", id, "", "general"},

		{"from missing", mk("from", "-"), "from", "from is required", id, "science", "general"},
		{"from empty", mk("from", `""`), "from", "from is required", id, "science", "general"},
		{"from charset", mk("from", `"a/b"`), "from", "may contain only", id, "science", "general"},
		{"from too long", mk("from", `"`+strings.Repeat("f", 129)+`"`), "from", "at most 128", id, "science", "general"},
		{"from number", mk("from", `1`), "from", "from must be a string", id, "science", "general"},

		{"timestamp missing", mk("timestamp", "-"), "timestamp", "timestamp is required", id, "science", "general"},
		{"timestamp garbage", mk("timestamp", `"yesterday"`), "timestamp", "RFC 3339", id, "science", "general"},
		{"timestamp no offset", mk("timestamp", `"2025-01-01T12:00:00"`), "timestamp", "RFC 3339", id, "science", "general"},
		{"timestamp date only", mk("timestamp", `"2025-01-01"`), "timestamp", "RFC 3339", id, "science", "general"},
		{"timestamp feb 30", mk("timestamp", `"2025-02-29T12:00:00Z"`), "timestamp", "RFC 3339", id, "science", "general"},
		{"timestamp hour 24", mk("timestamp", `"2025-01-01T24:00:00Z"`), "timestamp", "RFC 3339", id, "science", "general"},
		{"timestamp empty fraction", mk("timestamp", `"2025-01-01T12:00:00.Z"`), "timestamp", "RFC 3339", id, "science", "general"},
		{"timestamp bad offset", mk("timestamp", `"2025-01-01T12:00:00+2:00"`), "timestamp", "RFC 3339", id, "science", "general"},
		{"timestamp trailing", mk("timestamp", `"2025-01-01T12:00:00Zx"`), "timestamp", "RFC 3339", id, "science", "general"},
		{"timestamp number", mk("timestamp", `1735732800`), "timestamp", "timestamp must be a string", id, "science", "general"},

		{"payload missing", mk("payload", "-"), "payload", "payload is required", id, "science", "general"},
		{"payload null", mk("payload", `null`), "payload", "payload", id, "science", "general"},
		{"payload array", mk("payload", `[]`), "payload", "payload must be a JSON object", id, "science", "general"},
		{"payload string", mk("payload", `"hi"`), "payload", "payload must be a JSON object", id, "science", "general"},
		{"metadata array", mk("metadata", `[]`), "metadata", "metadata must be a JSON object", id, "science", "general"},
		{"metadata string", mk("metadata", `"x"`), "metadata", "metadata must be a JSON object", id, "science", "general"},

		{"command no command", mk("type", `"command"`, "payload", `{"parameters":{}}`), "payload.command", "non-empty string", id, "science", "general"},
		{"command empty", mk("type", `"command"`, "payload", `{"command":""}`), "payload.command", "non-empty string", id, "science", "general"},
		{"command number", mk("type", `"command"`, "payload", `{"command":1}`), "payload.command", "non-empty string", id, "science", "general"},
		{"command parameters array", mk("type", `"command"`, "payload", `{"command":"x","parameters":[]}`), "payload.parameters", "JSON object", id, "science", "general"},
		{"private no target", mk("type", `"private"`, "payload", `{"message":"x"}`), "payload.target", "non-empty string", id, "science", "general"},
		{"private target number", mk("type", `"private"`, "payload", `{"target":5}`), "payload.target", "non-empty string", id, "science", "general"},
		{"telemetry no eventType", mk("type", `"telemetry"`, "payload", `{"payload":{}}`), "payload.eventType", "string", id, "science", "general"},
		{"telemetry payload array", mk("type", `"telemetry"`, "payload", `{"eventType":"x","payload":[]}`), "payload.payload", "JSON object", id, "science", "general"},
		{"telemetry no payload", mk("type", `"telemetry"`, "payload", `{"eventType":"x"}`), "payload.payload", "JSON object", id, "science", "general"},
		{"response no request_id", mk("type", `"command_response"`, "payload", `{"status":"success"}`), "payload.request_id", "non-empty string", id, "science", "general"},
		{"response request_id null", mk("type", `"command_response"`, "payload", `{"request_id":null}`), "payload.request_id", "non-empty string", id, "science", "general"},

		// Several faults: the first in field order wins, and the id is still reported.
		{"version and room wrong", mk("version", `"0.9"`, "room", `"BAD"`), "version", "version", id, "", "general"},
		{"type mismatch and id readable", mk("type", `1`, "room", `2`), "type", "type must be a string", id, "", "general"},
	}
}

func TestDecodeValid(t *testing.T) {
	for _, tc := range validCases() {
		t.Run(tc.name, func(t *testing.T) {
			env, err := Decode([]byte(tc.in))
			if err != nil {
				t.Fatalf("Decode(%s): %v", tc.in, err)
			}
			assertEnvelope(t, env, &tc.want)
		})
	}
}

func assertEnvelope(t *testing.T, got, want *Envelope) {
	t.Helper()
	if got.Version != want.Version || got.ID != want.ID || got.Type != want.Type || got.Room != want.Room ||
		got.Channel != want.Channel || got.From != want.From || got.Timestamp != want.Timestamp {
		t.Errorf("header mismatch:\n got %+v\nwant %+v", *got, *want)
	}
	if !bytes.Equal(got.Payload, want.Payload) {
		t.Errorf("payload = %q, want %q", got.Payload, want.Payload)
	}
	if !bytes.Equal(got.Metadata, want.Metadata) || (got.Metadata == nil) != (want.Metadata == nil) {
		t.Errorf("metadata = %q, want %q", got.Metadata, want.Metadata)
	}
}

func TestDecodeInvalid(t *testing.T) {
	for _, tc := range invalidCases() {
		t.Run(tc.name, func(t *testing.T) {
			env, err := Decode([]byte(tc.in))
			if err == nil {
				t.Fatalf("Decode(%s) = %+v, want error", tc.in, env)
			}
			if env == nil {
				t.Fatal("env is nil on error")
			}
			if err.Code != CodeValidation || err.Status != 400 {
				t.Errorf("code/status = %s/%d", err.Code, err.Status)
			}
			if err.Field != tc.field {
				t.Errorf("field = %q, want %q (msg %q)", err.Field, tc.field, err.Message)
			}
			if !strings.Contains(err.Message, tc.msg) {
				t.Errorf("message = %q, want it to contain %q", err.Message, tc.msg)
			}
			if err.RequestID != tc.req || env.ID != tc.req {
				t.Errorf("request id = %q, env.ID = %q, want %q", err.RequestID, env.ID, tc.req)
			}
			if env.Room != tc.room || env.Channel != tc.channel {
				t.Errorf("address = %q:%q, want %q:%q", env.Room, env.Channel, tc.room, tc.channel)
			}
		})
	}
}

// TestDecodeDoesNotAlias guards the contract that callers may reuse their read buffer after Decode.
func TestDecodeDoesNotAlias(t *testing.T) {
	buf := []byte(mk("metadata", `{"k":"v"}`))
	env, err := Decode(buf)
	if err != nil {
		t.Fatal(err)
	}
	want := *env
	want.Payload = append([]byte(nil), env.Payload...)
	want.Metadata = append([]byte(nil), env.Metadata...)
	for i := range buf {
		buf[i] = 'X'
	}
	assertEnvelope(t, env, &want)
	if string(env.Payload) != `{"message":"hi"}` || env.Room != "science" {
		t.Fatalf("envelope changed with the input buffer: %+v", env)
	}
}

func TestDecodeCommand(t *testing.T) {
	cp, err := DecodeCommand([]byte(`{"command":"status","parameters":{"check":"connection_pool"}}`))
	if err != nil || cp.Command != "status" || string(cp.Parameters) != `{"check":"connection_pool"}` {
		t.Fatalf("got %+v, %v", cp, err)
	}
	cp, err = DecodeCommand([]byte(`{"command":"ping","parameters":null}`))
	if err != nil || cp.Command != "ping" || cp.Parameters != nil {
		t.Fatalf("got %+v, %v", cp, err)
	}
	for _, in := range []string{`{}`, `[]`, `{"command":2}`, `{"command":"x","parameters":"y"}`, `{"command":`, ``} {
		if _, err := DecodeCommand([]byte(in)); err == nil || err.Code != CodeValidation {
			t.Errorf("DecodeCommand(%s) err = %v", in, err)
		}
	}
}

func TestDecodePrivateTarget(t *testing.T) {
	if got, err := DecodePrivateTarget([]byte(`{"target":"agent\u005f7","message":{}}`)); err != nil || got != "agent_7" {
		t.Fatalf("got %q, %v", got, err)
	}
	for _, in := range []string{`{}`, `{"target":""}`, `{"target":null}`, `{"target":["a"]}`, `"a"`} {
		if _, err := DecodePrivateTarget([]byte(in)); err == nil || err.Field == "" {
			t.Errorf("DecodePrivateTarget(%s) err = %v", in, err)
		}
	}
}

func TestScanText(t *testing.T) {
	for k := 0; k < 20; k++ {
		pad := strings.Repeat("a", k)
		for _, tc := range []struct {
			in                 string
			control, badEscape bool
		}{
			{pad + `\x` + pad, false, true},
			{pad + `\\x` + pad, false, false},
			{pad + `\u00e9` + pad, false, false},
			{pad + `\u00e` + pad[:min(k, 0)], false, true},
			{pad + "\n" + pad, true, false},
			{pad + "\x1f" + pad, true, false},
			{pad + " \x7f\xff" + pad, false, false},
			{pad + `\`, false, true},
		} {
			c, b := scanText([]byte(tc.in))
			if c != tc.control || b != tc.badEscape {
				t.Errorf("scanText(%q) = %v, %v; want %v, %v", tc.in, c, b, tc.control, tc.badEscape)
			}
		}
	}
}

func TestValidTimestamp(t *testing.T) {
	good := []string{"2025-01-01T12:00:00.000Z", "2025-01-01T12:00:00Z", "2025-01-01T12:00:00+02:00",
		"2000-02-29T00:00:00-00:00", "2025-12-31T23:59:59.9Z", "2016-12-31T23:59:60Z"}
	bad := []string{"", "2025-01-01T12:00:00", "2025-13-01T12:00:00Z", "2025-00-01T12:00:00Z",
		"1900-02-29T00:00:00Z", "2025-04-31T00:00:00Z", "2025-01-01T12:60:00Z", "2025-01-01T12:00:61Z",
		"2025-01-01 12:00:00Z", "2025-01-01T12:00:00+24:00", "2025-01-01T12:00:00+02:60",
		"2025-01-01T12:00:00+0200", "+2025-01-01T12:00:00Z", "2025-1-01T12:00:00Z", "２025-01-01T12:00:00Z"}
	for _, s := range good {
		if !ValidTimestamp(s) {
			t.Errorf("ValidTimestamp(%q) = false", s)
		}
	}
	for _, s := range bad {
		if ValidTimestamp(s) {
			t.Errorf("ValidTimestamp(%q) = true", s)
		}
	}
}

func TestTypeString(t *testing.T) {
	for typ := TypeInvalid; typ <= TypeError+1; typ++ {
		s := typ.String()
		if typ == TypeInvalid || typ > TypeError {
			if s != "invalid" {
				t.Errorf("%d.String() = %q", typ, s)
			}
			continue
		}
		if ParseType(s) != typ {
			t.Errorf("ParseType(%q) = %v, want %v", s, ParseType(s), typ)
		}
	}
}

func BenchmarkDecodeEvent(b *testing.B) {
	data := []byte(eventJSON)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Decode(data); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeCommand(b *testing.B) {
	data := []byte(mk("type", `"command"`, "payload", `{"command":"join_channel","parameters":{}}`))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Decode(data); err != nil {
			b.Fatal(err)
		}
	}
}

// system and error are the server's: a client sending one is refused as
// forbidden, before its (possibly server-style) address is checked.
func TestDecodeServerOnlyTypes(t *testing.T) {
	for _, typ := range []string{"system", "error"} {
		in := `{"version":"1.0","id":"arq_x","type":"` + typ + `","room":"*","channel":"broadcast","from":"a","timestamp":"2025-01-01T12:00:00Z","payload":{}}`
		_, err := Decode([]byte(in))
		if err == nil || err.Code != CodeForbidden || err.Status != 403 || err.Field != "type" || err.RequestID != "arq_x" {
			t.Errorf("%s: got %+v", typ, err)
		}
	}
}
