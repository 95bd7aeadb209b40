package telemetry

import (
	"encoding/json"
	"math"
	"strings"
	"testing"
	"time"
)

func TestAppendFields(t *testing.T) {
	type custom struct {
		A int    `json:"a"`
		B string `json:"b"`
	}
	ts := time.Date(2025, 3, 4, 5, 6, 7, 8e6, time.UTC)
	fields := map[string]any{
		"s":         "quote\" slash\\ nl\n \u2028 <b>",
		"i":         -7,
		"u":         uint64(math.MaxUint64),
		"f":         1.5,
		"tiny":      1e-9,
		"nan":       math.NaN(),
		"inf":       math.Inf(1),
		"f32":       float32(0.1),
		"b":         true,
		"nil":       nil,
		"t":         ts,
		"m":         map[string]any{"z": 1, "a": []any{"x", 2, false}},
		"ms":        map[string]string{"k": "v"},
		"list":      []map[string]any{{"room": "r", "members": 2}},
		"strs":      []string{"a", "b"},
		"raw":       json.RawMessage(`{"r":1}`),
		"badraw":    json.RawMessage(`{`),
		"custom":    custom{A: 1, B: "x"},
		"fn":        func() {},
		"eventType": "ignored",
		"node_id":   "ignored",
	}
	out := append([]byte("{"), appendFields(nil, fields, quiet)...)
	out = append(out[:len(out)-1], '}')
	var got map[string]any
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	want := map[string]any{
		"s": "quote\" slash\\ nl\n \u2028 <b>", "i": -7.0, "u": float64(math.MaxUint64), "f": 1.5, "tiny": 1e-9,
		"nan": nil, "inf": nil, "f32": 0.1, "b": true, "nil": nil, "t": "2025-03-04T05:06:07.008Z",
		"badraw": nil, "fn": nil,
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: got %#v, want %#v", k, got[k], v)
		}
	}
	if _, ok := got["eventType"]; ok {
		t.Error("eventType from fields was written")
	}
	for _, frag := range []string{
		`"m":{"a":["x",2,false],"z":1}`, `"ms":{"k":"v"}`, `"list":[{"members":2,"room":"r"}]`,
		`"strs":["a","b"]`, `"raw":{"r":1}`, `"custom":{"a":1,"b":"x"}`, `"u":18446744073709551615`, `"f32":0.1,`,
	} {
		if !strings.Contains(string(out), frag) {
			t.Errorf("missing %s in %s", frag, out)
		}
	}
	// Keys come out sorted: payloads are deterministic.
	if !strings.HasPrefix(string(out), `{"b":true,"badraw":null,"custom":`) {
		t.Errorf("unsorted: %s", out)
	}
}
