package commands

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/arqonbus/arqonbus/codec"
	"github.com/arqonbus/arqonbus/engine"
	"github.com/arqonbus/arqonbus/fanout"
)

func TestTarget(t *testing.T) {
	env := &codec.Envelope{Room: "science", Channel: "general"}
	cases := []struct {
		p     channelParams
		want  fanout.Key
		field string
	}{
		{channelParams{}, fanout.Key{Room: "science", Channel: "general"}, ""},
		{channelParams{Room: "research"}, fanout.Key{Room: "research", Channel: "general"}, ""},
		{channelParams{Channel: "explore"}, fanout.Key{Room: "science", Channel: "explore"}, ""},
		{channelParams{Room: "research:coordination"}, fanout.Key{Room: "research", Channel: "coordination"}, ""},
		{channelParams{Room: "a:b", Channel: "c"}, fanout.Key{}, "payload.parameters.room"},
		{channelParams{Room: "Bad Room"}, fanout.Key{}, "payload.parameters.room"},
		{channelParams{Channel: "-x"}, fanout.Key{}, "payload.parameters.channel"},
	}
	for _, c := range cases {
		k, err := target(env, c.p)
		switch {
		case c.field != "" && (err == nil || err.Field != c.field || err.Code != codec.CodeValidation):
			t.Errorf("%+v: got %v, want a validation error on %s", c.p, err, c.field)
		case c.field == "" && (err != nil || k != c.want):
			t.Errorf("%+v: got %v %v, want %v", c.p, k, err, c.want)
		}
	}
}

func TestCompactScalar(t *testing.T) {
	cases := []struct {
		in, want string
		ok       bool
	}{
		{`"analytical"`, `"analytical"`, true},
		{`"\u0061"`, `"a"`, true},
		{` 2 `, `2`, true},
		{`2.0`, `2`, true},
		{`true`, `true`, true},
		{`null`, `null`, true},
		{`{"a":1}`, ``, false},
		{`[1]`, ``, false},
		{`"unterminated`, ``, false},
	}
	for _, c := range cases {
		got, ok := CompactScalar([]byte(c.in))
		if ok != c.ok || got != c.want {
			t.Errorf("CompactScalar(%s) = %q %v, want %q %v", c.in, got, ok, c.want, c.ok)
		}
	}
	// "2" the string and 2 the number stay different.
	s, _ := CompactScalar([]byte(`"2"`))
	n, _ := CompactScalar([]byte(`2`))
	if s == n {
		t.Error("string and number compare equal")
	}
}

func TestPendingResolveOnceAndOnlyFromItsHandler(t *testing.T) {
	timedOut := make(chan *Inflight, 4)
	p := NewPending(time.Hour, func(f *Inflight) { timedOut <- f })
	h, other, req := &engine.Conn{}, &engine.Conn{}, &engine.Conn{}
	var outstanding atomic.Int32
	if ok, _ := p.Add(&Inflight{RequestID: "arq_1", Requester: req, Handler: h}, &outstanding, 10); !ok {
		t.Fatal("add")
	}
	if ok, full := p.Add(&Inflight{RequestID: "arq_1", Requester: req, Handler: h}, &outstanding, 10); ok || full {
		t.Fatal("the same id twice to one handler was accepted")
	}
	if p.Resolve(other, "arq_1") != nil {
		t.Fatal("resolved from a handler it did not go to")
	}
	if f := p.Resolve(h, "arq_1"); f == nil || f.Requester != req {
		t.Fatal("resolve")
	}
	if p.Resolve(h, "arq_1") != nil || outstanding.Load() != 0 || p.Len() != 0 {
		t.Fatal("resolved twice, or the count leaked")
	}
}

func TestPendingLimitTimeoutAndHandlerLoss(t *testing.T) {
	timedOut := make(chan *Inflight, 4)
	p := NewPending(50*time.Millisecond, func(f *Inflight) { timedOut <- f })
	h, req := &engine.Conn{}, &engine.Conn{}
	var outstanding atomic.Int32
	for _, id := range []string{"arq_a", "arq_b"} {
		if ok, _ := p.Add(&Inflight{RequestID: id, Requester: req, Handler: h}, &outstanding, 2); !ok {
			t.Fatal(id)
		}
	}
	if _, full := p.Add(&Inflight{RequestID: "arq_c", Requester: req, Handler: h}, &outstanding, 2); !full {
		t.Fatal("over the limit was accepted")
	}
	lost := p.DropHandler(h)
	if len(lost) != 2 || outstanding.Load() != 0 {
		t.Fatalf("handler loss took %d, outstanding %d", len(lost), outstanding.Load())
	}
	select {
	case f := <-timedOut:
		t.Fatalf("%s timed out after its handler was dropped", f.RequestID)
	case <-time.After(120 * time.Millisecond):
	}
	p.Add(&Inflight{RequestID: "arq_d", Requester: req, Handler: h}, &outstanding, 2)
	select {
	case f := <-timedOut:
		if f.RequestID != "arq_d" || outstanding.Load() != 0 {
			t.Fatalf("timeout for %s, outstanding %d", f.RequestID, outstanding.Load())
		}
	case <-time.After(2 * time.Second):
		t.Fatal("no timeout")
	}
}
