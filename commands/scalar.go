package commands

import (
	"bytes"
	"encoding/json"
)

// CompactScalar returns a JSON scalar (string, number, boolean, null) as
// compact text, so that equal values compare equal as strings; ok is false
// for objects, arrays and invalid JSON.
func CompactScalar(raw []byte) (string, bool) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || raw[0] == '{' || raw[0] == '[' || !json.Valid(raw) {
		return "", false
	}
	if raw[0] == '"' {
		// Normalise escapes: "\u0061" and "a" are the same string.
		var s string
		if json.Unmarshal(raw, &s) != nil {
			return "", false
		}
		out, _ := json.Marshal(s)
		return string(out), true
	}
	if raw[0] == '-' || (raw[0] >= '0' && raw[0] <= '9') {
		var f json.Number
		if json.Unmarshal(raw, &f) != nil {
			return "", false
		}
		if v, err := f.Float64(); err == nil {
			out, _ := json.Marshal(v)
			return string(out), true
		}
	}
	return string(raw), true
}
