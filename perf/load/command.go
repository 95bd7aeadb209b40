package load

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
)

// The command scenario measures service request/response round trips: cfg.Handlers clients join
// the channel serving bench_echo, cfg.Requesters clients send bench_echo commands to it at
// cfg.Rate requests/s in total (open loop, like the publishers), each carrying its send time,
// and the handlers answer at once with a command_response whose result echoes the parameters.
// The server forwards each command to one handler (round robin) and routes the answer to the
// requester alone, so the latency is requester -> server -> handler -> server -> requester.

// handlerJoinParams makes a handler: it serves bench_echo on the channel it joins.
var handlerJoinParams = []byte(`{"handles":["` + EchoCommand + `"]}`)

// echoHandler answers every bench_echo command it reads, at once, on its own goroutine.
type echoHandler struct {
	c     *conn
	index int
	room  string
	ch    string
	connStats

	answered int64
	unknown  int64 // commands that are not ours or not bench_echo (answered nonetheless)
	writeErr error
}

var keyCommandName = []byte(`"command":`)

func (h *echoHandler) run() {
	var out, frame, ts []byte
	var n int64
	var lastTS int64
	for {
		msg, err := h.c.readMessage()
		if err != nil {
			h.noteEnd(h.c, err)
			return
		}
		if string(envType(msg)) != "command" {
			h.noteOther(msg)
			continue
		}
		id := stringField(msg, keyID)
		params := rawObject(msg, keyParams)
		if params == nil {
			params = []byte(`{}`)
		}
		if string(stringField(msg, keyCommandName)) != EchoCommand {
			h.unknown++
		}
		// The timestamp changes once a millisecond at most: format it no more often.
		if now := time.Now(); now.UnixMilli() != lastTS || ts == nil {
			lastTS = now.UnixMilli()
			ts = now.UTC().AppendFormat(ts[:0], timestampLayout)
		}
		n++
		out = h.appendResponse(out[:0], n, id, params, ts)
		frame = appendFrame(frame[:0], ws.OpText, out)
		if err := h.c.write(frame); err != nil {
			if h.writeErr == nil {
				h.writeErr = err
			}
			continue // the read side will see the connection end
		}
		h.answered++
	}
}

func (h *echoHandler) appendResponse(dst []byte, n int64, requestID, result, ts []byte) []byte {
	dst = append(dst, `{"version":"1.0","id":"arq_r_`...)
	dst = strconv.AppendInt(dst, int64(h.index), 10)
	dst = append(dst, '_')
	dst = strconv.AppendInt(dst, n, 10)
	dst = append(dst, `","type":"command_response","room":"`...)
	dst = append(dst, h.room...)
	dst = append(dst, `","channel":"`...)
	dst = append(dst, h.ch...)
	dst = append(dst, `","from":"`...)
	dst = append(dst, h.c.id...)
	dst = append(dst, `","timestamp":"`...)
	dst = append(dst, ts...)
	dst = append(dst, `","payload":{"request_id":"`...)
	dst = append(dst, requestID...) // as received: still escaped if it needed escaping
	dst = append(dst, `","status":"success","result":`...)
	dst = append(dst, result...)
	return append(dst, `}}`...)
}

// requester reads the answers to one requester's commands. Its fields other than settled belong
// to its reader goroutine until that ends.
type requester struct {
	pub *publisher
	connStats

	track       seqTrack
	seqLimit    int64
	windowStart int64

	settled     atomic.Int64 // window requests answered or refused (read by the drain wait)
	answered    int64        // window requests answered with success
	refused     int64        // window requests answered with an error envelope
	timeouts    int64        // ... of which TIMEOUT
	rateLimited int64        // RATE_LIMITED errors, any phase
	dup         int64
	ooo         int64
	unplanned   int64

	lat latRecorder
}

func (q *requester) run() {
	defer q.lat.flush()
	c := q.pub.c
	var now int64
	for {
		reads := c.src.reads
		msg, err := c.readMessage()
		if err != nil {
			q.noteEnd(c, err)
			return
		}
		if c.src.reads != reads || now == 0 {
			now = time.Now().UnixNano()
		}
		q.handle(msg, now)
	}
}

var (
	codeTimeout     = []byte("TIMEOUT")
	codeRateLimited = []byte("RATE_LIMITED")
)

func (q *requester) handle(msg []byte, now int64) {
	switch string(envType(msg)) {
	case "command_response":
		q.answer(msg, now)
	case "error":
		q.noteOther(msg)
		code := stringField(msg, keyCode)
		if bytes.Equal(code, codeRateLimited) {
			q.rateLimited++
		}
		p, seq, ok := parseCommandID(stringField(msg, keyRequestID))
		if !ok || p != q.pub.index || seq < 0 || seq >= q.seqLimit {
			return
		}
		dup, _ := q.track.observe(seq)
		if dup || seq < q.pub.winSeq.Load() {
			return
		}
		q.refused++
		if bytes.Equal(code, codeTimeout) {
			q.timeouts++
		}
		q.settled.Add(1)
	default:
		q.noteOther(msg)
	}
}

func (q *requester) answer(msg []byte, now int64) {
	t, p, seq, ok := parseTPS(msg, keyResult)
	if !ok || p != q.pub.index || seq < 0 || seq >= q.seqLimit {
		q.unplanned++
		return
	}
	if st := stringField(msg, keyStatus); string(st) != "success" {
		q.unplanned++
		return
	}
	dup, ooo := q.track.observe(seq)
	if t < q.windowStart {
		return
	}
	switch {
	case dup:
		q.dup++
	case ooo:
		q.ooo++
		fallthrough
	default:
		q.answered++
		q.settled.Add(1)
		q.lat.add(time.Duration(now - t))
	}
}

// command runs the command scenario.
func (r *runner) command(ctx context.Context) (Result, error) {
	cfg := r.cfg
	res := Result{Scenario: cfg.Scenario, Params: cfg.Params(), Runs: 1,
		Handlers: cfg.Handlers, Requesters: cfg.Requesters, Channels: 1, Conns: cfg.TotalConns(),
		Rate: cfg.Rate, WarmupS: cfg.Warmup.Seconds(), DurationS: cfg.Duration.Seconds()}
	ctx, cancel := context.WithTimeout(ctx, 2*cfg.ConnectTimeout+cfg.Warmup+cfg.Duration+cfg.Drain+30*time.Second)
	defer cancel()

	channel := "cmd_" + r.tag
	ratePer := cfg.Rate / float64(cfg.Requesters)
	seqLimit := int64(math.Ceil(ratePer*(cfg.Warmup+cfg.Duration+time.Second).Seconds())) + maxBatch
	hists := newHistSet(cfg.Requesters)

	handlers := make([]*echoHandler, cfg.Handlers)
	hSpecs := make([]connSpec, cfg.Handlers)
	for i := range handlers {
		handlers[i] = &echoHandler{index: i, room: cfg.Room, ch: channel}
		hSpecs[i] = connSpec{addr: cfg.handlerAddr(i), id: fmt.Sprintf("ld%s_h%d", r.tag, i), channel: channel, readBuf: subReadBuf,
			joinParams: handlerJoinParams}
	}
	reqs := make([]*requester, cfg.Requesters)
	rSpecs := make([]connSpec, cfg.Requesters)
	for i := range reqs {
		p := &publisher{
			index: int64(i), room: cfg.Room, channel: channel, rate: ratePer, command: true,
			phase: time.Duration(float64(i) / float64(cfg.Requesters) / ratePer * float64(time.Second)),
		}
		p.winSeq.Store(math.MaxInt64)
		reqs[i] = &requester{pub: p, seqLimit: seqLimit, track: seqTrack{maxSeq: -1},
			lat: latRecorder{shard: hists.shard(i), buf: make([]int64, 0, latBatch)}}
		// Requesters join the channel too, as a client of a service usually does; the server
		// would forward their commands either way.
		rSpecs[i] = connSpec{id: fmt.Sprintf("ld%s_q%d", r.tag, i), channel: channel, readBuf: pubReadBuf}
	}

	cfg.Logf("connecting %d %s handlers and %d requesters to %s (%d at a time)",
		cfg.Handlers, EchoCommand, cfg.Requesters, cfg.Addr, cfg.ConnectConcurrency)
	t0 := time.Now()
	hConns, err := r.connectAll(ctx, hSpecs, nil)
	if err != nil {
		return res, fmt.Errorf("setting up handlers: %w", err)
	}
	rConns, err := r.connectAll(ctx, rSpecs, nil)
	if err != nil {
		closeAll(hConns)
		return res, fmt.Errorf("setting up requesters: %w", err)
	}
	res.ConnectS = time.Since(t0).Seconds()
	res.ConnectPerSec = float64(res.Conns) / res.ConnectS

	start := time.Now().Add(startDelay)
	windowStart := start.Add(cfg.Warmup)
	end := windowStart.Add(cfg.Duration)
	watch := startStorageWatch(ctx, cfg.MetricsURL, windowStart, end)
	cpu := startCPUWatch(ctx, cfg.ServerPIDs, cfg.RedisPID, windowStart, end)

	var readers sync.WaitGroup
	for i, h := range handlers {
		h.c = hConns[i]
		readers.Go(h.run)
	}
	for i, q := range reqs {
		q.pub.c = rConns[i]
		q.windowStart = windowStart.UnixNano()
		readers.Go(q.run)
	}

	cfg.Logf("sending %g %s/s from %d requesters: %s warm-up, then %s measured",
		cfg.Rate, EchoCommand, cfg.Requesters, cfg.Warmup, cfg.Duration)
	var pubWG sync.WaitGroup
	for _, q := range reqs {
		pubWG.Go(func() { q.pub.run(ctx, start, windowStart, end) })
	}
	pubWG.Wait()

	var expected, sentAll int64
	for _, q := range reqs {
		expected += q.pub.sentWindow
		sentAll += q.pub.sent
	}
	cfg.Logf("sending done; waiting up to %s for %d answers", cfg.Drain, expected)
	waitDrain(ctx, cfg.Drain, expected, func() (got int64) {
		for _, q := range reqs {
			got += q.settled.Load()
		}
		return got
	})
	watch.finish(ctx, &res, sentAll)
	closeAll(rConns)
	closeAll(hConns)
	readers.Wait()
	if err := ctx.Err(); err != nil {
		return res, fmt.Errorf("run cut short: %w", err)
	}

	var refused int64
	for _, q := range reqs {
		p := q.pub
		res.Sent += p.sentWindow
		res.SendLagMaxMs = max(res.SendLagMaxMs, ms(p.maxLag))
		if p.err != nil {
			res.PublishErrors++
			res.noteFirst("send: " + p.err.Error())
		}
		res.Delivered += q.answered
		refused += q.refused
		res.Timeouts += q.timeouts
		res.RateLimited += q.rateLimited
		res.Dup += q.dup
		res.OutOfOrder += q.ooo
		res.Unplanned += q.unplanned
		res.addStats(&q.connStats)
	}
	for _, h := range handlers {
		res.Unplanned += h.unknown
		res.addStats(&h.connStats)
		if h.writeErr != nil {
			res.PublishErrors++
			res.noteFirst("handler write: " + h.writeErr.Error())
		}
	}
	res.Expected = expected
	res.Lost = expected - res.Delivered - refused // neither answered nor refused within the drain
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
