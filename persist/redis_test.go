package persist

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/arqonbus/arqonbus/internal/redistest"
)

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func newTestStore(t testing.TB, o RedisOptions) *Redis {
	t.Helper()
	if o.Logger == nil {
		o.Logger = quietLogger()
	}
	s, err := NewRedis(testCtx(t), o)
	if err != nil {
		t.Fatalf("NewRedis: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		s.Close(ctx)
	})
	return s
}

// ack identifies an entry across channels.
type ack struct {
	channel string
	pos     Position
}

// acks records done callbacks per entry.
type acks struct {
	mu     sync.Mutex
	ok     map[ack]int
	failed map[ack]error
	calls  atomic.Int64
}

func newAcks() *acks { return &acks{ok: map[ack]int{}, failed: map[ack]error{}} }

func (a *acks) done(p ack) func(error) {
	return func(err error) {
		a.mu.Lock()
		if err == nil {
			a.ok[p]++
		} else {
			a.failed[p] = err
		}
		a.mu.Unlock()
		a.calls.Add(1)
	}
}

// check fails unless every position got exactly one done call, returning those acked with nil.
func (a *acks) check(t *testing.T, all []ack) (okCount, failCount int) {
	t.Helper()
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, p := range all {
		n, ok := a.ok[p]
		_, failed := a.failed[p]
		switch {
		case ok && failed, n > 1:
			t.Errorf("%v: done called more than once", p)
		case !ok && !failed:
			t.Errorf("%v: done never called", p)
		case ok:
			okCount++
		default:
			failCount++
		}
	}
	return okCount, failCount
}

type published struct {
	channel string
	clock   Clock
	pos     []Position
}

func (p *published) append(s Store, a *acks) Position {
	pos := p.clock.Next(time.Now())
	p.pos = append(p.pos, pos)
	s.Append(p.channel, Entry{Position: pos, Data: fmt.Appendf(nil, `{"n":"%s"}`, pos)}, a.done(ack{p.channel, pos}))
	return pos
}

// acks lists p's entries.
func (p *published) acks() []ack {
	out := make([]ack, len(p.pos))
	for i, pos := range p.pos {
		out[i] = ack{p.channel, pos}
	}
	return out
}

func posStrings(ps []Position) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.String()
	}
	return out
}

func TestRedisRoundTrip(t *testing.T) {
	r := redistest.Run(t)
	ctx := testCtx(t)
	s := newTestStore(t, RedisOptions{URL: r.URL(), HistorySize: 1000})
	a := newAcks()
	chans := []*published{{channel: "lobby:chat"}, {channel: "lobby:news"}, {channel: "ops:alerts{x}"}}
	for i := range 600 {
		chans[i%3].append(s, a)
	}
	var all []ack
	for _, ch := range chans {
		all = append(all, ch.acks()...)
	}
	waitFor(t, 10*time.Second, "600 acks", func() bool { return a.calls.Load() == 600 })
	if ok, _ := a.check(t, all); ok != 600 {
		t.Fatalf("%d acked, want 600", ok)
	}
	c := r.Client()
	for _, ch := range chans {
		key := "arqonbus:{" + ch.channel + "}:stream"
		if got := positions(readStream(t, c, key)); !slices.Equal(got, posStrings(ch.pos)) {
			t.Fatalf("%s in redis = %v\nwant %v", key, got, posStrings(ch.pos))
		}
		p := ch.pos
		tests := []struct {
			name string
			q    Query
			want []Position
		}{
			{"all", Query{Limit: 1000}, p},
			{"newest default", Query{}, p[len(p)-50:]},
			{"newest 5", Query{Limit: 5}, p[len(p)-5:]},
			{"since exclusive", Query{Since: AtPosition(p[10]), Limit: 3}, p[11:14]},
			{"since until", Query{Since: AtPosition(p[10]), Until: AtPosition(p[20])}, p[11:21]},
			{"until newest", Query{Until: AtPosition(p[20]), Limit: 4}, p[17:21]},
			{"since time", Query{Since: AtTime(p[100].Time()), Limit: 1}, p[slices.IndexFunc(p, func(q Position) bool { return q.Ms == p[100].Ms }):][:1]},
			{"since last", Query{Since: AtPosition(p[len(p)-1])}, nil},
		}
		for _, tt := range tests {
			got, err := s.Range(ctx, ch.channel, tt.q)
			if err != nil {
				t.Fatalf("%s %s: %v", ch.channel, tt.name, err)
			}
			if !slices.Equal(positions(got), posStrings(tt.want)) {
				t.Errorf("%s %s: Range = %v\nwant %v", ch.channel, tt.name, positions(got), posStrings(tt.want))
			}
		}
		if last, ok, err := s.Last(ctx, ch.channel); err != nil || !ok || last != p[len(p)-1] {
			t.Errorf("Last(%s) = %v %v %v", ch.channel, last, ok, err)
		}
	}
	if got, err := s.Range(ctx, "nobody:here", Query{}); err != nil || len(got) != 0 {
		t.Errorf("Range of unknown channel = %v, %v", got, err)
	}
	h := s.Health()
	if h.Mode != ModeRedis || h.Status != StatusOK || h.Written != 600 || h.Backlog != 0 || h.Dropped != 0 {
		t.Errorf("Health = %+v", h)
	}
}

// MAXLEN ~ keeps at least HistorySize and at most about one stream node (100 entries) more.
func TestRedisTrimsToHistorySize(t *testing.T) {
	r := redistest.Run(t)
	ctx := testCtx(t)
	const size = 50
	s := newTestStore(t, RedisOptions{URL: r.URL(), HistorySize: size})
	a := newAcks()
	ch := &published{channel: "trim:me"}
	for range 1000 {
		ch.append(s, a)
	}
	waitFor(t, 10*time.Second, "acks", func() bool { return a.calls.Load() == 1000 })
	stream := readStream(t, r.Client(), "arqonbus:{trim:me}:stream")
	if n := len(stream); n < size || n > size+100 {
		t.Fatalf("stream holds %d entries; want %d..%d", n, size, size+100)
	}
	if got, want := positions(stream), posStrings(ch.pos[1000-len(stream):]); !slices.Equal(got, want) {
		t.Fatalf("stream is not the newest entries: %v", got)
	}
	got, err := s.Range(ctx, "trim:me", Query{Limit: 10})
	if err != nil || !slices.Equal(positions(got), posStrings(ch.pos[990:])) {
		t.Fatalf("Range newest = %v, %v", positions(got), err)
	}
}

func TestRedisRestartKeepsHistoryAndChannels(t *testing.T) {
	r := redistest.Run(t)
	ctx := testCtx(t)
	created := time.Date(2024, 5, 1, 12, 0, 0, 123456789, time.UTC)

	s1 := newTestStore(t, RedisOptions{URL: r.URL()})
	a := newAcks()
	chans := []*published{{channel: "audit:log"}, {channel: "audit:trail"}}
	for i := range 200 {
		chans[i%2].append(s1, a)
	}
	for _, name := range []string{"audit:log", "audit:trail", "temp:gone"} {
		s1.SaveChannel(name, created, nil)
	}
	s1.DeleteChannel("temp:gone", nil)
	if err := s1.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if a.calls.Load() != 200 {
		t.Fatalf("Close returned with %d of 200 writes settled", a.calls.Load())
	}

	s2 := newTestStore(t, RedisOptions{URL: r.URL()})
	got, err := s2.LoadChannels(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || !got["audit:log"].Equal(created) || !got["audit:trail"].Equal(created) {
		t.Fatalf("LoadChannels = %v", got)
	}
	for _, ch := range chans {
		last, ok, err := s2.Last(ctx, ch.channel)
		if err != nil || !ok || last != ch.pos[len(ch.pos)-1] {
			t.Fatalf("Last(%s) = %v %v %v; want %v", ch.channel, last, ok, err, ch.pos[len(ch.pos)-1])
		}
		es, err := s2.Range(ctx, ch.channel, Query{Limit: 1000})
		if err != nil || !slices.Equal(positions(es), posStrings(ch.pos)) {
			t.Fatalf("history of %s after restart = %v, %v", ch.channel, positions(es), err)
		}
		es, _ = s2.Range(ctx, ch.channel, Query{Since: AtPosition(ch.pos[49]), Limit: 10})
		if !slices.Equal(positions(es), posStrings(ch.pos[50:60])) {
			t.Fatalf("since after restart = %v", positions(es))
		}
	}
	// A clock seeded from Last continues the history; reads join Redis and the new ring seamlessly.
	ch := chans[0]
	ch.clock = Clock{}
	last, _, _ := s2.Last(ctx, ch.channel)
	ch.clock.Observe(last)
	for range 5 {
		ch.append(s2, a)
	}
	es, err := s2.Range(ctx, ch.channel, Query{Since: AtPosition(ch.pos[90]), Limit: 1000})
	if err != nil || !slices.Equal(positions(es), posStrings(ch.pos[91:])) {
		t.Fatalf("history across the restart = %v, %v\nwant %v", positions(es), err, posStrings(ch.pos[91:]))
	}
	if _, ok, _ := s2.Last(ctx, "never:used"); ok {
		t.Fatal("Last of a channel without history")
	}
}

// Entries still queued (async mode) are already in Range's answer; Close flushes them.
func TestRedisRangeIncludesQueuedAndCloseFlushes(t *testing.T) {
	r := redistest.Run(t)
	ctx := testCtx(t)
	s := newTestStore(t, RedisOptions{URL: r.URL(), BatchSize: 1000, FlushEvery: time.Hour})
	a := newAcks()
	ch := &published{channel: "slow:flush"}
	for range 10 {
		ch.append(s, a)
	}
	if n := a.calls.Load(); n != 0 {
		t.Fatalf("%d acks before the batch was sent", n)
	}
	if h := s.Health(); h.Backlog != 10 {
		t.Fatalf("Backlog = %d, want 10", h.Backlog)
	}
	for _, q := range []Query{{}, {Since: AtPosition(ch.pos[2])}, {Limit: 3}} {
		got, err := s.Range(ctx, ch.channel, q)
		want := ch.pos
		switch {
		case q.Since.IsSet:
			want = ch.pos[3:]
		case q.Limit == 3:
			want = ch.pos[7:]
		}
		if err != nil || !slices.Equal(positions(got), posStrings(want)) {
			t.Fatalf("Range(%s) = %v, %v", q, positions(got), err)
		}
	}
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if ok, _ := a.check(t, ch.acks()); ok != 10 {
		t.Fatalf("%d of 10 acked after Close", ok)
	}
	if got := positions(readStream(t, r.Client(), "arqonbus:{slow:flush}:stream")); !slices.Equal(got, posStrings(ch.pos)) {
		t.Fatalf("stream after Close = %v", got)
	}
}

// Redis killed with SIGKILL and restarted while a publisher runs: every acked entry is in the stream
// once and in order, nothing is acked that is missing, and Append never stalls.
func TestRedisOutageSIGKILL(t *testing.T) {
	r := redistest.Run(t, "--appendonly", "yes", "--appendfsync", "always")
	var (
		statesMu sync.Mutex
		states   []string
	)
	s := newTestStore(t, RedisOptions{URL: r.URL(), HistorySize: 100000, OnStateChange: func(h Health) {
		statesMu.Lock()
		states = append(states, h.Status)
		statesMu.Unlock()
	}})
	a := newAcks()
	chans := []*published{{channel: "load:a"}, {channel: "load:b"}, {channel: "load:c"}}

	const rate, runFor = 5000, 3 * time.Second
	var maxAppend time.Duration
	var sent int
	var degradedSeen atomic.Bool
	publisherDone := make(chan struct{})
	go func() {
		defer close(publisherDone)
		start := time.Now()
		for {
			elapsed := time.Since(start)
			if elapsed >= runFor {
				return
			}
			for target := int(elapsed.Seconds() * rate); sent < target; sent++ {
				t0 := time.Now()
				chans[sent%3].append(s, a)
				maxAppend = max(maxAppend, time.Since(t0))
			}
			if s.Health().Status == StatusDegraded {
				degradedSeen.Store(true)
			}
			time.Sleep(time.Millisecond)
		}
	}()
	time.Sleep(800 * time.Millisecond)
	r.Kill()
	killedAt := time.Now()
	time.Sleep(150 * time.Millisecond)
	// History reads fall back to memory at once.
	t0 := time.Now()
	es, err := s.Range(context.Background(), "load:a", Query{Limit: 10})
	if err != nil || len(es) != 10 || time.Since(t0) > 500*time.Millisecond {
		t.Errorf("Range during the outage: %d entries, %v, took %v", len(es), err, time.Since(t0))
	}
	if h := s.Health(); h.Status != StatusDegraded || h.Backlog == 0 {
		t.Errorf("Health during the outage = %+v", h)
	}
	time.Sleep(550 * time.Millisecond)
	r.Start()
	t.Logf("redis down for %v", time.Since(killedAt).Round(time.Millisecond))
	<-publisherDone

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := s.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	var all []ack
	for _, ch := range chans {
		all = append(all, ch.acks()...)
	}
	okCount, failCount := a.check(t, all)
	t.Logf("sent %d, acked %d, failed %d, retries found already stored %d, max Append %v, health %+v",
		sent, okCount, failCount, s.landed.Load(), maxAppend, s.Health())
	c := r.Client()
	for _, ch := range chans {
		stream := readStream(t, c, "arqonbus:{"+ch.channel+"}:stream")
		inStream := make(map[Position]bool, len(stream))
		for i, e := range stream {
			if inStream[e.Position] || (i > 0 && !stream[i-1].Position.Less(e.Position)) {
				t.Fatalf("%s: stream out of order or duplicated at %v", ch.channel, e.Position)
			}
			if want := fmt.Sprintf(`{"n":"%s"}`, e.Position); string(e.Data) != want {
				t.Fatalf("%s: entry %v holds %q", ch.channel, e.Position, e.Data)
			}
			inStream[e.Position] = true
		}
		a.mu.Lock()
		for _, p := range ch.pos {
			if a.ok[ack{ch.channel, p}] > 0 && !inStream[p] {
				t.Errorf("%s: %v acked but not in the stream", ch.channel, p)
			}
		}
		a.mu.Unlock()
		// Nothing was dropped (the buffer is large), so the stream is the whole history.
		if len(stream) != len(ch.pos) {
			t.Errorf("%s: stream holds %d of %d entries", ch.channel, len(stream), len(ch.pos))
		}
	}
	if failCount != 0 {
		t.Errorf("%d writes failed", failCount)
	}
	statesMu.Lock()
	defer statesMu.Unlock()
	if !slices.Equal(states, []string{StatusDegraded, StatusOK}) || !degradedSeen.Load() {
		t.Errorf("state changes %v (degraded seen by publisher: %v); want [degraded ok]", states, degradedSeen.Load())
	}
	if maxAppend > 250*time.Millisecond {
		t.Errorf("an Append took %v: the routing path stalled", maxAppend)
	}
}

// Redis absent at start: the store starts degraded, serves history from memory, and writes everything
// in order once Redis is started.
func TestRedisAbsentAtStart(t *testing.T) {
	r := redistest.New(t)
	ctx := testCtx(t)
	s := newTestStore(t, RedisOptions{URL: r.URL()})
	if h := s.Health(); h.Status != StatusDegraded || h.LastError == "" || h.Since.IsZero() {
		t.Fatalf("Health at start = %+v", h)
	}
	if _, err := s.LoadChannels(ctx); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("LoadChannels while absent: %v", err)
	}
	a := newAcks()
	chans := []*published{{channel: "late:a"}, {channel: "late:b"}, {channel: "late:c"}}
	for i := range 300 {
		chans[i%3].append(s, a)
		if i == 150 {
			time.Sleep(300 * time.Millisecond) // let the writers fail and wait a few times
		}
	}
	got, err := s.Range(ctx, "late:b", Query{Limit: 1000})
	if err != nil || !slices.Equal(positions(got), posStrings(chans[1].pos)) {
		t.Fatalf("memory fallback Range = %v, %v", positions(got), err)
	}
	if last, ok, err := s.Last(ctx, "late:c"); err != nil || !ok || last != chans[2].pos[99] {
		t.Fatalf("Last while absent = %v %v %v", last, ok, err)
	}
	if n := a.calls.Load(); n != 0 {
		t.Fatalf("%d done calls before Redis existed", n)
	}
	if h := s.Health(); h.Backlog != 300 {
		t.Fatalf("Backlog = %d, want 300", h.Backlog)
	}
	r.Start()
	waitFor(t, 10*time.Second, "caught up", func() bool {
		h := s.Health()
		return h.Status == StatusOK && h.Backlog == 0
	})
	var all []ack
	c := r.Client()
	for _, ch := range chans {
		all = append(all, ch.acks()...)
		if got := positions(readStream(t, c, "arqonbus:{"+ch.channel+"}:stream")); !slices.Equal(got, posStrings(ch.pos)) {
			t.Fatalf("%s after catching up = %v", ch.channel, got)
		}
	}
	if ok, _ := a.check(t, all); ok != 300 {
		t.Fatalf("%d of 300 acked", ok)
	}
	saved := make(chan error, 1)
	s.SaveChannel("late:a", time.Now(), func(err error) { saved <- err })
	if err := <-saved; err != nil {
		t.Fatal(err)
	}
}

// Beyond Buffer, the oldest writes are dropped, counted and failed; the rest reach Redis in order.
func TestRedisBufferDropsOldest(t *testing.T) {
	r := redistest.New(t)
	s := newTestStore(t, RedisOptions{URL: r.URL(), Buffer: 100, Shards: 1, BatchSize: 10})
	a := newAcks()
	ch := &published{channel: "tiny:buffer"}
	for range 250 {
		ch.append(s, a)
	}
	waitFor(t, 5*time.Second, "150 drops reported", func() bool { return a.calls.Load() == 150 })
	r.Start()
	waitFor(t, 10*time.Second, "caught up", func() bool { return a.calls.Load() == 250 && s.Health().Status == StatusOK })
	a.mu.Lock()
	for i, p := range ch.pos {
		err, failed := a.failed[ack{ch.channel, p}]
		if (i < 150) != failed {
			t.Errorf("entry %d: failed=%v", i, failed)
		} else if failed && !strings.Contains(err.Error(), "more than 100 writes waiting") {
			t.Errorf("entry %d: error %v", i, err)
		}
	}
	a.mu.Unlock()
	if got := positions(readStream(t, r.Client(), "arqonbus:{tiny:buffer}:stream")); !slices.Equal(got, posStrings(ch.pos[150:])) {
		t.Fatalf("stream = %v", got)
	}
	if h := s.Health(); h.Dropped != 150 || h.Written != 100 || h.Backlog != 0 {
		t.Fatalf("Health = %+v", h)
	}
}

// An XADD refused because the stream already has a newer entry fails on a first attempt (someone else
// wrote there) and counts as stored on a retry only when the stream holds the entry at its position
// (the earlier attempt landed).
func TestRedisPositionNotAboveTop(t *testing.T) {
	r := redistest.Run(t)
	ctx := testCtx(t)
	c := r.Client()
	key := "arqonbus:{race:x}:stream"
	if err := c.Do(ctx, c.B().Xadd().Key(key).Id("5000-0").FieldValue().FieldValue("e", "{}").Build()).Error(); err != nil {
		t.Fatal(err)
	}
	s := newTestStore(t, RedisOptions{URL: r.URL()})
	errs := make(chan error, 3)
	s.Append("race:x", Entry{Position: Position{4000, 0}, Data: []byte(`{}`)}, func(err error) { errs <- err })
	if err := <-errs; err == nil || !strings.Contains(err.Error(), "has a newer entry") {
		t.Fatalf("first attempt below the top: %v", err)
	}
	sh := s.channels.get("race:x").shard
	sh.backlog.Add(1) // write() settles an entry taken from the queue
	retry, err := s.write(sh, []pending{{key: key, e: Entry{Position: Position{5000, 0}, Data: []byte(`{}`)},
		done: func(err error) { errs <- err }, sent: true}}, nil)
	if len(retry) != 0 || err != nil {
		t.Fatalf("retry = %v, %v", retry, err)
	}
	if err := <-errs; err != nil {
		t.Fatalf("retried write already in the stream: %v", err)
	}
	// A retry refused where the stream holds something else, or nothing, did not land: another writer
	// moved the top past it (in a cluster, another node, or the publish of this very event whose
	// reply was lost). Before: counted as stored.
	for _, e := range []Entry{{Position: Position{5000, 0}, Data: []byte(`{"other":1}`)}, {Position: Position{4500, 0}, Data: []byte(`{}`)}} {
		sh.backlog.Add(1)
		retry, err = s.write(sh, []pending{{key: key, e: e, done: func(err error) { errs <- err }, sent: true}}, nil)
		if len(retry) != 0 || err != nil {
			t.Fatalf("retry = %v, %v", retry, err)
		}
		if err := <-errs; err == nil || !strings.Contains(err.Error(), "has a newer entry") {
			t.Fatalf("retried write at %s not in the stream: %v", e.Position, err)
		}
	}
	s.Append("race:x", Entry{Position: Position{6000, 0}, Data: []byte(`{}`)}, func(err error) { errs <- err })
	if err := <-errs; err != nil {
		t.Fatal(err)
	}
	if h := s.Health(); h.Dropped != 3 || h.Written != 2 || h.Backlog != 0 {
		t.Fatalf("Health = %+v", h)
	}
}

// Close gives up at its deadline while Redis is away: every queued write gets ErrClosed, as does any
// Append after Close.
func TestRedisCloseGivesUp(t *testing.T) {
	r := redistest.New(t)
	s := newTestStore(t, RedisOptions{URL: r.URL()})
	a := newAcks()
	ch := &published{channel: "never:there"}
	for range 5 {
		ch.append(s, a)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	err := s.Close(ctx)
	if err == nil || !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "5 writes not flushed") {
		t.Fatalf("Close = %v", err)
	}
	ch.append(s, a)
	waitFor(t, 2*time.Second, "6 done calls", func() bool { return a.calls.Load() == 6 })
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, p := range ch.pos {
		if err := a.failed[ack{ch.channel, p}]; !errors.Is(err, ErrClosed) {
			t.Errorf("%v: %v", p, err)
		}
	}
	if err := s.Close(context.Background()); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

// BenchmarkRedisAppend measures persisted throughput: entries appended and acknowledged by Redis
// (pipelined batches, 16 channels, 200-byte envelopes) per second.
func BenchmarkRedisAppend(b *testing.B) {
	r := redistest.Run(b)
	s := newTestStore(b, RedisOptions{URL: r.URL()})
	data := []byte(`{"type":"event","id":"0123456789abcdef","room":"bench","channel":"c","sender":"agent-1",` +
		`"timestamp":"2024-05-01T12:00:00.000Z","payload":{"text":"hello world, this is a benchmark message"},"metadata":{}}`)
	const nch = 16
	names := make([]string, nch)
	clocks := make([]Clock, nch)
	for i := range names {
		names[i] = fmt.Sprintf("bench:c%d", i)
	}
	var settled, failed atomic.Int64
	done := func(err error) {
		if err != nil {
			failed.Add(1)
		}
		settled.Add(1)
	}
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		ch := i % nch
		s.Append(names[ch], Entry{Position: clocks[ch].Next(time.Now()), Data: data}, done)
		if i%4096 == 4095 { // keep the queues below Buffer: a publisher sees backpressure from acks
			for int64(i)-settled.Load() > 50000 {
				time.Sleep(100 * time.Microsecond)
			}
		}
	}
	for settled.Load() < int64(b.N) {
		if time.Since(start) > 60*time.Second {
			b.Fatalf("only %d of %d settled", settled.Load(), b.N)
		}
		time.Sleep(100 * time.Microsecond)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	if failed.Load() > 0 {
		b.Fatalf("%d writes failed", failed.Load())
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "msgs/s")
}

// Connections killed by Redis in the middle of large pipelined batches: writes that executed but whose
// replies were lost are retried and recognised as stored, so each entry is in the stream exactly once.
func TestRedisConnectionKilledMidBatch(t *testing.T) {
	r := redistest.Run(t)
	// About 20,000 entries/s of 1 KB, sent in batches of about 200 (200 KB, many socket reads for Redis).
	s := newTestStore(t, RedisOptions{URL: r.URL(), HistorySize: 100000, Shards: 2, FlushEvery: 10 * time.Millisecond})
	a := newAcks()
	ch := &published{channel: "big:batches"}
	pad := strings.Repeat("x", 1000)
	c := r.Client()
	stopKiller := make(chan struct{})
	killerDone := make(chan int)
	go func() {
		kills := 0
		defer func() { killerDone <- kills }()
		for {
			select {
			case <-stopKiller:
				return
			case <-time.After(50 * time.Millisecond):
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			if c.Do(ctx, c.B().Arbitrary("CLIENT", "KILL").Args("TYPE", "normal", "SKIPME", "yes").Build()).Error() == nil {
				kills++
			}
			cancel()
		}
	}()
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		for range 100 {
			pos := ch.clock.Next(time.Now())
			ch.pos = append(ch.pos, pos)
			s.Append(ch.channel, Entry{Position: pos, Data: fmt.Appendf(nil, `{"n":"%s","pad":"%s"}`, pos, pad)}, a.done(ack{ch.channel, pos}))
		}
		time.Sleep(5 * time.Millisecond)
	}
	close(stopKiller)
	kills := <-killerDone
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := s.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	okCount, failCount := a.check(t, ch.acks())
	stream := readStream(t, c, "arqonbus:{big:batches}:stream")
	t.Logf("%d entries, %d connection kills, acked %d, failed %d, retries found already stored %d",
		len(ch.pos), kills, okCount, failCount, s.landed.Load())
	got := make([]string, len(stream))
	for i, e := range stream {
		got[i] = e.Position.String()
	}
	if !slices.Equal(got, posStrings(ch.pos)) {
		t.Fatalf("stream holds %d entries, want exactly the %d appended, in order", len(got), len(ch.pos))
	}
	if failCount != 0 {
		a.mu.Lock()
		for _, err := range a.failed {
			t.Errorf("for example: %v", err)
			break
		}
		a.mu.Unlock()
		t.Fatalf("%d writes failed", failCount)
	}
}

func TestRedisURLNeverLeaksPassword(t *testing.T) {
	for _, u := range []string{"redis://:s3cret@127.0.0.1:6379/0", "redis://user:s3cret@h:6379", "redis://:s3cret@h:notaport", "::s3cret@@"} {
		if got := redactURL(u); strings.Contains(got, "s3cret") {
			t.Errorf("redactURL(%q) = %q", u, got)
		}
	}
	if _, err := ClientOption("redis://:s3cret@h:notaport"); err == nil || strings.Contains(err.Error(), "s3cret") {
		t.Errorf("ClientOption error = %v, want one without the password", err)
	}
}
