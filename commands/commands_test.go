package commands

import (
	"sync"
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
	p := NewPending(time.Hour, func(f *Inflight) { timedOut <- f }, nil)
	h, other, req := &engine.Conn{}, &engine.Conn{}, &engine.Conn{}
	var outstanding atomic.Int32
	if r := p.Add(&Inflight{RequestID: "arq_1", Requester: req, Handler: h}, &outstanding, 10, nil); r != Sent {
		t.Fatal("add", r)
	}
	if r := p.Add(&Inflight{RequestID: "arq_1", Requester: req, Handler: h}, &outstanding, 10, nil); r != Conflict {
		t.Fatal("the same id twice from one requester to one handler was accepted", r)
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

// Two requesters, one id, one handler: the second waits for the first's
// answer, then goes to the handler; each answer resolves its own command.
func TestPendingSameIDFromTwoRequesters(t *testing.T) {
	var sent []*Inflight
	p := NewPending(time.Hour, func(*Inflight) {}, func(f *Inflight, _ *engine.Loop) { sent = append(sent, f) })
	h, a, b := &engine.Conn{}, &engine.Conn{}, &engine.Conn{}
	var oa, ob atomic.Int32
	fa := &Inflight{RequestID: "arq_cmd_001", Requester: a, Handler: h, Frame: []byte("a")}
	fb := &Inflight{RequestID: "arq_cmd_001", Requester: b, Handler: h, Frame: []byte("b")}
	fc := &Inflight{RequestID: "arq_cmd_001", RequesterNode: "n1", RequesterID: "c", Handler: h, Frame: []byte("c")}
	if r := p.Add(fa, &oa, 10, nil); r != Sent || len(sent) != 1 || sent[0] != fa {
		t.Fatal("first", r, sent)
	}
	if r := p.Add(fb, &ob, 10, nil); r != Queued || len(sent) != 1 {
		t.Fatal("second", r, sent)
	}
	if r := p.Add(fc, nil, 0, nil); r != Queued || len(sent) != 1 {
		t.Fatal("third (a remote requester)", r, sent)
	}
	if r := p.Add(&Inflight{RequestID: "arq_cmd_001", RequesterNode: "n1", RequesterID: "c", Handler: h}, nil, 0, nil); r != Conflict {
		t.Fatal("the remote requester's id twice", r)
	}
	if p.Len() != 3 || ob.Load() != 1 {
		t.Fatal("len", p.Len(), ob.Load())
	}
	if f := p.Resolve(h, "arq_cmd_001"); f != fa || len(sent) != 2 || sent[1] != fb {
		t.Fatal("the first answer", f, sent)
	}
	if f := p.Resolve(h, "arq_cmd_001"); f != fb || len(sent) != 3 || sent[2] != fc || fb.Frame != nil {
		t.Fatal("the second answer", f, sent)
	}
	if f := p.Resolve(h, "arq_cmd_001"); f != fc || p.Len() != 0 || oa.Load()+ob.Load() != 0 {
		t.Fatal("the third answer", f, p.Len())
	}
	if len(p.byKey) != 0 || len(p.byHandler) != 0 {
		t.Fatal("the table keeps empty slots")
	}
}

// A waiting command times out in its place; the one in flight timing out
// lets the next go; a dropped handler takes the waiting ones too, sending
// none of them.
func TestPendingQueueTimeoutAndDrop(t *testing.T) {
	timedOut := make(chan *Inflight, 4)
	var mu sync.Mutex
	var sent []*Inflight
	p := NewPending(80*time.Millisecond, func(f *Inflight) { timedOut <- f }, func(f *Inflight, _ *engine.Loop) { mu.Lock(); sent = append(sent, f); mu.Unlock() })
	h := &engine.Conn{}
	fa := &Inflight{RequestID: "arq_x", Requester: &engine.Conn{}, Handler: h}
	p.Add(fa, nil, 0, nil)
	time.Sleep(40 * time.Millisecond)
	fb := &Inflight{RequestID: "arq_x", Requester: &engine.Conn{}, Handler: h}
	p.Add(fb, nil, 0, nil)
	if f := <-timedOut; f != fa {
		t.Fatal("first timeout", f)
	}
	mu.Lock()
	if len(sent) != 2 || sent[1] != fb {
		t.Fatal("after the first timed out, the second was not sent", sent)
	}
	mu.Unlock()
	if f := <-timedOut; f != fb || p.Len() != 0 {
		t.Fatal("second timeout", f)
	}

	p2 := NewPending(time.Hour, func(*Inflight) {}, func(f *Inflight, _ *engine.Loop) { mu.Lock(); sent = append(sent, f); mu.Unlock() })
	sent = nil
	for i := 0; i < 3; i++ {
		p2.Add(&Inflight{RequestID: "arq_y", Requester: &engine.Conn{}, Handler: h}, nil, 0, nil)
	}
	p2.Add(&Inflight{RequestID: "arq_z", Requester: &engine.Conn{}, Handler: h}, nil, 0, nil)
	if lost := p2.DropHandler(h); len(lost) != 4 || len(sent) != 2 || p2.Len() != 0 {
		t.Fatalf("drop took %d, sent %d, left %d", len(lost), len(sent), p2.Len())
	}
}

func TestPendingRemoteHandlerKeyedByRequester(t *testing.T) {
	p := NewPending(time.Hour, func(*Inflight) {}, nil)
	remote := RemoteHandlerName("node1~x", "db")
	a := &Inflight{RequestID: "arq_cmd_001", Requester: &engine.Conn{}, RequesterID: "api", RemoteHandler: remote}
	b := &Inflight{RequestID: "arq_cmd_001", Requester: &engine.Conn{}, RequesterID: "web", RemoteHandler: remote}
	if p.Add(a, nil, 0, nil) != Sent || p.Add(b, nil, 0, nil) != Sent {
		t.Fatal("two requesters' same id to a remote handler")
	}
	if p.ResolveRemote(remote, "web", "arq_cmd_001") != b || p.ResolveRemote(remote, "api", "arq_cmd_001") != a {
		t.Fatal("resolved the wrong requester's command")
	}
	h := &engine.Conn{}
	queued := &Inflight{RequestID: "arq_q", RequesterNode: "node1~x", RequesterID: "c2", Handler: h}
	p.Add(&Inflight{RequestID: "arq_q", RequesterNode: "node1~x", RequesterID: "c1", Handler: h}, nil, 0, nil)
	p.Add(queued, nil, 0, nil)
	p.Add(&Inflight{RequestID: "arq_r", Requester: &engine.Conn{}, RequesterID: "api", RemoteHandler: remote}, nil, 0, nil)
	lost := p.DropNode("node1~x")
	if len(lost) != 2 || p.Len() != 1 {
		t.Fatalf("drop node took %d, left %d: want the forwarded one and the waiting one, not the one in flight here", len(lost), p.Len())
	}
}

func TestPendingLimitTimeoutAndHandlerLoss(t *testing.T) {
	timedOut := make(chan *Inflight, 4)
	p := NewPending(50*time.Millisecond, func(f *Inflight) { timedOut <- f }, nil)
	h, req := &engine.Conn{}, &engine.Conn{}
	var outstanding atomic.Int32
	for _, id := range []string{"arq_a", "arq_b"} {
		if r := p.Add(&Inflight{RequestID: id, Requester: req, Handler: h}, &outstanding, 2, nil); r != Sent {
			t.Fatal(id)
		}
	}
	if r := p.Add(&Inflight{RequestID: "arq_c", Requester: req, Handler: h}, &outstanding, 2, nil); r != Full {
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
	p.Add(&Inflight{RequestID: "arq_d", Requester: req, Handler: h}, &outstanding, 2, nil)
	select {
	case f := <-timedOut:
		if f.RequestID != "arq_d" || outstanding.Load() != 0 {
			t.Fatalf("timeout for %s, outstanding %d", f.RequestID, outstanding.Load())
		}
	case <-time.After(2 * time.Second):
		t.Fatal("no timeout")
	}
}
