package codec

import (
	"encoding/json"
	"testing"
)

func TestAppendRouted(t *testing.T) {
	cases := []struct{ in, meta string }{
		{`{"version":"1.0","id":"arq_1","type":"event","room":"science","channel":"general","from":"a","timestamp":"2025-01-01T12:00:00.000Z","payload":{"m":"hi"}}`, `{"position":"5-1"}`},
		{`{"version":"1.0","id":"arq_1","type":"event","room":"science:general","from":"a","timestamp":"2025-01-01T12:00:00Z","payload":{"m":"hi"},"metadata":{ "ack" : true , "position":"client"}}`, `{"ack":true,"position":"5-1"}`},
		{`{"version":"1.0","id":"arq_1","type":"event","room":"r","channel":"c","from":"a","timestamp":"2025-01-01T12:00:00Z","payload":{},"metadata":{}}`, `{"position":"5-1"}`},
	}
	for _, tc := range cases {
		env, err := Decode([]byte(tc.in))
		if err != nil {
			t.Fatal(err)
		}
		out := AppendRouted(nil, env, []byte(`"position":"5-1"`))
		var got, want map[string]any
		if err := json.Unmarshal(out, &got); err != nil {
			t.Fatalf("%s: %v", out, err)
		}
		var in map[string]any
		_ = json.Unmarshal([]byte(tc.in), &in)
		_ = json.Unmarshal([]byte(tc.meta), &want)
		gm, _ := json.Marshal(got["metadata"])
		wm, _ := json.Marshal(want)
		if string(gm) != string(wm) {
			t.Errorf("metadata %s, want %s", gm, wm)
		}
		for _, f := range []string{"id", "type", "from", "timestamp"} {
			if got[f] != in[f] {
				t.Errorf("%s changed: %v -> %v", f, in[f], got[f])
			}
		}
		if env2, err := Decode(out); err != nil || env2.Room != env.Room || env2.Channel != env.Channel {
			t.Errorf("routed envelope does not decode back: %v", err)
		}
	}
}

func BenchmarkAppendRouted(b *testing.B) {
	env, _ := Decode([]byte(`{"version":"1.0","id":"arq_msg_001","type":"event","room":"science","channel":"general","from":"web_client_1","timestamp":"2025-01-01T12:00:00.000Z","payload":{"message":"hi"}}`))
	extra := []byte(`"position":"1764180000000-12","received_at":"2026-11-26T18:00:00.000Z"`)
	buf := make([]byte, 0, 512)
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendRouted(buf[:0], env, extra)
	}
}
