package persist

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/rueidis"
)

// RedisOptions configures a Redis store. Zero values take the defaults.
type RedisOptions struct {
	URL         string // redis://[user:password@]host:port[/db]; default redis://127.0.0.1:6379
	HistorySize int    // entries kept per channel stream and memory ring; default 500
	// ChannelBytes and TotalBytes bound the memory rings by bytes, per channel and in total (see
	// Limits; 0: no bound). Streams are bounded by HistorySize only: Redis trims by count.
	ChannelBytes, TotalBytes int64
	// Buffer bounds the writes waiting for Redis (ARQONBUS_PERSIST_BUFFER) across all shards together;
	// beyond it the oldest are dropped. Each shard may hold one batch in flight on top. Default 100000.
	Buffer     int
	Shards     int           // writer goroutines; default 4
	BatchSize  int           // XADDs per pipelined round trip; default 256
	FlushEvery time.Duration // how long a writer waits for a batch to fill; default 2ms, negative: never
	KeyPrefix  string        // default "arqonbus"
	Logger     *slog.Logger  // state changes only; default slog.Default()
	// OnStateChange is called on each change between ok and degraded, in order, from a background
	// goroutine; it must not block. A store that starts degraded reports that in Health, not here.
	OnStateChange func(Health)
}

// Defaults of RedisOptions.
const (
	DefaultRedisURL    = "redis://127.0.0.1:6379"
	DefaultHistorySize = 500
	DefaultBuffer      = 100000
	DefaultShards      = 4
	DefaultBatchSize   = 256
	DefaultFlushEvery  = 2 * time.Millisecond
	DefaultKeyPrefix   = "arqonbus"
)

const (
	entryField     = "e"
	writeTimeout   = 5 * time.Second
	readTimeout    = 2 * time.Second
	pingTimeout    = time.Second
	probeEvery     = 250 * time.Millisecond
	monitorEvery   = time.Second
	connectBackoff = time.Second
)

// ErrUnavailable is returned by registry operations while Redis cannot be reached.
var ErrUnavailable = errors.New("persist: redis unavailable")

func (o *RedisOptions) setDefaults() {
	if o.URL == "" {
		o.URL = DefaultRedisURL
	}
	if o.HistorySize <= 0 {
		o.HistorySize = DefaultHistorySize
	}
	if o.Buffer <= 0 {
		o.Buffer = DefaultBuffer
	}
	if o.Shards <= 0 {
		o.Shards = DefaultShards
	}
	if o.BatchSize <= 0 {
		o.BatchSize = DefaultBatchSize
	}
	if o.FlushEvery == 0 {
		o.FlushEvery = DefaultFlushEvery
	}
	if o.KeyPrefix == "" {
		o.KeyPrefix = DefaultKeyPrefix
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
}

// Redis is a Store on Redis Streams: one stream per channel, key "<prefix>:{<channel>}:stream" (the
// channel is the hash tag, so Redis Cluster works), trimmed with MAXLEN ~ HistorySize; the registry of
// created channels is the hash "<prefix>:{channels}". A channel's registry writes and the deletion of
// its stream go through the channel's writer shard with its history, so they land in the order made.
//
// Append adds the entry to the channel's memory ring and to the queue of the channel's writer shard, and
// returns. Each shard's writer goroutine sends its queue in order as pipelined batches of XADD with the
// entry's position as the explicit id, and calls done(nil) per entry once Redis acknowledged it. Writes
// that fail for want of Redis stay at the front of the queue (bounded by Buffer, oldest dropped beyond
// it) and are retried in order once a PING succeeds again; a retried XADD that Redis rejects as not
// greater than the stream's top means the earlier attempt did land, so every entry is stored once.
//
// While degraded (Redis unreachable, writes failing, or never connected since start) reads are served
// from the rings; the store keeps trying to connect in the background.
//
// Trimming is approximate (MAXLEN ~): a stream keeps at least HistorySize entries and at most about one
// stream node more (stream-node-max-entries, 100 by default), so Redis reads may reach slightly further
// back than the rings. Exact trimming would cost Redis more on every write for no gain to a client.
type Redis struct {
	o           RedisOptions
	log         *slog.Logger
	clientOpt   rueidis.ClientOption
	client      atomic.Pointer[clientBox]
	channels    *channelTable
	shards      []*shard
	maxlen      string
	registryKey string
	errOverflow error

	ctx     context.Context // canceled when Close gives up
	cancel  context.CancelFunc
	closing chan struct{} // Close called: flush and stop
	abort   chan struct{} // Close's ctx expired: give up what is left
	stop    chan struct{} // stops the monitor and the connector
	once    sync.Once
	writers sync.WaitGroup
	bg      sync.WaitGroup

	stateMu       sync.Mutex
	notifyMu      sync.Mutex
	connected     bool
	pingFailed    bool
	failingShards int
	since         time.Time
	lastErr       string
	degraded      atomic.Bool

	written   atomic.Uint64
	dropped   atomic.Uint64
	abandoned atomic.Uint64
	landed    atomic.Uint64 // retries found already stored (observability for tests)
}

type clientBox struct{ c rueidis.Client }

var _ Store = (*Redis)(nil)

// NewRedis returns a Redis store. It fails only on bad options: when Redis cannot be reached it starts
// degraded (memory reads, writes buffered) and keeps connecting in the background, backing off up to
// one second between attempts. ctx bounds nothing after NewRedis returns.
func NewRedis(ctx context.Context, o RedisOptions) (*Redis, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("persist: new redis store: %w", err)
	}
	o.setDefaults()
	copt, err := ClientOption(o.URL)
	if err != nil {
		return nil, fmt.Errorf("persist: %w", err)
	}
	s := &Redis{
		o:           o,
		log:         o.Logger,
		clientOpt:   copt,
		maxlen:      strconv.Itoa(o.HistorySize),
		registryKey: o.KeyPrefix + ":{channels}",
		errOverflow: fmt.Errorf("persist: write dropped: more than %d writes waiting for redis", o.Buffer),
		closing:     make(chan struct{}),
		abort:       make(chan struct{}),
		stop:        make(chan struct{}),
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	queued := new(atomic.Int64)
	for range o.Shards {
		s.shards = append(s.shards, newShard(o.Buffer, queued))
	}
	s.channels = newChannelTable(Limits{Entries: o.HistorySize, ChannelBytes: o.ChannelBytes, TotalBytes: o.TotalBytes},
		func(channel string, r *Ring) *channelState {
			return &channelState{ring: r, key: s.streamKey(channel), shard: s.shardOf(channel)}
		})

	if c, err := rueidis.NewClient(copt); err == nil {
		s.client.Store(&clientBox{c})
		s.connected = true
	} else {
		s.since = time.Now()
		s.lastErr = err.Error()
		s.degraded.Store(true)
		s.log.Warn("persist: redis unreachable at start; running degraded on memory history, retrying",
			"url", redactURL(o.URL), "error", err)
		s.bg.Add(1)
		go s.connect()
	}
	s.bg.Add(1)
	go s.monitor()
	for _, sh := range s.shards {
		s.writers.Add(1)
		go s.writer(sh)
	}
	return s, nil
}

// ClientOption is how ArqonBus connects to the Redis at url (a redis:// URL of a standalone Redis or of
// any node of a Redis Cluster): no client-side cache, one second to connect, writes bounded.
func ClientOption(redisURL string) (rueidis.ClientOption, error) {
	copt, err := rueidis.ParseURL(redisURL)
	if err != nil {
		// Not wrapped: rueidis's error quotes the URL, password included.
		return copt, fmt.Errorf("redis url %q is not a valid redis:// URL", redactURL(redisURL))
	}
	copt.DisableCache = true
	if copt.Dialer.Timeout == 0 {
		copt.Dialer.Timeout = time.Second
	}
	copt.ConnWriteTimeout = writeTimeout
	return copt, nil
}

// streamKey is the key of the channel's history stream.
func (s *Redis) streamKey(channel string) string { return s.o.KeyPrefix + ":{" + channel + "}:stream" }

// shardOf is the writer shard of the channel: all its writes, history and registry, go through it, in
// order.
func (s *Redis) shardOf(channel string) *shard {
	return s.shards[hashString(channel)%uint32(len(s.shards))]
}

func hashString(s string) uint32 { // FNV-1a
	h := uint32(2166136261)
	for i := 0; i < len(s); i++ {
		h ^= uint32(s[i])
		h *= 16777619
	}
	return h
}

// redactURL hides a URL's password for logs and errors; a URL that does not parse is not echoed at
// all, since where its password would be is unknown.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Redacted()
}

func (s *Redis) getClient() rueidis.Client {
	if b := s.client.Load(); b != nil {
		return b.c
	}
	return nil
}

// connect makes the client when Redis was unreachable at start.
func (s *Redis) connect() {
	defer s.bg.Done()
	delay := 50 * time.Millisecond
	t := time.NewTimer(delay)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		c, err := rueidis.NewClient(s.clientOpt)
		if err == nil {
			s.client.Store(&clientBox{c})
			s.log.Info("persist: connected to redis", "url", redactURL(s.o.URL))
			s.setState(func() { s.connected = true }, nil)
			for _, sh := range s.shards {
				sh.wake()
			}
			return
		}
		s.noteError(err)
		delay = min(2*delay, connectBackoff)
		t.Reset(delay)
	}
}

// monitor PINGs Redis: every second while ok, to notice an outage when nothing is written, and every
// probeEvery while degraded, to clear an outage noticed by a read or a PING.
func (s *Redis) monitor() {
	defer s.bg.Done()
	t := time.NewTimer(monitorEvery)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		if c := s.getClient(); c != nil {
			err := s.ping(c)
			s.setState(func() { s.pingFailed = err != nil }, err)
		}
		if s.degraded.Load() {
			t.Reset(probeEvery)
		} else {
			t.Reset(monitorEvery)
		}
	}
}

func (s *Redis) ping(c rueidis.Client) error {
	ctx, cancel := context.WithTimeout(s.ctx, pingTimeout)
	defer cancel()
	return c.Do(ctx, c.B().Ping().Build()).Error()
}

// setState applies change under the state lock (err, if not nil, becomes LastError) and reports a
// transition between ok and degraded to the log and OnStateChange, in order.
func (s *Redis) setState(change func(), err error) {
	s.stateMu.Lock()
	was := s.degradedLocked()
	change()
	if err != nil {
		s.lastErr = err.Error()
	}
	now := s.degradedLocked()
	if was == now {
		s.stateMu.Unlock()
		return
	}
	began := s.since
	if now {
		s.since = time.Now()
	} else {
		s.since = time.Time{}
	}
	s.degraded.Store(now)
	h := s.healthLocked()
	s.notifyMu.Lock()
	s.stateMu.Unlock()
	defer s.notifyMu.Unlock()
	if now {
		s.log.Warn("persist: redis degraded: history reads from memory, writes buffered",
			"error", h.LastError, "backlog", h.Backlog)
	} else {
		s.log.Info("persist: redis ok", "degraded_for", time.Since(began).Round(time.Millisecond),
			"backlog", h.Backlog, "dropped", h.Dropped)
	}
	if s.o.OnStateChange != nil {
		s.o.OnStateChange(h)
	}
}

func (s *Redis) noteError(err error) {
	s.stateMu.Lock()
	s.lastErr = err.Error()
	s.stateMu.Unlock()
}

func (s *Redis) degradedLocked() bool {
	return !s.connected || s.pingFailed || s.failingShards > 0
}

func (s *Redis) healthLocked() Health {
	h := Health{
		Mode:      ModeRedis,
		Status:    StatusOK,
		Dropped:   s.dropped.Load(),
		Written:   s.written.Load(),
		LastError: s.lastErr,
		Since:     s.since,
	}
	if s.degradedLocked() {
		h.Status = StatusDegraded
	}
	for _, sh := range s.shards {
		h.Backlog += int(sh.backlog.Load())
	}
	return h
}

// Health reports the store's state.
func (s *Redis) Health() Health {
	s.stateMu.Lock()
	defer s.stateMu.Unlock()
	return s.healthLocked()
}

// Append records e in the channel's ring and queues it for Redis; it never blocks on I/O.
func (s *Redis) Append(channel string, e Entry, done func(error)) {
	cs := s.channels.append(channel, e)
	s.queue(cs.shard, pending{key: cs.key, e: e, done: done})
}

// queue hands p to its channel's writer shard.
func (s *Redis) queue(sh *shard, p pending) {
	switch sh.push(p, s.o.BatchSize) {
	case pushed:
	case pushedDroppedOldest:
		s.dropped.Add(1)
	case pushClosed:
		s.dropped.Add(1)
		if p.done != nil {
			go p.done(ErrClosed)
		}
	}
}

// Remember adds e to the channel's memory ring only. In a cluster the publish script has already
// written the entry to the stream; each node keeps its own copy for replays.
func (s *Redis) Remember(channel string, e Entry) {
	s.channels.append(channel, e)
}

// Forget drops the channel's memory ring; its stream stays, trimmed by count, for history reads.
func (s *Redis) Forget(channel string) { s.channels.forget(channel) }

// Channels is how many channels the store keeps memory rings of, and the bytes those hold.
func (s *Redis) Channels() (channels int, bytes int64) { return s.channels.len(), s.channels.bytes() }

// DropRing empties the channel's memory ring: the stream lost entries this node never read, so
// replays from before the next entry must not pass for complete.
func (s *Redis) DropRing(channel string) {
	if cs := s.channels.get(channel); cs != nil {
		cs.ring.Drop()
	}
}

// writer sends one shard's queue to Redis, in order, until Close.
func (s *Redis) writer(sh *shard) {
	defer s.writers.Done()
	batch := make([]pending, 0, s.o.BatchSize)
	var retry []pending
	linger := time.NewTimer(time.Hour)
	linger.Stop()
	for {
		s.failDone(sh.takeDropped(), s.errOverflow)
		select {
		case <-s.abort:
			s.giveUp(sh)
			return
		default:
		}
		if sh.queued() == 0 {
			select {
			case <-s.closing:
				if sh.closeIfEmpty() {
					return
				}
				continue
			default:
			}
			select {
			case <-sh.kick:
			case <-s.closing:
			case <-s.abort:
			}
			continue
		}
		if s.o.FlushEvery > 0 && sh.queued() < s.o.BatchSize && !isClosed(s.closing) {
			s.linger(sh, linger)
		}
		batch = sh.take(batch[:0], s.o.BatchSize)
		var err error
		retry, err = s.write(sh, batch, retry[:0])
		clear(batch)
		if len(retry) == 0 {
			if sh.failing && sh.queued() <= s.o.BatchSize {
				sh.failing = false
				s.setState(func() { s.failingShards-- }, nil)
			}
			continue
		}
		dropped := sh.requeue(retry)
		clear(retry)
		for i := range dropped {
			s.finish(sh, &dropped[i], s.errOverflow)
		}
		if !sh.failing {
			sh.failing = true
			s.setState(func() { s.failingShards++ }, err)
		} else {
			s.noteError(err)
		}
		s.waitForRedis(sh)
	}
}

func isClosed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// linger waits up to FlushEvery for the shard's queue to fill a batch.
func (s *Redis) linger(sh *shard, t *time.Timer) {
	t.Reset(s.o.FlushEvery)
	defer t.Stop()
	for sh.queued() < s.o.BatchSize {
		select {
		case <-sh.kick:
		case <-t.C:
			return
		case <-s.closing:
			return
		case <-s.abort:
			return
		}
	}
}

// waitForRedis returns once a PING succeeds (at once, for a dropped connection, then every
// probeEvery) or Close gives up.
func (s *Redis) waitForRedis(sh *shard) {
	if c := s.getClient(); c != nil && s.ping(c) == nil {
		return
	}
	t := time.NewTimer(probeEvery)
	defer t.Stop()
	for {
		// Writes dropped while waiting: tell their senders now.
		s.failDone(sh.takeDropped(), s.errOverflow)
		select {
		case <-s.abort:
			return
		case <-sh.kick:
			continue
		case <-t.C:
		}
		if c := s.getClient(); c != nil && s.ping(c) == nil {
			return
		}
		t.Reset(probeEvery)
	}
}

// write sends batch as one pipeline and settles each entry: done(nil) for those Redis holds, done(err)
// for those it refused for good. It returns, in order, the entries to retry and the error that made
// them fail.
func (s *Redis) write(sh *shard, batch, retry []pending) ([]pending, error) {
	c := s.getClient()
	if c == nil {
		return append(retry, batch...), ErrUnavailable
	}
	var idBuf [48]byte
	// A new slice each batch, never cleared or reused: when DoMulti gives up (its context ends,
	// the connection breaks) it returns while rueidis's writer may still be reading the commands
	// from this very slice; clearing it made that writer panic on a nil command.
	cmds := make(rueidis.Commands, 0, len(batch))
	for i := range batch {
		p := &batch[i]
		switch p.op {
		case opAppend:
			cmds = append(cmds, c.B().Xadd().Key(p.key).Maxlen().Almost().Threshold(s.maxlen).
				Id(string(p.e.Position.AppendTo(idBuf[:0]))).
				FieldValue().FieldValue(entryField, rueidis.BinaryString(p.e.Data)).Build())
		case opSave:
			cmds = append(cmds, c.B().Hset().Key(p.key).FieldValue().FieldValue(p.field, p.value).Build())
		case opUnsave:
			cmds = append(cmds, c.B().Hdel().Key(p.key).Field(p.field).Build())
		case opDrop:
			cmds = append(cmds, c.B().Del().Key(p.key).Build())
		}
	}
	ctx, cancel := context.WithTimeout(s.ctx, writeTimeout)
	results := c.DoMulti(ctx, cmds...)
	cancel()
	var retryErr error
	for i := range batch {
		p := &batch[i]
		err := results[i].Error()
		switch classify(err) {
		case outcomeStored:
			s.finish(sh, p, nil)
		case outcomeExists:
			if !p.sent {
				s.finish(sh, p, fmt.Errorf("persist: position %s not stored: stream %s has a newer entry", p.e.Position, p.key))
				break
			}
			// An earlier attempt may have landed, or something else (another node, or the cluster's
			// publish of this very event whose reply was lost) wrote past the position: look.
			switch held, err := s.holds(c, p); {
			case err != nil:
				retry = append(retry, *p)
				retryErr = err
			case held:
				s.landed.Add(1)
				s.finish(sh, p, nil)
			default:
				s.finish(sh, p, fmt.Errorf("persist: position %s not stored: stream %s has a newer entry", p.e.Position, p.key))
			}
		case outcomeRetry:
			retry = append(retry, *p)
			retryErr = err
		case outcomeUnknown:
			p.sent = true
			retry = append(retry, *p)
			retryErr = err
		case outcomeRefused:
			s.finish(sh, p, fmt.Errorf("persist: position %s refused by redis: %w", p.e.Position, err))
		}
	}
	return retry, retryErr
}

// holds reports whether the stream holds p's entry at its position: after an attempt with an unknown
// outcome, Redis refusing the position as not above the stream's top does not say who wrote there.
func (s *Redis) holds(c rueidis.Client, p *pending) (bool, error) {
	id := p.e.Position.String()
	ctx, cancel := context.WithTimeout(s.ctx, readTimeout)
	defer cancel()
	entries, err := parseEntries(c.Do(ctx, c.B().Xrange().Key(p.key).Start(id).End(id).Build()), false)
	if err != nil {
		return false, err
	}
	return len(entries) == 1 && bytes.Equal(entries[0].Data, p.e.Data), nil
}

// finish settles one write: counted, its done called, and (for writes taken from a shard) the
// shard's backlog reduced.
func (s *Redis) finish(sh *shard, p *pending, err error) {
	if err == nil {
		if p.op == opAppend {
			s.written.Add(1)
		}
	} else {
		s.dropped.Add(1)
	}
	sh.backlog.Add(-1)
	if p.done != nil {
		p.done(err)
	}
}

func (s *Redis) failDone(dones []func(error), err error) {
	for _, d := range dones {
		d(err)
	}
}

// giveUp fails everything left in the shard after Close's deadline.
func (s *Redis) giveUp(sh *shard) {
	s.failDone(sh.takeDropped(), s.errOverflow)
	rest := sh.closeAndDrain()
	s.abandoned.Add(uint64(len(rest)))
	for i := range rest {
		s.finish(sh, &rest[i], ErrClosed)
	}
}

type outcome int

const (
	outcomeStored  outcome = iota
	outcomeExists          // the id is not above the stream's top
	outcomeRetry           // refused for now (loading, out of memory, failover): not stored
	outcomeUnknown         // connection trouble or timeout: maybe stored
	outcomeRefused         // refused for good
)

func classify(err error) outcome {
	if err == nil {
		return outcomeStored
	}
	re, ok := rueidis.IsRedisErr(err)
	if !ok {
		return outcomeUnknown
	}
	msg := re.Error()
	if strings.Contains(msg, "equal or smaller than the target stream top") {
		return outcomeExists
	}
	code, _, _ := strings.Cut(msg, " ")
	switch code {
	case "LOADING", "BUSY", "TRYAGAIN", "CLUSTERDOWN", "MASTERDOWN", "READONLY", "NOREPLICAS", "OOM",
		"NOAUTH", "NOPERM", "WRONGPASS", "MOVED", "ASK":
		return outcomeRetry
	}
	return outcomeRefused
}

// readCtx bounds a Redis read by readTimeout within ctx.
func readCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, readTimeout)
}

// readFailed handles a read error: a reply from Redis is returned to the caller; connection trouble
// marks the store degraded (the monitor clears it) and the caller answers from memory.
func (s *Redis) readFailed(ctx context.Context, err error) (fallback bool, _ error) {
	if ctx.Err() != nil {
		return false, ctx.Err()
	}
	if _, ok := rueidis.IsRedisErr(err); ok {
		return false, err
	}
	s.setState(func() { s.pingFailed = true }, err)
	return true, nil
}

func spanIDs(sp span) (lo, hi string) {
	lo, hi = "-", "+"
	if !sp.lo.IsZero() {
		lo = sp.lo.String()
	}
	if sp.hi != maxPosition {
		hi = sp.hi.String()
	}
	return lo, hi
}

// Range reads the channel's history from Redis, plus entries newer than Redis's answer that are still
// on their way there; while degraded, or when Redis cannot be reached, it reads the memory ring.
func (s *Redis) Range(ctx context.Context, channel string, q Query) ([]Entry, error) {
	sp, ok := q.span()
	if !ok {
		return nil, nil
	}
	cs := s.channels.get(channel)
	c := s.getClient()
	if c == nil || s.degraded.Load() {
		return ringSpan(cs, sp), nil
	}
	key := s.streamKey(channel)
	if cs != nil {
		key = cs.key
	}
	lo, hi := spanIDs(sp)
	var cmd rueidis.Completed
	if sp.fromLo {
		cmd = c.B().Xrange().Key(key).Start(lo).End(hi).Count(int64(sp.limit)).Build()
	} else {
		cmd = c.B().Xrevrange().Key(key).End(hi).Start(lo).Count(int64(sp.limit)).Build()
	}
	rctx, cancel := readCtx(ctx)
	defer cancel()
	entries, err := parseEntries(c.Do(rctx, cmd), !sp.fromLo)
	if err != nil {
		fallback, err := s.readFailed(ctx, err)
		if !fallback {
			return nil, fmt.Errorf("persist: history of %q (%s): %w", channel, q, err)
		}
		return ringSpan(cs, sp), nil
	}
	return mergePending(entries, cs, sp), nil
}

func ringSpan(cs *channelState, sp span) []Entry {
	if cs == nil {
		return nil
	}
	return cs.ring.rangeSpan(sp)
}

// mergePending adds the ring's entries newer than the newest one Redis returned (written meanwhile or
// still queued), keeping the query's limit rule.
func mergePending(entries []Entry, cs *channelState, sp span) []Entry {
	if cs == nil {
		return entries
	}
	tail := sp
	if n := len(entries); n > 0 {
		next, ok := entries[n-1].Position.next()
		if !ok {
			return entries
		}
		tail.lo = next
	}
	if tail.hi.Less(tail.lo) {
		return entries
	}
	if sp.fromLo {
		tail.limit = sp.limit - len(entries)
		if tail.limit <= 0 {
			return entries
		}
		return append(entries, cs.ring.rangeSpan(tail)...)
	}
	more := cs.ring.rangeSpan(tail)
	if len(more) == 0 {
		return entries
	}
	entries = append(entries, more...)
	if len(entries) > sp.limit {
		entries = entries[len(entries)-sp.limit:]
	}
	return entries
}

// ParseStream reads an XRANGE (or, with reverse, XREVRANGE) reply of a history stream into entries,
// oldest first.
func ParseStream(res rueidis.RedisResult, reverse bool) ([]Entry, error) {
	return parseEntries(res, reverse)
}

// parseEntries reads an XRANGE or XREVRANGE reply; reverse turns the latter oldest first. Entries that
// are not ours (bad id, no entry field) are skipped.
func parseEntries(res rueidis.RedisResult, reverse bool) ([]Entry, error) {
	items, err := res.ToArray()
	if err != nil {
		return nil, err
	}
	out := make([]Entry, 0, len(items))
	for i := range items {
		kv, err := items[i].ToArray()
		if err != nil || len(kv) != 2 {
			continue
		}
		id, err := kv[0].ToString()
		if err != nil {
			continue
		}
		pos, ok := ParsePosition(id)
		if !ok {
			continue
		}
		fields, err := kv[1].ToArray()
		if err != nil {
			continue
		}
		for j := 0; j+1 < len(fields); j += 2 {
			if f, err := fields[j].ToString(); err != nil || f != entryField {
				continue
			}
			if data, err := fields[j+1].AsBytes(); err == nil {
				out = append(out, Entry{Position: pos, Data: data})
			}
			break
		}
	}
	if reverse {
		for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
			out[i], out[j] = out[j], out[i]
		}
	}
	return out, nil
}

// Recent answers q from the channel's memory ring (see Store). The ring holds what this process
// appended, so a Since from before that is incomplete: read the rest with Range.
func (s *Redis) Recent(channel string, q Query) ([]Entry, bool) {
	return recent(s.channels.get(channel), q, false)
}

// Last returns the channel's newest position, in Redis or still on its way there. While degraded it
// answers from memory, which after a restart may know less than Redis; Clock.Next follows the wall
// clock, so positions stay increasing unless the clock went back.
func (s *Redis) Last(ctx context.Context, channel string) (Position, bool, error) {
	cs := s.channels.get(channel)
	var last Position
	var found bool
	if cs != nil {
		last, found = cs.ring.Last()
	}
	c := s.getClient()
	if c == nil || s.degraded.Load() {
		return last, found, nil
	}
	key := s.streamKey(channel)
	rctx, cancel := readCtx(ctx)
	defer cancel()
	entries, err := parseEntries(c.Do(rctx, c.B().Xrevrange().Key(key).End("+").Start("-").Count(1).Build()), false)
	if err != nil {
		fallback, err := s.readFailed(ctx, err)
		if !fallback {
			return Position{}, false, fmt.Errorf("persist: last position of %q: %w", channel, err)
		}
		return last, found, nil
	}
	if len(entries) == 1 && (!found || last.Less(entries[0].Position)) {
		return entries[0].Position, true, nil
	}
	return last, found, nil
}

func (s *Redis) registryClient() (rueidis.Client, error) {
	c := s.getClient()
	if c == nil {
		return nil, ErrUnavailable
	}
	return c, nil
}

// SaveChannel queues the channel's registry entry (HSET) behind the channel's other writes.
func (s *Redis) SaveChannel(channel string, created time.Time, done func(error)) {
	s.queue(s.shardOf(channel), pending{op: opSave, key: s.registryKey, field: channel,
		value: created.UTC().Format(time.RFC3339Nano), done: done})
}

// DeleteChannel drops the channel's ring and queues, behind the channel's other writes, the deletion
// of its stream (DEL) and of its registry entry (HDEL); done hears the latter.
func (s *Redis) DeleteChannel(channel string, done func(error)) {
	s.channels.forget(channel)
	sh := s.shardOf(channel)
	s.queue(sh, pending{op: opDrop, key: s.streamKey(channel)})
	s.queue(sh, pending{op: opUnsave, key: s.registryKey, field: channel, done: done})
}

// LoadChannels returns the registry: channel to creation time (zero if unreadable).
func (s *Redis) LoadChannels(ctx context.Context) (map[string]time.Time, error) {
	c, err := s.registryClient()
	var m map[string]string
	if err == nil {
		rctx, cancel := readCtx(ctx)
		defer cancel()
		m, err = c.Do(rctx, c.B().Hgetall().Key(s.registryKey).Build()).AsStrMap()
	}
	if err != nil {
		return nil, fmt.Errorf("persist: load channels: %w", err)
	}
	out := make(map[string]time.Time, len(m))
	for ch, v := range m {
		t, _ := time.Parse(time.RFC3339Nano, v)
		out[ch] = t
	}
	return out, nil
}

// Close writes what is queued, including a backlog held through an outage, until ctx ends; writes
// left then get done(ErrClosed). It then closes the connection. Close is idempotent.
func (s *Redis) Close(ctx context.Context) error {
	var err error
	s.once.Do(func() {
		close(s.closing)
		flushed := make(chan struct{})
		go func() {
			s.writers.Wait()
			close(flushed)
		}()
		select {
		case <-flushed:
		case <-ctx.Done():
			close(s.abort)
			s.cancel()
			<-flushed
			err = fmt.Errorf("persist: close: %d writes not flushed to redis: %w", s.abandoned.Load(), ctx.Err())
		}
		close(s.stop)
		s.bg.Wait()
		if c := s.getClient(); c != nil {
			c.Close()
		}
		s.cancel()
	})
	return err
}
