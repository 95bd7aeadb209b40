package engine

import (
	"bytes"
	"net/http"
	"strings"
	"testing"
)

// acceptAll is a Handler.Upgrade that takes every well-formed request, and
// refuses one asking for it, to exercise the refusal's response.
func acceptAll(r *Request) error {
	if r.Query.Get("refuse") != "" {
		return &Reject{Status: http.StatusForbidden, Reason: "refused"}
	}
	return nil
}

func TestParseUpgrade(t *testing.T) {
	frame := clientFrame(true, 1, []byte("pipelined"))
	for _, tc := range []struct {
		name     string
		in       string
		n        int // -1: all of in
		status   string
		upgraded bool
	}{
		{"valid, with a frame behind", upgradeRequest + string(frame), len(upgradeRequest), "101", true},
		{"truncated", upgradeRequest[:40], 0, "", false},
		{"refused by the handler", strings.Replace(upgradeRequest, "client_id=x", "refuse=1", 1), -1, "403", false},
		{"not an upgrade", "GET / HTTP/1.1\r\nHost: x\r\n\r\n", len("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), "4", false},
		{"bad URI", strings.Replace(upgradeRequest, "/?client_id=x", "%zz", 1), len(upgradeRequest) - len("/?client_id=x") + 3, "400", false},
		{"oversized headers", "GET / HTTP/1.1\r\nX: " + strings.Repeat("a", maxRequestBytes), -1, "431", false},
		{"oversized but complete", strings.Replace(upgradeRequest, "Host:", "X: "+strings.Repeat("a", maxRequestBytes)+"\r\nHost:", 1), -1, "431", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want := tc.n
			if want < 0 {
				want = len(tc.in)
			}
			n, resp, ok := parseUpgrade([]byte(tc.in), "test", acceptAll)
			wantResp := tc.status != ""
			if n != want || ok != tc.upgraded || wantResp != bytes.HasPrefix(resp, []byte("HTTP/1.1 "+tc.status)) || !wantResp && resp != nil {
				t.Fatalf("n %d (want %d), upgraded %v, response %q", n, want, ok, resp)
			}
		})
	}
}

// FuzzUpgrade feeds arbitrary bytes as a connection's first bytes: the parser
// must not panic, must take no more than it was given, must answer with a
// bounded HTTP response once it takes anything, and a valid request sent
// before the same bytes must still upgrade, taking only its own bytes.
func FuzzUpgrade(f *testing.F) {
	// Seeds live in testdata/fuzz/FuzzUpgrade: a valid request, a truncated
	// one, oversized headers, a bad URI, a frame pipelined behind a request.
	f.Fuzz(func(t *testing.T, data []byte) {
		n, resp, ok := parseUpgrade(append([]byte(nil), data...), "fuzz", acceptAll)
		switch {
		case n < 0 || n > len(data):
			t.Fatalf("took %d of %d bytes", n, len(data))
		case n == 0 && (resp != nil || ok):
			t.Fatalf("answered %q without taking a request", resp)
		case n > 0 && (!bytes.HasPrefix(resp, []byte("HTTP/1.1 ")) || len(resp) > 4096):
			t.Fatalf("response %q", resp)
		case ok && !bytes.HasPrefix(resp, []byte("HTTP/1.1 101 ")):
			t.Fatalf("upgraded with %q", resp)
		case n == 0 && len(data) > maxRequestBytes:
			t.Fatalf("waiting for more after %d bytes", len(data))
		}
		valid := append([]byte(upgradeRequest), data...)
		if n, resp, ok := parseUpgrade(valid, "fuzz", acceptAll); !ok || n != len(upgradeRequest) {
			t.Fatalf("a valid request before the data: took %d bytes, upgraded %v, %q", n, ok, resp)
		}
	})
}
