package e2e

// Persistence on Redis (issue 4): history and created channels survive a bus
// restart; Redis SIGKILLed and restarted under load loses nothing that was
// acked and never pauses live delivery; Redis absent at start, then started:
// the bus catches up.

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/arqonbus/arqonbus/client"
	"github.com/arqonbus/arqonbus/internal/redistest"
)

// TestRedisBusRestartKeepsHistory: events published (async acks) and a
// channel created before a SIGTERM are there for the next bus on the same
// Redis.
func TestRedisBusRestartKeepsHistory(t *testing.T) {
	r := redistest.Run(t)
	env := redisEnv(r, "ARQONBUS_ADMIN_TOKEN=secret")
	s1 := startServer(t, env...)
	ctx := testCtx(t, 20*time.Second)

	room, ch := "keep", uniqueName("ch")
	made := uniqueName("made")
	admin := dial(t, s1, client.WithClientID(uniqueName("admin")), client.WithParam("admin_token", "secret"))
	cmdOK(t, admin, room, made, "create_channel", nil)

	pub := dial(t, s1, client.WithClientID(uniqueName("pub")))
	if err := pub.Join(ctx, room, ch); err != nil {
		t.Fatal(err)
	}
	const n = 10
	ids := make([]string, n)
	for i := range ids {
		e := seqEvent(room, ch, "p", i, map[string]any{"ack": true})
		ids[i] = e.ID
		if err := pub.Send(e); err != nil {
			t.Fatal(err)
		}
	}
	pos := make([]string, n)
	for i := range ids {
		env, err := pub.Expect(ctx, func(e client.Envelope) bool { return e.RequestID() == ids[i] })
		if err != nil {
			t.Fatalf("ack %d: %v", i, err)
		}
		a, e := parseAck(env)
		if e != nil || a.Position == "" {
			t.Fatalf("ack %d: %s", i, env.Raw)
		}
		pos[i] = a.Position
	}
	// Stop right away: shutdown must flush what is still queued.
	s1.stop()
	if s1.Alive() {
		t.Fatal("bus did not stop")
	}

	s2 := startServer(t, env...)
	c := dial(t, s2, client.WithClientID(uniqueName("reader")))
	h := history(t, c, room, ch, nil)
	if len(h.Entries) != n {
		t.Fatalf("after restart, history has %d entries, want %d: %+v", len(h.Entries), n, h)
	}
	for i, e := range h.Entries {
		var env client.Envelope
		_ = json.Unmarshal(e.Envelope, &env)
		if e.Position != pos[i] || env.ID != ids[i] || seqOf(env) != i {
			t.Errorf("after restart, entry %d is %s %s n=%d, want %s %s n=%d", i, e.Position, env.ID, seqOf(env), pos[i], ids[i], i)
		}
	}
	// Positions go on increasing after the restart.
	if err := c.Join(ctx, room, ch); err != nil {
		t.Fatal(err)
	}
	e := seqEvent(room, ch, "p", n, map[string]any{"ack": true})
	if err := c.Send(e); err != nil {
		t.Fatal(err)
	}
	ack, err := c.Expect(ctx, func(x client.Envelope) bool { return x.RequestID() == e.ID })
	if err != nil {
		t.Fatal(err)
	}
	if a, ae := parseAck(ack); ae != nil || !posLess(pos[n-1], a.Position) {
		t.Errorf("first event after restart at %q, not after the last stored position %s: %s", a.Position, pos[n-1], ack.Raw)
	}

	// join since a position from before the restart: the bus loads each
	// stream's newest history at start, so the replay may be complete; if
	// it says so, it must be exactly events 4..n-1 and the new one. If it
	// says incomplete, what it sends must still be a tail, in order.
	late := dial(t, s2, client.WithClientID(uniqueName("late")))
	jr := cmdOK(t, late, room, ch, "join_channel", map[string]any{"since": pos[3]})
	rp := jr.obj("replay")
	complete, ok1 := rp.boolean("complete")
	replayed, ok2 := rp.num("replayed")
	if !ok1 || !ok2 {
		raw, _ := json.Marshal(jr)
		t.Fatalf("join since after restart: no replay result: %s", raw)
	}
	wantIDs := append(append([]string{}, ids[4:]...), e.ID)
	var gotIDs []string
	for len(gotIDs) < int(replayed) {
		env, err := nextReal(ctx, late)
		if err != nil {
			t.Fatalf("replay after restart: %d of %v events: %v", len(gotIDs), replayed, err)
		}
		gotIDs = append(gotIDs, env.ID)
	}
	tail := wantIDs[max(0, len(wantIDs)-len(gotIDs)):]
	if complete && fmt.Sprint(gotIDs) != fmt.Sprint(wantIDs) || !complete && fmt.Sprint(gotIDs) != fmt.Sprint(tail) {
		t.Errorf("join since %s after a bus restart (complete=%v): replayed %v, want %v", pos[3], complete, gotIDs, wantIDs)
	}
	if rp.str("last_position") == "" {
		t.Errorf("join since after restart: replay without last_position")
	}
	t.Logf("join since after restart: replayed %v, complete %v", replayed, complete)

	// The created channel exists again: list_channels has it, channel_info
	// answers, and create_channel says CONFLICT.
	lc := cmdOK(t, c, room, made, "list_channels", map[string]any{"room": room})
	found := false
	for _, x := range lc.list("channels") {
		if x.str("channel") == made || x.str("name") == made || x.str("name") == room+":"+made {
			found = true
		}
	}
	if !found {
		raw, _ := json.Marshal(lc)
		t.Errorf("after restart, list_channels %s lacks the created channel %s: %s", room, made, raw)
	}
	cmdOK(t, c, room, made, "channel_info", nil)
	admin2 := dial(t, s2, client.WithClientID(uniqueName("admin")), client.WithParam("admin_token", "secret"))
	cmdErr(t, admin2, room, made, "create_channel", nil, "CONFLICT", "")
}

// ackOutcome is what a publisher was told about one event.
type ackOutcome struct {
	sent time.Time
	got  time.Time // when the answer came
	pub  string
	n    int
	id   string
	pos  string // from a success ack
	ok   bool   // success ack with persisted:true
	code string // error code, if refused
}

// TestRedisKilledUnderLoad: two publishers send sync-acked events at 200/s in
// all; Redis (append-only, fsync always) is SIGKILLed and restarted. Every
// event acked as persisted is in the stream exactly once and in order; a
// subscriber's live delivery never pauses; status says degraded during the
// outage and ok after.
func TestRedisKilledUnderLoad(t *testing.T) {
	r := redistest.Run(t, "--appendonly", "yes", "--appendfsync", "always")
	// History larger than the run: the stream is not trimmed under the test.
	s := startServer(t, redisEnv(r, "ARQONBUS_PERSIST=sync", "ARQONBUS_HISTORY_SIZE=5000")...)
	ctx := testCtx(t, 40*time.Second)
	room, ch := "outage", uniqueName("ch")

	sub := dial(t, s, client.WithClientID(uniqueName("sub")))
	if err := sub.Join(ctx, room, ch); err != nil {
		t.Fatal(err)
	}
	mon := dial(t, s, client.WithClientID(uniqueName("mon")))

	const (
		pubs    = 2
		perPub  = 100 // per publisher per second
		runFor  = 3 * time.Second
		killAt  = 700 * time.Millisecond
		downFor = 1000 * time.Millisecond
		// Delivery must not wait for Redis to come back (downFor). Quiet runs pause ~100 ms at the
		// kill; the race-built server sharing two cores with the whole suite once paused 427 ms.
		maxPause = 700 * time.Millisecond
	)
	perPubTotal := int(runFor.Seconds() * perPub)

	// Subscriber: arrival times of every event.
	type arrival struct {
		at  time.Time
		pub string
		n   int
	}
	var arrivals []arrival
	subDone := make(chan error, 1)
	go func() {
		sctx, cancel := context.WithTimeout(ctx, runFor+10*time.Second)
		defer cancel()
		for len(arrivals) < pubs*perPubTotal {
			env, err := nextReal(sctx, sub)
			if err != nil {
				subDone <- fmt.Errorf("subscriber: %v after %d events", err, len(arrivals))
				return
			}
			var p struct {
				Pub string `json:"pub"`
			}
			_ = json.Unmarshal(env.Payload, &p)
			arrivals = append(arrivals, arrival{time.Now(), p.Pub, seqOf(env)})
		}
		subDone <- nil
	}()

	// Publishers: one connection each, a sender and an ack reader.
	outcomes := make([][]ackOutcome, pubs)
	var wg sync.WaitGroup
	start := time.Now()
	for p := 0; p < pubs; p++ {
		name := fmt.Sprintf("p%d", p)
		c := dial(t, s, client.WithClientID(uniqueName("pub")))
		if err := c.Join(ctx, room, ch); err != nil {
			t.Fatal(err)
		}
		outs := make([]ackOutcome, perPubTotal)
		outcomes[p] = outs
		byID := make(map[string]int, perPubTotal)
		var mu sync.Mutex
		wg.Add(2)
		go func() {
			defer wg.Done()
			interval := time.Second / perPub
			for i := 0; i < perPubTotal; i++ {
				if d := time.Until(start.Add(time.Duration(i) * interval)); d > 0 {
					time.Sleep(d)
				}
				e := seqEvent(room, ch, name, i, map[string]any{"ack": true})
				mu.Lock()
				outs[i] = ackOutcome{sent: time.Now(), pub: name, n: i, id: e.ID}
				byID[e.ID] = i
				mu.Unlock()
				if err := c.Send(e); err != nil {
					t.Errorf("%s publish %d: %v", name, i, err)
					return
				}
			}
		}()
		go func() {
			defer wg.Done()
			actx, cancel := context.WithTimeout(ctx, runFor+15*time.Second)
			defer cancel()
			for got := 0; got < perPubTotal; got++ {
				env, err := nextReal(actx, c)
				if err != nil {
					t.Errorf("%s: %d of %d events answered: %v", name, got, perPubTotal, err)
					return
				}
				if env.Type == "event" {
					got-- // the other publisher's events: both are members
					continue
				}
				mu.Lock()
				i, ok := byID[env.RequestID()]
				mu.Unlock()
				if !ok {
					t.Errorf("%s: unexpected %s", name, env.Raw)
					got--
					continue
				}
				a, e := parseAck(env)
				mu.Lock()
				outs[i].got = time.Now()
				if e != nil {
					outs[i].code = e.Code
					if e.Code != "UNAVAILABLE" {
						t.Errorf("%s event %d: refused with %s: %s", name, i, e.Code, env.Raw)
					}
				} else {
					outs[i].pos, outs[i].ok = a.Position, a.Routed && a.Persisted
					if !outs[i].ok {
						t.Errorf("%s event %d: sync ack without persisted:true: %s", name, i, env.Raw)
					}
				}
				mu.Unlock()
			}
		}()
	}

	// Status monitor and the outage itself.
	type sample struct {
		at time.Time
		st storageStatus
	}
	var samples []sample
	monDone := make(chan struct{})
	stopMon := make(chan struct{})
	go func() {
		defer close(monDone)
		for {
			select {
			case <-stopMon:
				return
			default:
			}
			if st, ok := getStorage(mon, time.Second); ok {
				samples = append(samples, sample{time.Now(), st})
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	time.Sleep(time.Until(start.Add(killAt)))
	r.Kill()
	killedAt := time.Now()
	// History reads fall back to memory meanwhile: they answer, and hold
	// what was routed during the outage.
	time.Sleep(downFor / 2)
	reader := dial(t, s, client.WithClientID(uniqueName("reader")))
	h := history(t, reader, room, ch, map[string]any{"limit": 1000})
	if n := len(h.Entries); n == 0 {
		t.Errorf("history during the outage is empty")
	} else {
		var env client.Envelope
		_ = json.Unmarshal(h.Entries[n-1].Envelope, &env)
		if m := metaOf(env); !posLess(fmt.Sprintf("%d-0", killedAt.UnixMilli()), m.Position) {
			t.Errorf("history during the outage ends at %s, before the kill (%d ms): not served from memory", m.Position, killedAt.UnixMilli())
		}
	}
	time.Sleep(time.Until(killedAt.Add(downFor)))
	startingAt := time.Now()
	r.Start()
	restartedAt := time.Now()

	wg.Wait()
	if err := <-subDone; err != nil {
		t.Error(err)
	}
	close(stopMon)
	<-monDone
	// Everything written: backlog 0 and ok.
	final := waitStorage(t, mon, 15*time.Second, "ok with an empty backlog", func(st storageStatus) bool {
		return st.Health == "ok" && st.Backlog == 0
	})
	t.Logf("outage %v..%v; final storage %+v", killedAt.Sub(start), restartedAt.Sub(start), final)

	// status during the outage.
	sawDegraded, sawBacklog := false, 0
	var degradedAfterRestart time.Duration
	for _, sm := range samples {
		if sm.at.After(killedAt) && sm.at.Before(restartedAt) && sm.st.Health == "degraded" {
			sawDegraded = true
			sawBacklog = max(sawBacklog, sm.st.Backlog)
		}
		if sm.st.Health == "degraded" && sm.at.After(restartedAt) {
			degradedAfterRestart = sm.at.Sub(restartedAt)
		}
	}
	if !sawDegraded {
		t.Errorf("status never said degraded while Redis was down (%d samples)", len(samples))
	} else if sawBacklog == 0 {
		t.Errorf("status said degraded but never with a backlog while Redis was down")
	}
	t.Logf("max backlog during outage %d; degraded until %v after the restart", sawBacklog, degradedAfterRestart)

	// Live delivery never paused: max gap between consecutive arrivals.
	if len(arrivals) != pubs*perPubTotal {
		t.Errorf("subscriber got %d events, want %d", len(arrivals), pubs*perPubTotal)
	}
	var maxGap time.Duration
	var gapAt time.Time
	last := map[string]int{}
	for i, a := range arrivals {
		if i > 0 {
			if g := a.at.Sub(arrivals[i-1].at); g > maxGap {
				maxGap, gapAt = g, a.at
			}
		}
		if prev, ok := last[a.pub]; ok && a.n != prev+1 {
			t.Errorf("subscriber: %s n=%d after n=%d", a.pub, a.n, prev)
		}
		last[a.pub] = a.n
	}
	t.Logf("max delivery gap %v (at %v into the run)", maxGap, gapAt.Sub(start))
	if maxGap > maxPause {
		t.Errorf("live delivery paused for %v (at %v; Redis killed at %v, back at %v)", maxGap, gapAt.Sub(start), killedAt.Sub(start), restartedAt.Sub(start))
	}

	// The stream: every persisted ack exactly once, at its position, in order.
	es := xrange(t, r, streamKey(room, ch))
	count := map[string]int{}
	at := map[string]string{}
	for i, e := range es {
		count[e.Env.ID]++
		at[e.Env.ID] = e.ID
		if i > 0 && !posLess(es[i-1].ID, e.ID) {
			t.Errorf("stream ids not increasing: %s then %s", es[i-1].ID, e.ID)
		}
		if m := metaOf(e.Env); m.Position != e.ID {
			t.Errorf("stream entry %s holds an envelope at position %q", e.ID, m.Position)
		}
	}
	acked, refused, dup, lost := 0, 0, 0, 0
	for _, outs := range outcomes {
		prevPos := ""
		for _, o := range outs {
			if o.code != "" {
				refused++
			}
			if count[o.id] > 1 {
				dup++
				if dup <= 5 {
					t.Errorf("%s event %d (%s) is %d times in the stream", o.pub, o.n, o.id, count[o.id])
				}
			}
			if !o.ok {
				continue
			}
			acked++
			// Redis cannot hold what was sent while it was dead: no
			// success ack for such an event before it was started again.
			if o.sent.After(killedAt) && o.got.Before(startingAt) {
				t.Errorf("%s event %d sent %v after the kill was acked as persisted %v before Redis was started again",
					o.pub, o.n, o.sent.Sub(killedAt), startingAt.Sub(o.got))
			}
			if count[o.id] == 0 {
				lost++
				if lost <= 5 {
					t.Errorf("%s event %d (%s) was acked as persisted at %s but is not in the stream", o.pub, o.n, o.id, o.pos)
				}
				continue
			}
			if at[o.id] != o.pos {
				t.Errorf("%s event %d acked at %s but stored at %s", o.pub, o.n, o.pos, at[o.id])
			}
			if prevPos != "" && !posLess(prevPos, o.pos) {
				t.Errorf("%s event %d acked at %s, not after the previous ack %s", o.pub, o.n, o.pos, prevPos)
			}
			prevPos = o.pos
		}
	}
	// Per publisher, the stream holds its events in publish order.
	for p := 0; p < pubs; p++ {
		name := fmt.Sprintf("p%d", p)
		var ns []int
		for _, e := range es {
			var pl struct {
				Pub string `json:"pub"`
			}
			_ = json.Unmarshal(e.Env.Payload, &pl)
			if pl.Pub == name {
				ns = append(ns, seqOf(e.Env))
			}
		}
		if !sort.IntsAreSorted(ns) {
			t.Errorf("stream holds %s's events out of order", name)
		}
	}
	t.Logf("%d events, %d acked persisted, %d refused UNAVAILABLE, %d in the stream, %d duplicated, %d acked but lost",
		pubs*perPubTotal, acked, refused, len(es), dup, lost)
	if acked == 0 {
		t.Errorf("no event was acked as persisted")
	}
}

// TestRedisAbsentAtStart: the bus starts without Redis, routes, reports
// degraded with a backlog, serves history from memory, and writes the
// backlog in order once Redis starts.
func TestRedisAbsentAtStart(t *testing.T) {
	r := redistest.New(t) // port reserved, not running
	s := startServer(t, redisEnv(r)...)
	ctx := testCtx(t, 30*time.Second)
	room, ch := "absent", uniqueName("ch")

	pub := dial(t, s, client.WithClientID(uniqueName("pub")))
	sub := dial(t, s, client.WithClientID(uniqueName("sub")))
	for _, c := range []*client.Conn{pub, sub} {
		if err := c.Join(ctx, room, ch); err != nil {
			t.Fatal(err)
		}
	}
	st, ok := getStorage(pub, 3*time.Second)
	if !ok || st.Mode != "redis" || st.Health != "degraded" {
		t.Errorf("status.storage without Redis = %+v (answered %v), want mode redis, health degraded", st, ok)
	}

	const n = 50
	publish := func(from, to int) []string {
		var pos []string
		for i := from; i < to; i++ {
			e := seqEvent(room, ch, "p", i, map[string]any{"ack": true})
			if err := pub.Send(e); err != nil {
				t.Fatal(err)
			}
			ack, err := pub.Expect(ctx, func(x client.Envelope) bool { return x.RequestID() == e.ID })
			if err != nil {
				t.Fatalf("ack %d: %v", i, err)
			}
			a, ae := parseAck(ack)
			if ae != nil || !a.Routed || a.Delivered != 1 {
				t.Fatalf("event %d: %s", i, ack.Raw)
			}
			got, err := sub.Expect(ctx, func(x client.Envelope) bool { return x.Type == "event" })
			if err != nil || got.ID != e.ID || metaOf(got).Position != a.Position {
				t.Fatalf("event %d: delivered %s (%v), want %s at %s", i, got.Raw, err, e.ID, a.Position)
			}
			pos = append(pos, a.Position)
		}
		return pos
	}
	pos := publish(0, n)

	st = waitStorage(t, pub, 3*time.Second, "degraded with the backlog", func(st storageStatus) bool {
		return st.Health == "degraded" && st.Backlog >= n
	})
	if st.Backlog != n {
		t.Errorf("backlog %d after %d events published without Redis, want %d", st.Backlog, n, n)
	}
	// History falls back to memory meanwhile.
	if h := history(t, sub, room, ch, nil); len(h.Entries) != n {
		t.Errorf("history while degraded: %d entries, want %d", len(h.Entries), n)
	}

	r.Start()
	redisAt := time.Now()
	st = waitStorage(t, pub, 10*time.Second, "ok with an empty backlog", func(st storageStatus) bool {
		return st.Health == "ok" && st.Backlog == 0
	})
	t.Logf("caught up %v after Redis started: %+v", time.Since(redisAt), st)
	pos = append(pos, publish(n, n+10)...)

	want := n + 10
	var es []streamEntry
	deadline := time.Now().Add(5 * time.Second)
	for {
		es = xrange(t, r, streamKey(room, ch))
		if len(es) >= want || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if len(es) != want {
		t.Fatalf("stream has %d entries, want %d", len(es), want)
	}
	for i, e := range es {
		if e.ID != pos[i] || seqOf(e.Env) != i {
			t.Errorf("stream entry %d: id %s n=%d, want %s n=%d", i, e.ID, seqOf(e.Env), pos[i], i)
		}
	}
	// And history now reads Redis: the same.
	h := history(t, sub, room, ch, map[string]any{"limit": 1000})
	if len(h.Entries) != want {
		t.Errorf("history after catch-up: %d entries, want %d", len(h.Entries), want)
	}
	for i, e := range h.Entries {
		if i < len(pos) && e.Position != pos[i] {
			t.Errorf("history after catch-up: entry %d at %s, want %s", i, e.Position, pos[i])
		}
	}
}

// TestRedisSyncBufferOverflow: Redis absent, sync acks, a tiny persist
// buffer. Every acked event gets exactly one answer: UNAVAILABLE for the
// writes dropped from the buffer (the oldest), a persisted ack once Redis
// is there for the rest, and those, only those, are in the stream.
func TestRedisSyncBufferOverflow(t *testing.T) {
	r := redistest.New(t)
	s := startServer(t, redisEnv(r, "ARQONBUS_PERSIST=sync", "ARQONBUS_PERSIST_BUFFER=8")...)
	ctx := testCtx(t, 20*time.Second)
	room, ch := "overflow", uniqueName("ch")
	pub := dial(t, s, client.WithClientID(uniqueName("pub")))
	if err := pub.Join(ctx, room, ch); err != nil {
		t.Fatal(err)
	}
	const n = 30
	ids := make([]string, n)
	idx := map[string]int{}
	for i := range ids {
		e := seqEvent(room, ch, "p", i, map[string]any{"ack": true})
		ids[i], idx[e.ID] = e.ID, i
		if err := pub.Send(e); err != nil {
			t.Fatal(err)
		}
	}
	answers := make([]client.Envelope, n)
	got := 0
	collect := func(d time.Duration) {
		cctx, cancel := context.WithTimeout(ctx, d)
		defer cancel()
		for got < n {
			env, err := nextReal(cctx, pub)
			if err != nil {
				return
			}
			i, ok := idx[env.RequestID()]
			if !ok {
				t.Errorf("unexpected %s", env.Raw)
				continue
			}
			if answers[i].Raw != nil {
				t.Errorf("event %d answered twice: %s then %s", i, answers[i].Raw, env.Raw)
				continue
			}
			answers[i] = env
			got++
		}
	}
	collect(500 * time.Millisecond)
	early := got
	for i, a := range answers {
		if a.Raw != nil && client.AsError(a) == nil {
			t.Errorf("event %d acked while Redis has never run: %s", i, a.Raw)
		}
	}
	st, _ := getStorage(pub, 2*time.Second)
	t.Logf("without Redis: %d of %d answered (all refusals), storage %+v", early, n, st)

	r.Start()
	collect(10 * time.Second)
	if got != n {
		t.Errorf("%d of %d sync-acked events answered", got, n)
	}
	var acked, refused []int
	for i, a := range answers {
		if a.Raw == nil {
			continue
		}
		if e := client.AsError(a); e != nil {
			if e.Code != "UNAVAILABLE" {
				t.Errorf("event %d refused with %s, want UNAVAILABLE: %s", i, e.Code, a.Raw)
			}
			refused = append(refused, i)
		} else if res, _ := parseAck(a); !res.Persisted {
			t.Errorf("event %d: sync ack without persisted:true: %s", i, a.Raw)
		} else {
			acked = append(acked, i)
		}
	}
	if len(refused) > 0 && len(acked) > 0 && refused[len(refused)-1] > acked[0] {
		t.Errorf("dropped writes are not the oldest: refused %v, acked %v", refused, acked)
	}
	st = waitStorage(t, pub, 10*time.Second, "ok with an empty backlog", func(st storageStatus) bool {
		return st.Health == "ok" && st.Backlog == 0
	})
	if int(st.Dropped) != len(refused) {
		t.Errorf("status.storage.dropped %d, but %d events were refused", st.Dropped, len(refused))
	}
	es := xrange(t, r, streamKey(room, ch))
	var inStream []int
	for _, e := range es {
		inStream = append(inStream, seqOf(e.Env))
	}
	if fmt.Sprint(inStream) != fmt.Sprint(acked) {
		t.Errorf("stream holds n=%v, acked as persisted n=%v", inStream, acked)
	}
	t.Logf("refused %v, acked %v, storage %+v", refused, acked, st)
}
