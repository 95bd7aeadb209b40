package codec

import (
	"bytes"
	"encoding/json"
	"testing"
	"unicode/utf8"
)

// FuzzDecode: Decode never panics, always returns an envelope, and anything it accepts survives being
// forwarded (re-encoded with AppendEnvelope) with every field but the timestamp unchanged.
func FuzzDecode(f *testing.F) {
	for _, tc := range validCases() {
		f.Add([]byte(tc.in))
	}
	for _, tc := range invalidCases() {
		f.Add([]byte(tc.in))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		env, err := Decode(data)
		if env == nil {
			t.Fatal("nil envelope")
		}
		if err != nil {
			if err.Code != CodeValidation || err.Status != 400 || err.RequestID != env.ID {
				t.Fatalf("bad error %+v for env %+v", err, env)
			}
			// The error envelope built from it must be JSON whatever the input was.
			if out := AppendError(nil, "arq_err_x_1", env.Room, env.Channel, now, err); !json.Valid(out) {
				t.Fatalf("error envelope is not JSON: %s", out)
			}
			return
		}
		if !ValidID(env.ID) || !ValidClientID(env.From) || !ValidTimestamp(env.Timestamp) ||
			(env.Room != "" && !ValidName(env.Room)) || !ValidName(env.Channel) {
			t.Fatalf("accepted an invalid header: %+v", env)
		}
		// Decode's callers have checked UTF-8; on such input it must be as strict as encoding/json.
		if utf8.Valid(data) && !json.Valid(data) {
			t.Fatalf("accepted invalid JSON: %q", data)
		}
		if key, dup := refDuplicateKey(data); dup {
			t.Fatalf("accepted a duplicate top-level key %q: %q", key, data)
		}
		roundTrip(t, env)
	})
}

// FuzzAppendString: the output is always one valid JSON string, equal to the input when that is UTF-8.
func FuzzAppendString(f *testing.F) {
	for _, s := range []string{"", "plain", `q"b\`, "\n\r\t\b\f\x00\x1f\x7f", "héllo 世界 🎉", "\u2028\u2029", "a\xffb", "\xed\xa0\x80"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		out := AppendString(nil, s)
		var back string
		if err := json.Unmarshal(out, &back); err != nil {
			t.Fatalf("AppendString(%q) = %s: %v", s, out, err)
		}
		if !utf8.Valid(out) {
			t.Fatalf("AppendString(%q) = %q is not UTF-8", s, out)
		}
		if utf8.ValidString(s) && back != s {
			t.Fatalf("AppendString(%q) decodes to %q", s, back)
		}
	})
}

// refDuplicateKey finds a repeated top-level key with encoding/json's tokenizer: the reference the
// hand-written scan in duplicateKey is fuzzed against.
func refDuplicateKey(data []byte) (string, bool) {
	dec := json.NewDecoder(bytes.NewReader(data))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return "", false
	}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return "", false
		}
		key, _ := tok.(string)
		if seen[key] {
			return key, true
		}
		seen[key] = true
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return "", false
		}
	}
	return "", false
}
