package e2e

// Sync acks through a Redis outage (issue 9, item 9): a publisher waiting
// for "persisted" gets an answer within the command timeout, whatever Redis
// does, and exactly one.

import (
	"context"
	"testing"
	"time"

	"github.com/arqonbus/arqonbus/client"
	"github.com/arqonbus/arqonbus/internal/redistest"
)

func TestSyncAckDeadline(t *testing.T) {
	for _, mode := range []string{"standalone", "cluster"} {
		t.Run(mode, func(t *testing.T) {
			cluster := "false"
			if mode == "cluster" {
				cluster = "true"
			}
			syncAckDeadline(t, "ARQONBUS_CLUSTER="+cluster)
		})
	}
}

func syncAckDeadline(t *testing.T, extra ...string) {
	// Redis keeps what it acknowledged through the kill.
	r := redistest.Run(t, "--appendonly", "yes", "--appendfsync", "always")
	s := startServer(t, redisEnv(r, append(extra, "ARQONBUS_PERSIST=sync", "ARQONBUS_COMMAND_TIMEOUT=1s")...)...)
	ctx := testCtx(t, 30*time.Second)
	room, ch := "acks", uniqueName("ch")
	pub := dial(t, s, client.WithClientID(uniqueName("pub")))
	if err := pub.Join(ctx, room, ch); err != nil {
		t.Fatal(err)
	}
	publish := func(n int) string {
		e := seqEvent(room, ch, "p", n, map[string]any{"ack": true})
		if err := pub.Send(e); err != nil {
			t.Fatal(err)
		}
		return e.ID
	}
	answer := func(id string, d time.Duration) (client.Envelope, time.Duration, bool) {
		start := time.Now()
		actx, cancel := context.WithTimeout(ctx, d)
		defer cancel()
		env, err := pub.Expect(actx, func(e client.Envelope) bool { return e.RequestID() == id })
		return env, time.Since(start), err == nil
	}

	// Redis up: persisted.
	env, _, ok := answer(publish(0), 5*time.Second)
	if a, e := parseAck(env); !ok || e != nil || !a.Persisted {
		t.Fatalf("with Redis up: %s, want an ack with persisted:true", env.Raw)
	}

	// Redis gone: each sync ack is answered TIMEOUT within the deadline, not left waiting.
	r.Kill()
	var late []string
	for n := 1; n <= 3; n++ {
		id := publish(n)
		env, took, ok := answer(id, 6*time.Second)
		if !ok {
			t.Errorf("event %d: no answer within 6s of a 1s deadline while Redis is down", n)
			continue
		}
		t.Logf("event %d answered after %v: %s", n, took, env.Raw)
		if _, e := parseAck(env); e == nil || (e.Code != "TIMEOUT" && e.Code != "UNAVAILABLE") {
			t.Errorf("event %d: %s, want TIMEOUT (or UNAVAILABLE), never a persisted ack while Redis is down", n, env.Raw)
		} else if e.Code == "TIMEOUT" {
			late = append(late, id)
		}
	}

	// Redis back: no second answer to those, and acks say persisted again.
	r.Start()
	waitStorage(t, pub, 15*time.Second, "ok with an empty backlog", func(st storageStatus) bool {
		return st.Health == "ok" && st.Backlog == 0
	})
	for _, id := range late {
		actx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		if env, err := pub.Expect(actx, func(e client.Envelope) bool { return e.RequestID() == id }); err == nil {
			t.Errorf("a second answer to %s after its TIMEOUT: %s", id, env.Raw)
		}
		cancel()
	}
	// What the TIMEOUT said: kept, and written once Redis returned.
	inStream := map[int]bool{}
	for _, e := range xrange(t, r, streamKey(room, ch)) {
		inStream[seqOf(e.Env)] = true
	}
	for n := 0; n <= 3; n++ {
		if !inStream[n] {
			t.Errorf("event %d is not in the stream after Redis returned", n)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for n := 4; ; n++ {
		env, _, ok := answer(publish(n), 5*time.Second)
		if a, e := parseAck(env); ok && e == nil && a.Persisted {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after Redis returned: %s, want an ack with persisted:true", env.Raw)
		}
		time.Sleep(100 * time.Millisecond)
	}
	busServes(t, s, nil)
}
