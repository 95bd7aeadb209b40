package load

import (
	"container/heap"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
)

// Read buffer sizes: subscribers read a stream of small frames, so a large buffer means fewer
// read syscalls; idle connections read two messages in their life and should cost us little.
const (
	subReadBuf  = 32 << 10
	pubReadBuf  = 16 << 10
	idleReadBuf = 512
)

// maxBatch bounds the frames a publisher writes at once when catching up on its schedule.
const maxBatch = 256

// startDelay lets every publisher goroutine be scheduled before the common start time, so that
// the first messages are not all late.
const startDelay = 50 * time.Millisecond

// Run executes one scenario and returns its measurements. It ends by itself: every phase has a
// deadline, and cancelling ctx cuts it short (the result is then an error).
func Run(ctx context.Context, cfg Config) (Result, error) {
	cfg, err := cfg.Normalize()
	if err != nil {
		return Result{}, err
	}
	if cfg.Logf == nil {
		cfg.Logf = func(string, ...any) {}
	}
	var tag [3]byte
	if _, err := rand.Read(tag[:]); err != nil {
		return Result{}, err
	}
	r := &runner{
		cfg: cfg,
		// A tag per run keeps client ids and channels apart from earlier runs on the same server.
		tag: hex.EncodeToString(tag[:]),
		d:   &dialer{srcIPs: cfg.SrcIPs, timeout: cfg.ConnectTimeout},
	}
	switch cfg.Scenario {
	case ScenarioIdle:
		return r.idle(ctx)
	case ScenarioCommand:
		return r.command(ctx)
	}
	return r.traffic(ctx)
}

type runner struct {
	cfg Config
	tag string
	d   *dialer
	// joins numbers join commands so that each has its own id.
	joins atomic.Int64
}

// connSpec is what one connection is set up as.
type connSpec struct {
	addr       string // server host:port ("": Config.Addr)
	id         string
	channel    string
	readBuf    int
	joinParams []byte // parameters of its join_channel (nil: none)
}

// connectAll sets up every connection (dial, welcome, join) with bounded concurrency, calling
// ready for each as soon as it is joined. On the first failure it stops, closes what it opened
// and returns that error.
func (r *runner) connectAll(ctx context.Context, specs []connSpec, ready func(i int, c *conn)) ([]*conn, error) {
	conns := make([]*conn, len(specs))
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	work := make(chan int)
	var wg sync.WaitGroup
	for range min(r.cfg.ConnectConcurrency, len(specs)) {
		wg.Go(func() {
			for i := range work {
				if ctx.Err() != nil {
					continue
				}
				c, err := r.connectOne(ctx, specs[i])
				if err != nil {
					cancel(err)
					continue
				}
				conns[i] = c
				if ready != nil {
					ready(i, c)
				}
			}
		})
	}
feed:
	for i := range specs {
		select {
		case work <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(work)
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		for _, c := range conns {
			if c != nil {
				c.close()
			}
		}
		return nil, err
	}
	return conns, nil
}

func (r *runner) connectOne(ctx context.Context, sp connSpec) (*conn, error) {
	addr := sp.addr
	if addr == "" {
		addr = r.cfg.Addr
	}
	c, err := r.d.dial(ctx, addr, sp.id, sp.readBuf)
	if err != nil {
		return nil, err
	}
	// A cancelled run must not wait for this connection's own timeout.
	stop := context.AfterFunc(ctx, func() { c.nc.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	joinID := "arq_j_" + strconv.FormatInt(r.joins.Add(1), 10)
	if err := c.setup(r.cfg.Room, sp.channel, joinID, sp.joinParams, time.Now().Add(r.cfg.ConnectTimeout)); err != nil {
		c.nc.Close()
		return nil, err
	}
	return c, nil
}

// connStats is what every connection's reader counts besides events.
type connStats struct {
	errors       int64  // error envelopes received
	firstError   string // the first of them, for the report
	disconnected bool   // the connection ended without us closing it
	readErr      error
}

func (s *connStats) noteOther(msg []byte) {
	if string(envType(msg)) == "error" {
		s.errors++
		if s.firstError == "" {
			s.firstError = errorText(msg)
		}
	}
}

func (s *connStats) noteEnd(c *conn, err error) {
	if !c.closing.Load() {
		s.disconnected = true
		s.readErr = err
	}
}

// sink reads a connection whose deliveries are not measured (publishers, idle connections): it
// keeps the socket drained, answers pings and counts errors.
type sink struct {
	c *conn
	connStats
}

func (k *sink) run() {
	for {
		msg, err := k.c.readMessage()
		if err != nil {
			k.noteEnd(k.c, err)
			return
		}
		k.noteOther(msg)
	}
}

// subscriber reads one measured connection. Its fields other than counted belong to the
// reactor loop that reads it until the connection ends.
type subscriber struct {
	c *conn
	connStats

	pubBase     int64 // publishers of this subscriber's channel are pubBase..pubBase+len(tracks)-1
	tracks      []seqTrack
	seqLimit    int64 // sequence numbers at or above it cannot have been sent
	windowStart int64 // unix ns: events sent before it are warm-up

	counted   atomic.Int64 // unique events sent in the window (read by the drain wait)
	bytes     int64        // wire bytes of the counted events
	dup       int64
	ooo       int64
	unplanned int64 // events that are not from this channel's publishers or not ours at all

	lat latRecorder
}

// message and end make a subscriber a reactor's frameHandler.
func (s *subscriber) message(msg []byte, now int64) { s.handle(msg, now) }

func (s *subscriber) end(err error) {
	s.noteEnd(s.c, err)
	s.lat.flush()
}

func (s *subscriber) handle(msg []byte, now int64) {
	t, p, seq, ok := parseRoutedEvent(msg)
	if !ok {
		if string(envType(msg)) != "event" {
			s.noteOther(msg)
			return
		}
		t, p, seq, ok = parseEvent(msg)
	}
	idx := p - s.pubBase
	if !ok || idx < 0 || idx >= int64(len(s.tracks)) || seq < 0 || seq >= s.seqLimit {
		s.unplanned++
		return
	}
	dup, ooo := s.tracks[idx].observe(seq)
	if t < s.windowStart {
		return // warm-up: tracked, so that its repeats are recognised, but not counted
	}
	switch {
	case dup:
		s.dup++
	case ooo:
		s.ooo++
		fallthrough
	default:
		s.counted.Add(1)
		s.bytes += int64(wireSize(len(msg)))
		s.lat.add(time.Duration(now - t))
	}
}

// publisher sends events on a fixed schedule, open loop: message k is due at start+phase+k/rate
// whatever the server does, and a late publisher catches up by sending everything due at once.
type publisher struct {
	c       *conn
	index   int64
	room    string
	channel string
	rate    float64       // messages per second for this publisher
	phase   time.Duration // offset that spreads publishers over one interval

	command bool // send bench_echo commands instead of events

	seq      int64 // the next message's sequence number
	inWindow bool  // a message was sent inside the window (winSeq is set)

	sent       int64 // all messages sent
	sentWindow int64 // messages sent with a timestamp inside the measured window
	maxLag     time.Duration
	err        error

	// winSeq is the first sequence number sent inside the window (math.MaxInt64 until then).
	// It is stored before those bytes are written, so a reader that sees an answer to one of
	// them also sees it.
	winSeq atomic.Int64
}

func (p *publisher) due(k int64) time.Duration {
	return p.phase + time.Duration(float64(k)/p.rate*float64(time.Second))
}

// run sends p's schedule on this goroutine.
func (p *publisher) run(ctx context.Context, start, windowStart, end time.Time) {
	pace(ctx, []*publisher{p}, start, windowStart, end)
}

// pace sends the schedules of pubs from one goroutine: it sleeps until the earliest of them
// is due, sends what is due, and sleeps again. A goroutine per publisher would cost a timer
// wake-up and a goroutine switch per message; here one wake-up serves every publisher due by
// then. A publisher whose socket stops taking bytes holds up the others on this goroutine
// until its write deadline; their lateness then shows in the send lag.
func pace(ctx context.Context, pubs []*publisher, start, windowStart, end time.Time) {
	var sc pubScratch
	q := make(pubQueue, 0, len(pubs))
	for _, p := range pubs {
		q = append(q, pubDue{at: start.Add(p.due(0)), p: p})
	}
	heap.Init(&q)
	wsNanos := windowStart.UnixNano()
	for len(q) > 0 && ctx.Err() == nil {
		now := time.Now()
		if d := q[0].at.Sub(now); d > 0 {
			time.Sleep(min(d, time.Until(end)))
			if !time.Now().Before(end) {
				return
			}
			continue
		}
		next, done := q[0].p.step(now, start, wsNanos, end, &sc)
		if done {
			heap.Pop(&q)
			continue
		}
		q[0].at = next
		heap.Fix(&q, 0)
	}
}

// pubScratch is the buffers a pacing goroutine builds messages in.
type pubScratch struct{ batch, js, ts []byte }

// step sends what of p's schedule is due at now and returns when the next message is due, or
// done when the schedule ended or a write failed.
func (p *publisher) step(now, start time.Time, wsNanos int64, end time.Time, sc *pubScratch) (next time.Time, done bool) {
	if !now.Before(end) {
		return end, true
	}
	var due int64 // messages whose time has come
	if el := now.Sub(start) - p.phase; el >= 0 {
		due = int64(el.Seconds()*p.rate) + 1
	}
	if n := min(due-p.seq, maxBatch); n > 0 {
		p.maxLag = max(p.maxLag, now.Sub(start)-p.due(p.seq))
		// One timestamp per batch: it is when these bytes leave, the latency's origin.
		tn := now.UnixNano()
		sc.ts = now.UTC().AppendFormat(sc.ts[:0], timestampLayout)
		sc.batch = sc.batch[:0]
		if !p.inWindow && tn >= wsNanos {
			p.inWindow = true
			p.winSeq.Store(p.seq)
		}
		for range n {
			if p.command {
				sc.js = p.appendCommand(sc.js[:0], p.seq, tn, sc.ts)
			} else {
				sc.js = p.appendEvent(sc.js[:0], p.seq, tn, sc.ts)
			}
			sc.batch = appendFrame(sc.batch, ws.OpText, sc.js)
			p.seq++
		}
		if err := p.c.write(sc.batch); err != nil {
			p.err = err
			return end, true
		}
		p.sent += n
		if tn >= wsNanos {
			p.sentWindow += n
		}
		if due > p.seq {
			return now, false // still behind: no sleeping until caught up
		}
	}
	return start.Add(p.due(p.seq)), false
}

// pubDue is a publisher and when its next message is due; pubQueue orders them, earliest first.
type pubDue struct {
	at time.Time
	p  *publisher
}

type pubQueue []pubDue

func (q pubQueue) Len() int           { return len(q) }
func (q pubQueue) Less(i, j int) bool { return q[i].at.Before(q[j].at) }
func (q pubQueue) Swap(i, j int)      { q[i], q[j] = q[j], q[i] }
func (q *pubQueue) Push(x any)        { *q = append(*q, x.(pubDue)) }
func (q *pubQueue) Pop() any {
	old := *q
	x := old[len(old)-1]
	*q = old[:len(old)-1]
	return x
}

// pacerShares deals pubs round robin to n pacing goroutines (0: half the CPUs, at least one).
func pacerShares(pubs []*publisher, n int) [][]*publisher {
	if n <= 0 {
		n = halfCPUs()
	}
	n = min(n, len(pubs))
	shares := make([][]*publisher, n)
	for i, p := range pubs {
		shares[i%n] = append(shares[i%n], p)
	}
	return shares
}

// appendCommand appends a bench_echo command whose parameters carry the same t/p/s as an event's
// payload; its id, arq_c_<publisher>_<seq>, comes back as the answer's request_id.
func (p *publisher) appendCommand(dst []byte, seq, t int64, ts []byte) []byte {
	dst = append(dst, `{"version":"1.0","id":"`...)
	dst = appendCommandID(dst, p.index, seq)
	dst = append(dst, `","type":"command","room":"`...)
	dst = append(dst, p.room...)
	dst = append(dst, `","channel":"`...)
	dst = append(dst, p.channel...)
	dst = append(dst, `","from":"`...)
	dst = append(dst, p.c.id...)
	dst = append(dst, `","timestamp":"`...)
	dst = append(dst, ts...)
	dst = append(dst, `","payload":{"command":"`+EchoCommand+`","parameters":{"t":`...)
	dst = strconv.AppendInt(dst, t, 10)
	dst = append(dst, `,"p":`...)
	dst = strconv.AppendInt(dst, p.index, 10)
	dst = append(dst, `,"s":`...)
	dst = strconv.AppendInt(dst, seq, 10)
	dst = append(dst, `}}}`...)
	return dst
}

func (p *publisher) appendEvent(dst []byte, seq, t int64, ts []byte) []byte {
	dst = append(dst, `{"version":"1.0","id":"arq_m_`...)
	dst = strconv.AppendInt(dst, p.index, 10)
	dst = append(dst, '_')
	dst = strconv.AppendInt(dst, seq, 10)
	dst = append(dst, `","type":"event","room":"`...)
	dst = append(dst, p.room...)
	dst = append(dst, `","channel":"`...)
	dst = append(dst, p.channel...)
	dst = append(dst, `","from":"`...)
	dst = append(dst, p.c.id...)
	dst = append(dst, `","timestamp":"`...)
	dst = append(dst, ts...)
	dst = append(dst, `","payload":{"t":`...)
	dst = strconv.AppendInt(dst, t, 10)
	dst = append(dst, `,"p":`...)
	dst = strconv.AppendInt(dst, p.index, 10)
	dst = append(dst, `,"s":`...)
	dst = strconv.AppendInt(dst, seq, 10)
	dst = append(dst, `}}`...)
	return dst
}

// traffic runs fanout (one channel) and channels (many channels): every channel has cfg.Pubs
// publishers and cfg.Subs subscribers, and all publishers together send cfg.Rate messages/s.
func (r *runner) traffic(ctx context.Context) (Result, error) {
	cfg := r.cfg
	res := Result{Scenario: cfg.Scenario, Params: cfg.Params(), Runs: 1,
		Subs: cfg.Subs, Pubs: cfg.Pubs, Channels: cfg.Channels, Conns: cfg.TotalConns(),
		Rate: cfg.Rate, WarmupS: cfg.Warmup.Seconds(), DurationS: cfg.Duration.Seconds()}

	// The whole run's bound: set-up, the schedule, the drain, and slack for closing.
	ctx, cancel := context.WithTimeout(ctx, 2*cfg.ConnectTimeout+cfg.Warmup+cfg.Duration+cfg.Drain+30*time.Second)
	defer cancel()

	nCh, perSub, perPub := cfg.Channels, cfg.Subs, cfg.Pubs
	totalPubs := nCh * perPub
	ratePer := cfg.Rate / float64(totalPubs)
	// Upper bound on any sequence number; anything above it is garbage, not a reason to grow
	// a bitmap without limit.
	seqLimit := int64(math.Ceil(ratePer*(cfg.Warmup+cfg.Duration+time.Second).Seconds())) + maxBatch

	chName := func(c int) string {
		if cfg.Scenario == ScenarioFanout {
			return "fan_" + r.tag
		}
		return "ch_" + r.tag + "_" + strconv.Itoa(c)
	}
	hists := newHistSet(nCh * perSub)
	subs := make([]*subscriber, 0, nCh*perSub)
	subSpecs := make([]connSpec, 0, nCh*perSub)
	pubs := make([]*publisher, 0, totalPubs)
	pubSpecs := make([]connSpec, 0, totalPubs)
	for c := range nCh {
		for range perSub {
			i := len(subs)
			subs = append(subs, &subscriber{
				pubBase:  int64(c * perPub),
				tracks:   make([]seqTrack, perPub),
				seqLimit: seqLimit,
				lat:      latRecorder{shard: hists.shard(i), buf: make([]int64, 0, latBatch)},
			})
			subSpecs = append(subSpecs, connSpec{addr: cfg.subAddr(i), id: fmt.Sprintf("ld%s_s%d", r.tag, i), channel: chName(c), readBuf: subReadBuf})
		}
		for range perPub {
			i := len(pubs)
			pubs = append(pubs, &publisher{
				index: int64(i), room: cfg.Room, channel: chName(c), rate: ratePer,
				phase: time.Duration(float64(i) / float64(totalPubs) / ratePer * float64(time.Second)),
			})
			pubSpecs = append(pubSpecs, connSpec{id: fmt.Sprintf("ld%s_p%d", r.tag, i), channel: chName(c), readBuf: pubReadBuf})
		}
	}
	for _, s := range subs {
		for i := range s.tracks {
			s.tracks[i].maxSeq = -1
		}
	}

	cfg.Logf("connecting %d subscribers to %s and %d publishers to %s (%d channels, %d at a time)",
		len(subs), strings.Join(cfg.SubAddrs, ","), len(pubs), cfg.Addr, nCh, cfg.ConnectConcurrency)
	t0 := time.Now()
	subConns, err := r.connectAll(ctx, subSpecs, nil)
	if err != nil {
		return res, fmt.Errorf("setting up subscribers: %w", err)
	}
	pubConns, err := r.connectAll(ctx, pubSpecs, nil)
	if err != nil {
		closeAll(subConns)
		return res, fmt.Errorf("setting up publishers: %w", err)
	}
	res.ConnectS = time.Since(t0).Seconds()
	res.ConnectPerSec = float64(res.Conns) / res.ConnectS
	cfg.Logf("connected and joined %d connections in %.2fs (%.0f/s)", res.Conns, res.ConnectS, res.ConnectPerSec)

	start := time.Now().Add(startDelay)
	windowStart := start.Add(cfg.Warmup)
	end := windowStart.Add(cfg.Duration)
	watch := startStorageWatch(ctx, cfg.MetricsURL, windowStart, end)
	cpu := startCPUWatch(ctx, cfg.ServerPIDs, cfg.RedisPID, windowStart, end)

	// Readers start only now, once the window is known, so windowStart needs no synchronisation.
	rd, err := newReactor(cfg.ReadLoops)
	if err != nil {
		closeAll(subConns)
		closeAll(pubConns)
		return res, err
	}
	for i, s := range subs {
		s.c = subConns[i]
		s.windowStart = windowStart.UnixNano()
		if err := rd.enroll(s.c, s); err != nil {
			closeAll(subConns)
			closeAll(pubConns)
			rd.wait()
			return res, err
		}
	}
	var readers sync.WaitGroup
	pubSinks := make([]*sink, len(pubs))
	for i, p := range pubs {
		p.c = pubConns[i]
		pubSinks[i] = &sink{c: p.c}
		readers.Go(pubSinks[i].run)
	}

	cfg.Logf("publishing %g msg/s from %d publishers: %s warm-up, then %s measured",
		cfg.Rate, len(pubs), cfg.Warmup, cfg.Duration)
	var pubWG sync.WaitGroup
	for _, share := range pacerShares(pubs, cfg.Pacers) {
		pubWG.Go(func() { pace(ctx, share, start, windowStart, end) })
	}
	pubWG.Wait()

	var expected, sentAll int64
	for _, s := range subs {
		for j := range s.tracks {
			expected += pubs[s.pubBase+int64(j)].sentWindow
		}
	}
	for _, p := range pubs {
		sentAll += p.sent
	}
	cfg.Logf("publishing done; waiting up to %s for %d deliveries", cfg.Drain, expected)
	waitDrain(ctx, cfg.Drain, expected, func() (got int64) {
		for _, s := range subs {
			got += s.counted.Load()
		}
		return got
	})
	watch.finish(ctx, &res, sentAll)
	closeAll(subConns)
	closeAll(pubConns)
	readers.Wait()
	rd.wait()
	if err := ctx.Err(); err != nil {
		return res, fmt.Errorf("run cut short: %w", err)
	}

	for _, p := range pubs {
		res.Sent += p.sentWindow
		res.SendLagMaxMs = max(res.SendLagMaxMs, ms(p.maxLag))
		if p.err != nil {
			res.PublishErrors++
			res.noteFirst("publish: " + p.err.Error())
		}
	}
	for _, k := range pubSinks {
		res.addStats(&k.connStats)
	}
	res.Expected = expected
	for _, s := range subs {
		res.Delivered += s.counted.Load()
		res.Dup += s.dup
		res.OutOfOrder += s.ooo
		res.Unplanned += s.unplanned
		res.addStats(&s.connStats)
	}
	res.Lost = res.Expected - res.Delivered
	if res.Delivered > 0 {
		var b int64
		for _, s := range subs {
			b += s.bytes
		}
		res.BytesPerDelivery = float64(b) / float64(res.Delivered)
	}
	cpu.finish(&res, res.Delivered, res.Sent)
	res.SentPerSec = float64(res.Sent) / cfg.Duration.Seconds()
	res.DeliveredPerSec = float64(res.Delivered) / cfg.Duration.Seconds()
	h := hists.merged()
	if h.TotalCount() > 0 {
		res.P50Ms = usToMs(h.ValueAtQuantile(50))
		res.P99Ms = usToMs(h.ValueAtQuantile(99))
		res.P999Ms = usToMs(h.ValueAtQuantile(99.9))
		res.MaxMs = usToMs(h.Max())
	}
	return res, nil
}

// idle opens cfg.Conns connections that join a channel and then sit, and reports the server's
// resident memory growth per connection and how fast they were set up.
func (r *runner) idle(ctx context.Context) (Result, error) {
	cfg := r.cfg
	res := Result{Scenario: cfg.Scenario, Params: cfg.Params(), Runs: 1,
		Channels: cfg.Channels, Conns: cfg.Conns}
	ctx, cancel := context.WithTimeout(ctx, 2*cfg.ConnectTimeout+time.Duration(cfg.Conns)*time.Millisecond+cfg.Hold+30*time.Second)
	defer cancel()

	var rssBefore int64
	if len(cfg.ServerPIDs) > 0 {
		var err error
		if rssBefore, err = readRSSSum(cfg.ServerPIDs); err != nil {
			return res, err
		}
	}
	specs := make([]connSpec, cfg.Conns)
	for i := range specs {
		specs[i] = connSpec{
			id:      fmt.Sprintf("ld%s_i%d", r.tag, i),
			addr:    cfg.subAddr(i),
			channel: "idle_" + r.tag + "_" + strconv.Itoa(i%cfg.Channels),
			readBuf: idleReadBuf,
		}
	}
	cfg.Logf("connecting %d idle connections to %s over %d channels (%d at a time)",
		cfg.Conns, strings.Join(cfg.SubAddrs, ","), cfg.Channels, cfg.ConnectConcurrency)
	sinks := make([]*sink, cfg.Conns)
	var readers sync.WaitGroup
	t0 := time.Now()
	conns, err := r.connectAll(ctx, specs, func(i int, c *conn) {
		// Read from the start: the server may ping while the rest are still connecting.
		sinks[i] = &sink{c: c}
		readers.Go(sinks[i].run)
	})
	if err != nil {
		readers.Wait()
		return res, fmt.Errorf("setting up connections: %w", err)
	}
	res.ConnectS = time.Since(t0).Seconds()
	res.ConnectPerSec = float64(cfg.Conns) / res.ConnectS
	cfg.Logf("connected and joined %d connections in %.2fs (%.0f/s); holding %s",
		cfg.Conns, res.ConnectS, res.ConnectPerSec, cfg.Hold)

	// The CPU of idle connections: what the servers spend while they hold them.
	holdStart := time.Now()
	cpu := startCPUWatch(ctx, cfg.ServerPIDs, cfg.RedisPID, holdStart, holdStart.Add(cfg.Hold))
	select {
	case <-time.After(cfg.Hold):
	case <-ctx.Done():
	}
	cpu.finish(&res, 0, 0)
	if len(cfg.ServerPIDs) > 0 && ctx.Err() == nil {
		rssAfter, err := readRSSSum(cfg.ServerPIDs)
		if err != nil {
			closeAll(conns)
			readers.Wait()
			return res, err
		}
		res.RSSBeforeBytes, res.RSSAfterBytes = rssBefore, rssAfter
		res.RSSPerConnBytes = float64(rssAfter-rssBefore) / float64(cfg.Conns)
	}
	closeAll(conns)
	readers.Wait()
	if err := ctx.Err(); err != nil {
		return res, fmt.Errorf("run cut short: %w", err)
	}
	for _, k := range sinks {
		res.addStats(&k.connStats)
	}
	return res, nil
}

// readRSSSum is the resident memory of all the processes together.
func readRSSSum(pids []int) (int64, error) {
	var sum int64
	for _, pid := range pids {
		rss, err := ReadRSS(pid)
		if err != nil {
			return 0, fmt.Errorf("pid %d: %w", pid, err)
		}
		sum += rss
	}
	return sum, nil
}

func closeAll(conns []*conn) {
	for _, c := range conns {
		if c != nil {
			c.close()
		}
	}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func usToMs(us int64) float64 { return float64(us) / 1000 }

// errNoRSS is returned when /proc/<pid>/status has no VmRSS line (a zombie, or not Linux).
var errNoRSS = errors.New("no VmRSS in /proc status")

// waitDrain waits, up to drain, until arrived() reaches expected: the tail
// of a run gets time to land, and a run that already has everything ends at
// once.
func waitDrain(ctx context.Context, drain time.Duration, expected int64, arrived func() int64) {
	end := time.Now().Add(drain)
	for time.Now().Before(end) && ctx.Err() == nil && arrived() < expected {
		time.Sleep(20 * time.Millisecond)
	}
}

// wireSize is the size of an unmasked server frame carrying n bytes of payload (RFC 6455 5.2).
func wireSize(n int) int {
	switch {
	case n < 126:
		return n + 2
	case n < 1<<16:
		return n + 4
	default:
		return n + 10
	}
}
