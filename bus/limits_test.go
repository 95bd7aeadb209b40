package bus

import (
	"testing"
	"time"

	"github.com/arqonbus/arqonbus/codec"
)

func TestBucket(t *testing.T) {
	var b bucket
	now := int64(time.Second)
	for i := range 4 {
		if ok, _ := b.take(now, 2, 4); !ok {
			t.Fatalf("burst: refused token %d", i)
		}
	}
	ok, wait := b.take(now, 2, 4)
	if ok || wait <= 0 || wait > 500*time.Millisecond {
		t.Fatalf("empty bucket: ok %v wait %v", ok, wait)
	}
	if ok, _ := b.take(now+int64(500*time.Millisecond), 2, 4); !ok {
		t.Fatal("no token after refilling for half a second at 2/s")
	}
	if ok, _ := b.take(now, 0, 0); !ok {
		t.Fatal("rate 0 means unlimited")
	}
	if e := rateLimited("message", 1500*time.Microsecond); e.Code != codec.CodeRateLimited || e.RetryAfterMs != 2 {
		t.Fatalf("retry_after_ms rounds up: %+v", e)
	}
}

func TestMsgAttrs(t *testing.T) {
	env, cerr := codec.Decode([]byte(`{"version":"1.0","id":"arq_1","type":"event","room":"r","channel":"c","from":"a",` +
		`"timestamp":"2025-01-01T12:00:00Z","payload":{"metadata":{"personality":"analytical","priority":"low"}},` +
		`"metadata":{"priority":"high","n":2}}`))
	if cerr != nil {
		t.Fatal(cerr)
	}
	var a msgAttrs
	a.reset(env)
	for key, want := range map[string]string{"personality": `"analytical"`, "priority": `"high"`, "n": "2"} {
		if got, ok := a.Attr(key); !ok || got != want {
			t.Errorf("%s = %q %v, want %q (envelope metadata wins)", key, got, ok, want)
		}
	}
	if _, ok := a.Attr("missing"); ok {
		t.Error("missing key found")
	}
	a.reset(nil)
	if len(a.values) != 0 {
		t.Error("reset keeps values")
	}
}
