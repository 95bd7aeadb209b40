package bus

import (
	"bytes"
	"context"
	"log/slog"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/arqonbus/arqonbus/engine"
	"github.com/arqonbus/arqonbus/fanout"
	"github.com/arqonbus/arqonbus/persist"
)

// buggyStore is the memory store with a bug in Range: it panics, on the
// goroutine a blocking command (history) runs on.
type buggyStore struct{ *persist.Memory }

func (buggyStore) Range(context.Context, string, persist.Query) ([]persist.Entry, error) {
	panic("a bug in the store")
}

// A panic in a blocking command, off the loops, is logged and counted; the
// process lives on, the command's slot is freed and the command counts as
// failed (its requester gets INTERNAL).
func TestPanicInBlockingCommandIsRecovered(t *testing.T) {
	var logs bytes.Buffer
	hub := fanout.NewHub(fanout.Options{AutoCreate: true, NewState: NewChannelState})
	b := New(Config{NodeID: "t", Store: buggyStore{persist.NewMemory(10)}, Logger: slog.New(slog.NewTextHandler(&logs, nil))}, hub)
	c := engine.NewDetachedLoop().NewConn("")
	if err := b.Upgrade(c, &engine.Request{Query: url.Values{"client_id": {"asker"}}}); err != nil {
		t.Fatal(err)
	}
	b.Open(c)
	b.Message(c, []byte(`{"version":"1.0","id":"arq_h1","type":"command","room":"science","channel":"general","from":"asker",`+
		`"timestamp":"2025-01-01T12:00:00.000Z","payload":{"command":"history","parameters":{}}}`))
	deadline := time.Now().Add(5 * time.Second)
	for b.Counters().Panics == 0 || len(b.blocking) > 0 || b.Counters().CommandErrors == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("panics %d, blocking slots taken %d, command errors %d", b.Counters().Panics, len(b.blocking), b.Counters().CommandErrors)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if !strings.Contains(logs.String(), "a bug in the store") || !strings.Contains(logs.String(), "blocking command history") {
		t.Errorf("log: %s", logs.String())
	}
}

// A panicking cluster job ends that job only: the worker runs the next.
func TestPanicInJobIsRecovered(t *testing.T) {
	b := New(Config{NodeID: "t", Logger: slog.New(slog.NewTextHandler(&bytes.Buffer{}, nil))}, fanout.NewHub(fanout.Options{}))
	j := newJobs(1, 10, b.recoverOffLoop)
	done := make(chan struct{})
	j.submit("k", true, func() { panic("bad job") })
	j.submit("k", true, func() { close(done) })
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the job after a panicking one did not run")
	}
	if n := b.Counters().Panics; n != 1 {
		t.Errorf("panics %d, want 1", n)
	}
	j.stop(context.Background())
}
