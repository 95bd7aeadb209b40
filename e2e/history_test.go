package e2e

// History (issue 4): round trips of the history command on both stores, and
// join_channel since across a seam under a steady publish rate.

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/arqonbus/arqonbus/client"
	"github.com/arqonbus/arqonbus/internal/redistest"
)

// TestHistoryRoundTrip publishes 20 acked events and reads them back with the
// history command, on the memory store and on Redis (async and sync).
func TestHistoryRoundTrip(t *testing.T) {
	t.Run("memory", func(t *testing.T) {
		s := startServer(t)
		historyRoundTrip(t, s, nil, false)
	})
	t.Run("redis-async", func(t *testing.T) {
		r := redistest.Run(t)
		s := startServer(t, redisEnv(r)...)
		historyRoundTrip(t, s, r, false)
	})
	t.Run("redis-sync", func(t *testing.T) {
		r := redistest.Run(t)
		s := startServer(t, redisEnv(r, "ARQONBUS_PERSIST=sync")...)
		historyRoundTrip(t, s, r, true)
	})
}

func historyRoundTrip(t *testing.T, s *server, r *redistest.Server, syncMode bool) {
	ctx := testCtx(t, 20*time.Second)
	room, ch := "hist", uniqueName("rt")
	pub := dial(t, s, client.WithClientID(uniqueName("pub")))
	sub := dial(t, s, client.WithClientID(uniqueName("sub")))
	for _, c := range []*client.Conn{pub, sub} {
		if err := c.Join(ctx, room, ch); err != nil {
			t.Fatalf("join: %v", err)
		}
	}

	if st, ok := getStorage(pub, 3*time.Second); !ok {
		t.Errorf("status gave no storage")
	} else if want := map[bool]string{true: "redis", false: "memory"}[r != nil]; st.Mode != want || st.Health != "ok" {
		t.Errorf("status.storage = %+v, want mode %s health ok", st, want)
	}

	const n = 20
	sentRaw := make([][]byte, n)
	ids := make([]string, n)
	for i := 0; i < n; i++ {
		env := seqEvent(room, ch, "p", i, map[string]any{"ack": true, "n": i, "tag": "x"})
		env.Version, env.From, env.Timestamp = "1.0", pub.ClientID(), client.Now()
		b, _ := json.Marshal(env)
		sentRaw[i], ids[i] = b, env.ID
		if err := pub.SendRaw(b); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}

	// Acks: one per event, in order of the events' ids, with the position.
	ackPos := make([]string, n)
	for i := 0; i < n; i++ {
		env, err := pub.Expect(ctx, func(e client.Envelope) bool {
			return (e.Type == "command_response" || e.Type == "error") && e.RequestID() == ids[i]
		})
		if err != nil {
			t.Fatalf("no ack for event %d (%s): %v", i, ids[i], err)
		}
		a, e := parseAck(env)
		if e != nil {
			t.Fatalf("event %d: ack is an error: %s", i, env.Raw)
		}
		if env.Type != "command_response" || env.From != client.ServerFrom || env.Room != room || env.Channel != ch {
			t.Errorf("event %d: malformed ack: %s", i, env.Raw)
		}
		if !a.Routed || a.Delivered != 1 || a.Position == "" || a.Persisted != syncMode {
			t.Errorf("event %d: ack result %+v, want routed, delivered 1, a position, persisted=%v: %s", i, a, syncMode, env.Raw)
		}
		ackPos[i] = a.Position
	}

	// Deliveries: in order, as sent plus metadata.position and received_at.
	delivered := make([]client.Envelope, n)
	pos := make([]string, n)
	for i := 0; i < n; i++ {
		env, err := sub.Expect(ctx, func(e client.Envelope) bool { return e.Type == "event" })
		if err != nil {
			t.Fatalf("event %d not delivered: %v", i, err)
		}
		delivered[i] = env
		if env.ID != ids[i] {
			t.Fatalf("delivery %d is %s, want %s (order)", i, env.ID, ids[i])
		}
		if !jsonEqualIgnoringMetadata(sentRaw[i], env.Raw) {
			t.Errorf("event %d changed in routing:\nsent %s\ngot  %s", i, sentRaw[i], env.Raw)
		}
		m := metaOf(env)
		if _, ok := parsePosition(m.Position); !ok {
			t.Errorf("event %d: metadata.position %q is not <ms>-<seq>: %s", i, m.Position, env.Raw)
		}
		if _, err := time.Parse(time.RFC3339Nano, m.ReceivedAt); err != nil {
			t.Errorf("event %d: metadata.received_at %q is not RFC 3339: %s", i, m.ReceivedAt, env.Raw)
		}
		var meta map[string]any
		_ = json.Unmarshal(env.Metadata, &meta)
		if meta["ack"] != true || meta["tag"] != "x" || meta["n"] != float64(i) {
			t.Errorf("event %d: sender's metadata not kept: %s", i, env.Metadata)
		}
		if m.Position != ackPos[i] {
			t.Errorf("event %d: delivered at position %s, ack said %s", i, m.Position, ackPos[i])
		}
		pos[i] = m.Position
		if i > 0 && !posLess(pos[i-1], pos[i]) {
			t.Errorf("positions not strictly increasing: %s then %s", pos[i-1], pos[i])
		}
	}
	if t.Failed() {
		return
	}

	// want checks a history answer against delivered[from:to].
	want := func(what string, h histResult, from, to int) {
		t.Helper()
		if len(h.Entries) != to-from {
			got := make([]string, len(h.Entries))
			for i, e := range h.Entries {
				got[i] = e.Position
			}
			t.Errorf("history %s: %d entries %v, want events %d..%d %v", what, len(h.Entries), got, from, to-1, pos[from:to])
			return
		}
		for i, e := range h.Entries {
			d := delivered[from+i]
			if e.Position != pos[from+i] {
				t.Errorf("history %s: entry %d at %s, want %s", what, i, e.Position, pos[from+i])
			}
			if !jsonEqual(e.Envelope, d.Raw) {
				t.Errorf("history %s: entry %d is not the envelope as delivered:\nhistory   %s\ndelivered %s", what, i, e.Envelope, d.Raw)
			}
		}
	}
	want("default", history(t, sub, room, ch, nil), 0, n)
	want("limit 5 (newest)", history(t, sub, room, ch, map[string]any{"limit": 5}), n-5, n)
	want("since pos[4]", history(t, sub, room, ch, map[string]any{"since": pos[4]}), 5, n)
	want("since pos[4] limit 3", history(t, sub, room, ch, map[string]any{"since": pos[4], "limit": 3}), 5, 8)
	want("until pos[9]", history(t, sub, room, ch, map[string]any{"until": pos[9]}), 0, 10)
	want("until pos[9] limit 3", history(t, sub, room, ch, map[string]any{"until": pos[9], "limit": 3}), 7, 10)
	want("since pos[4] until pos[9]", history(t, sub, room, ch, map[string]any{"since": pos[4], "until": pos[9]}), 5, 10)
	want("since last", history(t, sub, room, ch, map[string]any{"since": pos[n-1]}), n, n)
	// The pub connection, a member too, sees the same; room:channel in "room".
	want("room:channel form", history(t, pub, room, ch, map[string]any{"room": room + ":" + ch}), 0, n)

	first, _ := time.Parse(time.RFC3339Nano, metaOf(delivered[0]).ReceivedAt)
	before := first.Add(-time.Hour).UTC().Format(time.RFC3339)
	after := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	want("since time before all", history(t, sub, room, ch, map[string]any{"since": before}), 0, n)
	want("until time after all", history(t, sub, room, ch, map[string]any{"until": after}), 0, n)
	want("until time before all", history(t, sub, room, ch, map[string]any{"until": before}), 0, 0)
	want("since time after all", history(t, sub, room, ch, map[string]any{"since": after}), n, n)

	cmdErr(t, sub, room, ch, "history", map[string]any{"limit": 0}, "VALIDATION_ERROR", "")
	cmdErr(t, sub, room, ch, "history", map[string]any{"since": "yesterday-ish"}, "VALIDATION_ERROR", "payload.parameters.since")
	cmdErr(t, sub, room, ch, "history", map[string]any{"until": "not a time"}, "VALIDATION_ERROR", "payload.parameters.until")

	if r == nil {
		return
	}
	// The stream itself: one entry per event, the stream id its position,
	// field e the envelope as routed. Async writes may still be on their way.
	key := streamKey(room, ch)
	var es []streamEntry
	deadline := time.Now().Add(5 * time.Second)
	for {
		es = xrange(t, r, key)
		if len(es) >= n || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if len(es) != n {
		t.Fatalf("stream %s has %d entries, want %d", key, len(es), n)
	}
	for i, e := range es {
		if e.ID != pos[i] {
			t.Errorf("stream entry %d has id %s, want position %s", i, e.ID, pos[i])
		}
		if !jsonEqual(e.E, delivered[i].Raw) {
			t.Errorf("stream entry %d is not the envelope as delivered:\nstream    %s\ndelivered %s", i, e.E, delivered[i].Raw)
		}
	}
}

// TestJoinSinceSeam: a subscriber reads part of a steady ~500/s stream,
// disconnects, stays away ~300 ms, reconnects and joins with since = the last
// position it saw. What it got before and after must be exactly the published
// sequence: no gap, no duplicate, in order.
func TestJoinSinceSeam(t *testing.T) {
	t.Run("memory", func(t *testing.T) {
		s := startServer(t)
		joinSinceSeam(t, s)
	})
	t.Run("redis", func(t *testing.T) {
		r := redistest.Run(t)
		s := startServer(t, redisEnv(r)...)
		joinSinceSeam(t, s)
	})
}

func joinSinceSeam(t *testing.T, s *server) {
	ctx := testCtx(t, 20*time.Second)
	room, ch := "seam", uniqueName("ch")
	subID := uniqueName("sub")
	sub1 := dial(t, s, client.WithClientID(subID))
	pub := dial(t, s, client.WithClientID(uniqueName("pub")))
	for _, c := range []*client.Conn{sub1, pub} {
		if err := c.Join(ctx, room, ch); err != nil {
			t.Fatalf("join: %v", err)
		}
	}

	const (
		total    = 750 // 1.5 s at 500/s
		interval = 2 * time.Millisecond
		readBy1  = 150
	)
	pubErr := make(chan error, 1)
	pubDone := make(chan struct{})
	go func() {
		defer close(pubDone)
		start := time.Now()
		for i := 0; i < total; i++ {
			if d := time.Until(start.Add(time.Duration(i) * interval)); d > 0 {
				time.Sleep(d)
			}
			if err := pub.Send(seqEvent(room, ch, "p", i, nil)); err != nil {
				pubErr <- fmt.Errorf("publish %d: %w", i, err)
				return
			}
		}
	}()

	type got struct {
		n   int
		pos string
	}
	var seq []got
	for len(seq) < readBy1 {
		env, err := nextReal(ctx, sub1)
		if err != nil {
			t.Fatalf("first connection: %v after %d events", err, len(seq))
		}
		if env.Type != "event" {
			t.Fatalf("first connection got %s", env.Raw)
		}
		seq = append(seq, got{seqOf(env), metaOf(env).Position})
	}
	since := seq[len(seq)-1].pos
	sub1.Close()
	time.Sleep(300 * time.Millisecond)

	var sub2 *client.Conn
	for attempt := 0; ; attempt++ {
		dctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		c, err := client.Dial(dctx, s.URL, client.WithClientID(subID))
		cancel()
		if err == nil {
			sub2 = c
			t.Cleanup(func() { c.Close() })
			break
		}
		if attempt == 20 {
			t.Fatalf("reconnect as %s: %v", subID, err)
		}
		time.Sleep(25 * time.Millisecond)
	}
	joinID, err := sendCommand(sub2, room, ch, "join_channel", map[string]any{"since": since})
	if err != nil {
		t.Fatal(err)
	}
	before1 := len(seq)
	respAt := -1 // events received on sub2 before the join's answer
	var replay struct {
		Replayed int    `json:"replayed"`
		Last     string `json:"last_position"`
		Complete bool   `json:"complete"`
	}
	for respAt < 0 || seq[len(seq)-1].n < total-1 {
		env, err := nextReal(ctx, sub2)
		if err != nil {
			last := -1
			if len(seq) > 0 {
				last = seq[len(seq)-1].n
			}
			t.Fatalf("after rejoin: %v (join answered: %v, last n %d of %d)", err, respAt >= 0, last, total-1)
		}
		switch {
		case env.Type == "event":
			seq = append(seq, got{seqOf(env), metaOf(env).Position})
		case env.RequestID() == joinID:
			if e := client.AsError(env); e != nil {
				t.Fatalf("join_channel since %s: %s", since, env.Raw)
			}
			var p struct {
				Result struct {
					Replay json.RawMessage `json:"replay"`
				} `json:"result"`
			}
			_ = json.Unmarshal(env.Payload, &p)
			if err := json.Unmarshal(p.Result.Replay, &replay); err != nil || len(p.Result.Replay) == 0 {
				t.Errorf("join_channel since: result has no replay object: %s", env.Raw)
			}
			respAt = len(seq) - before1
		default:
			t.Fatalf("after rejoin, unexpected %s", env.Raw)
		}
	}
	<-pubDone
	select {
	case err := <-pubErr:
		t.Fatal(err)
	default:
	}

	// The union must be 0..total-1 exactly, positions strictly increasing.
	bad := 0
	for i, g := range seq {
		if g.n != i && bad < 10 {
			bad++
			t.Errorf("received sequence at %d is n=%d (want %d); seam after n=%d (%s)", i, g.n, i, readBy1-1, since)
		}
		if i > 0 && !posLess(seq[i-1].pos, g.pos) && bad < 10 {
			bad++
			t.Errorf("position %s after %s at %d", g.pos, seq[i-1].pos, i)
		}
	}
	if len(seq) != total {
		t.Errorf("received %d events in all, want %d", len(seq), total)
	}

	if !replay.Complete {
		t.Errorf("replay %+v: complete=false within one bus lifetime", replay)
	}
	if replay.Replayed < 1 {
		t.Errorf("replay %+v: nothing replayed after a %v absence at 500/s", replay, 300*time.Millisecond)
	}
	// The replayed events are the first `replayed` after the seam.
	if k := before1 + replay.Replayed - 1; replay.Replayed > 0 && k < len(seq) && seq[k].pos != replay.Last {
		t.Errorf("replay %+v: last_position is not the position of the %d-th event after since (%s)", replay, replay.Replayed, seq[k].pos)
	}
	t.Logf("seam: %d events before, replayed %d (join answer after %d of them), %d in all", before1, replay.Replayed, respAt, len(seq))
}
