package soak

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

func TestParseMetrics(t *testing.T) {
	const text = `# HELP go_goroutines Number of goroutines.
# TYPE go_goroutines gauge
go_goroutines 22
arqonbus_channels_total 9
arqonbus_errors_total{code="CONFLICT"} 2
arqonbus_errors_total{code="VALIDATION_ERROR"} 5
arqonbus_limit_refusals_total{limit="violations"} 3
weird{label="a } b"} 1.5e+06
process_resident_memory_bytes 2.011136e+07
`
	m, err := parseMetrics(strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]float64{
		mGoroutines: 22, mChannels: 9, mErrors: 7, mViolCloses: 3,
		`arqonbus_errors_total{code="CONFLICT"}`: 2, `weird{label="a } b"}`: 1.5e6,
		"process_resident_memory_bytes": 20111360,
	}
	for k, v := range want {
		if m[k] != v {
			t.Errorf("%s = %v, want %v", k, m[k], v)
		}
	}
	if _, err := parseMetrics(strings.NewReader("go_goroutines\n")); err == nil {
		t.Error("a line without a value parsed")
	}
	if _, err := parseMetrics(strings.NewReader("go_goroutines many\n")); err == nil {
		t.Error("a non-numeric value parsed")
	}
}

func TestPositions(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		less bool
	}{
		{"1-0", "1-1", true}, {"1-9", "2-0", true}, {"10-0", "9-5", false}, {"3-3", "3-3", false},
		{"x-1", "2-0", false}, {"1", "2-0", false}, {"1-2-3", "2-0", false}, {"", "1-0", false},
	} {
		if got := positionLess(tc.a, tc.b); got != tc.less {
			t.Errorf("positionLess(%q, %q) = %v", tc.a, tc.b, got)
		}
	}
	ok := json.RawMessage(`{"request_id":"x","status":"success","result":{"entries":[{"position":"5-0"},{"position":"5-1"},{"position":"6-0"}]}}`)
	if msg := checkHistory(ok); msg != "" {
		t.Errorf("ordered history: %s", msg)
	}
	bad := json.RawMessage(`{"result":{"entries":[{"position":"5-1"},{"position":"5-1"}]}}`)
	if msg := checkHistory(bad); msg == "" {
		t.Error("repeated position not reported")
	}
}

func TestShortErr(t *testing.T) {
	err := errors.New("soak-chat-1a2b-3-4: join_channel: dial ws://127.0.0.1:39100/?client_id=soak-chat-1a2b-3-4: request arq_cmd_00ff12 refused")
	got := shortErr(err)
	if strings.Contains(got, "1a2b") || strings.Contains(got, "39100") || strings.Contains(got, "00ff12") {
		t.Errorf("ids left in %q", got)
	}
}

func TestEventPayload(t *testing.T) {
	b := appendEventPayload(nil, 1234567890123, "soak-chat-x-0-1", 42, filler(100))
	var p eventPayload
	if err := json.Unmarshal(b, &p); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	if p.T != 1234567890123 || p.P != "soak-chat-x-0-1" || p.S != 42 {
		t.Errorf("decoded %+v from %s", p, b)
	}
	if len(filler(4096)) != 4096 {
		t.Error("filler length")
	}
}

// Every garbage frame is one frame whose header says what the kind means to send: masked
// unless it is the unmasked kind, with the opcode and length of its kind.
func TestGarbageFrames(t *testing.T) {
	for _, k := range garbageKinds {
		b := k.frame("soak-gbg")
		h, err := ws.ReadHeader(strings.NewReader(string(b)))
		if err != nil {
			t.Errorf("%s: header: %v", k.name, err)
			continue
		}
		if h.Masked == (k.name == "unmasked_frame") {
			t.Errorf("%s: masked=%v", k.name, h.Masked)
		}
		switch k.name {
		case "binary_frame":
			if h.OpCode != ws.OpBinary {
				t.Errorf("%s: opcode %v", k.name, h.OpCode)
			}
		case "oversized_frame":
			if h.Length <= maxFrame {
				t.Errorf("%s: length %d is within the limit", k.name, h.Length)
			}
		case "huge_length":
			if h.Length != 1<<40 {
				t.Errorf("%s: length %d", k.name, h.Length)
			}
		case "reserved_opcode":
			if h.OpCode != 0x3 {
				t.Errorf("%s: opcode %v", k.name, h.OpCode)
			}
		}
		if (k.wantClose == 0) == (k.wantError == "") {
			t.Errorf("%s: wants both or neither an error and a close", k.name)
		}
	}
}

func TestLatencyRotate(t *testing.T) {
	l := newLatency()
	for i := 1; i <= 100; i++ {
		l.record(time.Duration(i) * time.Millisecond)
	}
	s := l.rotate()
	if s.Count != 100 || s.P50 < 49*time.Millisecond || s.P50 > 51*time.Millisecond ||
		s.P99 < 98*time.Millisecond || s.P99 > 100*time.Millisecond {
		t.Errorf("interval stats %+v", s)
	}
	l.record(time.Second)
	if s := l.rotate(); s.Count != 1 || s.P99 < 999*time.Millisecond {
		t.Errorf("second interval %+v, want only the new value", s)
	}
	if s := l.overall(); s.Count != 101 {
		t.Errorf("overall count %d, want 101", s.Count)
	}
	if s := l.rotate(); s.Count != 0 || s.P99 != 0 {
		t.Errorf("empty interval %+v", s)
	}
}

func TestCountersNotesBounded(t *testing.T) {
	c := newCounters()
	for i := range 200 {
		c.fail(cOtherErrors, "kind "+string(rune('a'+i%100)))
	}
	c.fail(cOtherErrors, "kind a")
	notes := c.noteList()
	if len(notes) != maxNotes {
		t.Errorf("%d notes kept, want %d", len(notes), maxNotes)
	}
	if notes["other_errors: kind a"] != 3 {
		t.Errorf("repeated note counted %d, want 3", notes["other_errors: kind a"])
	}
	if got := c.snapshot()[cOtherErrors]; got != 201 {
		t.Errorf("counter %d, want 201", got)
	}
}
