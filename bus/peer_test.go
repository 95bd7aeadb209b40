package bus

import (
	"bytes"
	"testing"
)

func TestPeerMsgRoundTrip(t *testing.T) {
	in := peerMsg{kind: peerCommand, from: "node1~ab12", client: "db_service", sender: "api_service",
		name: "st\x1fa\ntus:", req: "arq_cmd_001", room: "services", channel: "database", body: []byte(`{"x":"1:2"}`)}
	out, ok := decodePeer(in.encode())
	if !ok {
		t.Fatal("decode failed")
	}
	if out.kind != in.kind || out.from != in.from || out.client != in.client || out.sender != in.sender ||
		out.name != in.name || out.req != in.req || out.room != in.room || out.channel != in.channel ||
		out.code != "" || !bytes.Equal(out.body, in.body) {
		t.Fatalf("round trip: %+v -> %+v", in, out)
	}
	for _, bad := range []string{"", "x", "3:ab", "1:a", "99999999999:a", "-1:a", "1:a1:b"} {
		if _, ok := decodePeer([]byte(bad)); ok {
			t.Errorf("decodePeer(%q) accepted", bad)
		}
	}
}

// FuzzDecodePeer: whatever arrives on an inbox, decoding never panics, and
// what decodes encodes back to the same bytes.
func FuzzDecodePeer(f *testing.F) {
	f.Add((&peerMsg{kind: peerPrivate, from: "a~1", client: "b", body: []byte("{}")}).encode())
	f.Add([]byte("2:pm0:0:0:0:0:0:0:0:0:"))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, ok := decodePeer(data)
		if !ok {
			return
		}
		if again := m.encode(); !bytes.Equal(again, data) {
			// Lengths may be written with leading zeros on the wire; decoding them again must agree.
			m2, ok := decodePeer(again)
			if !ok || m2.kind != m.kind || !bytes.Equal(m2.body, m.body) {
				t.Fatalf("re-encoding %q gave %q", data, again)
			}
		}
	})
}
