package bus

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/url"
	"testing"

	"github.com/arqonbus/arqonbus/codec"
	"github.com/arqonbus/arqonbus/commands"
	"github.com/arqonbus/arqonbus/engine"
	"github.com/arqonbus/arqonbus/fanout"
)

// knownCodes are the SPEC's error codes.
var knownCodes = map[string]bool{
	codec.CodeValidation: true, codec.CodeUnauthorized: true, codec.CodeForbidden: true, codec.CodeNotFound: true,
	codec.CodeTargetNotFound: true, codec.CodeCommandNotFound: true, codec.CodeConflict: true,
	codec.CodeRateLimited: true, codec.CodeTimeout: true, codec.CodeUnavailable: true, codec.CodeInternal: true,
}

// fuzzSession is a fresh bus (real hub, memory store, built-ins) and one opened client on a detached
// loop, admin or not.
func fuzzSession(tb testing.TB, admin bool) (*Bus, *session) {
	hub := fanout.NewHub(fanout.Options{AutoCreate: true, NewState: NewChannelState,
		Bootstrap: []fanout.Key{{Room: "science", Channel: "general"}}})
	b := New(Config{NodeID: "fuzz", AdminToken: "fuzz_admin", MaxSubscriptions: 8, AnswerBytes: 4096,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, hub)
	c := engine.NewDetachedLoop().NewConn("")
	q := url.Values{"client_id": {"fuzzer"}}
	if admin {
		q.Set("admin_token", "fuzz_admin")
	}
	if err := b.Upgrade(c, &engine.Request{Query: q}); err != nil {
		tb.Fatal(err)
	}
	b.Open(c)
	s := sessionOf(c)
	if s.admin != admin {
		tb.Fatalf("admin %v, want %v", s.admin, admin)
	}
	// A membership and some history, so that leave, channel_info, history and since have something.
	b.Message(c, []byte(`{"version":"1.0","id":"arq_j","type":"command","room":"science","channel":"general","from":"fuzzer",`+
		`"timestamp":"2025-01-01T12:00:00.000Z","payload":{"command":"join_channel","parameters":{}}}`))
	b.Message(c, []byte(`{"version":"1.0","id":"arq_e","type":"event","room":"science","channel":"general","from":"fuzzer",`+
		`"timestamp":"2025-01-01T12:00:00.000Z","payload":{"n":1}}`))
	return b, s
}

// FuzzCommandParams runs every built-in command with arbitrary parameters (and an envelope room and
// channel, which the codec has not necessarily checked) through the real command table: nothing
// panics, every refusal is a *codec.Error with one of the SPEC's codes, status and message, and every
// success is a JSON object. Then the same parameters go through the whole bus as a client's command.
func FuzzCommandParams(f *testing.F) {
	for _, seed := range []struct {
		params, room, channel string
		admin                 bool
	}{
		{`{}`, "science", "general", false},
		{`{"room":"research:coordination"}`, "science", "general", true},
		{`{"room":"a:b","channel":"c"}`, "science", "general", false},
		{`{"limit":1000,"since":"1700000000000-3","until":"2024-05-01T12:00:00Z"}`, "science", "general", false},
		{`{"limit":-1}`, "science", "general", false},
		{`{"limit":"x","after":"Not A Name"}`, "science", "general", false},
		{`{"filter":{"personality":"analytical","priority":2,"x":null,"y":true},"handles":["status","x"],"since":"0"}`, "science", "explore", false},
		{`{"filter":{"k":{"nested":1}}}`, "science", "general", false},
		{`{"handles":[""]}`, "science", "general", false},
		{`{"room":"","channel":""}`, "", "", true},
		{`null`, "science", "general", false},
		{`[1,2]`, "Bad Room", "-x", true},
		{`{"since":"99999999999999999999-1"}`, "science", "general", false},
		{`{"room":"science","channel":"general"}`, "science", "general", true},
	} {
		f.Add([]byte(seed.params), seed.room, seed.channel, seed.admin)
	}
	f.Fuzz(func(t *testing.T, params []byte, room, channel string, admin bool) {
		b, s := fuzzSession(t, admin)
		for _, name := range b.builtins.Names() {
			cmd := b.builtins.Get(name)
			env := &codec.Envelope{Version: "1.0", ID: "arq_fuzz", Type: codec.TypeCommand, Room: room, Channel: channel,
				From: s.ID(), Timestamp: "2025-01-01T12:00:00.000Z"}
			result, cerr := commands.Run(cmd, b.deps, s, &commands.Request{Env: env, Name: name, Params: params})
			if cerr != nil {
				if !knownCodes[cerr.Code] || cerr.Status == 0 || cerr.Message == "" {
					t.Fatalf("%s %s: refusal %+v is not a SPEC error", name, params, cerr)
				}
				continue
			}
			if !json.Valid(result) || !bytes.HasPrefix(result, []byte("{")) {
				t.Fatalf("%s %s: result %q is not a JSON object", name, params, result)
			}
		}
		// The whole way: decode, checks, dispatch (the answers go to a socket that discards).
		for _, name := range []string{"join_channel", "list_channels", "channel_info", "leave_channel", "delete_channel"} { // not history: Blocking, its goroutine would share the detached loop
			msg := []byte(`{"version":"1.0","id":"arq_fuzz2","type":"command","room":"science","channel":"general","from":"fuzzer",` +
				`"timestamp":"2025-01-01T12:00:00.000Z","payload":{"command":"` + name + `","parameters":`)
			msg = append(append(msg, params...), "}}"...)
			b.Message(s.conn, msg)
		}
	})
}
