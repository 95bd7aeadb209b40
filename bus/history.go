package bus

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/bytedance/sonic"

	"github.com/arqonbus/arqonbus/codec"
	"github.com/arqonbus/arqonbus/commands"
	"github.com/arqonbus/arqonbus/engine"
	"github.com/arqonbus/arqonbus/fanout"
	"github.com/arqonbus/arqonbus/persist"
)

// chanState is the bus's per-channel state (fanout.Channel.State).
type chanState struct {
	name  string        // "room:channel": the store's key, made once
	clock persist.Clock // history positions; guarded by the channel lock
	// outbox holds this node's events on their way through Redis, in the order they left (cluster
	// only); guarded by the channel lock.
	outbox []*outgoing
	// ghosts are events routed here when their way through Redis failed midway (cluster only);
	// guarded by the channel lock.
	ghosts []ghost
}

// NewChannelState makes the bus's state for a new channel: pass it to the
// hub as fanout.Options.NewState.
func NewChannelState(k fanout.Key) any { return &chanState{name: k.String()} }

func stateOf(ch *fanout.Channel) *chanState { return ch.State.(*chanState) }

// publishing stamps an event under its channel's lock: the next history
// position, the routed frame (the sender's envelope plus position and
// receive time under metadata), and the store write, so that positions,
// store order and delivery order agree. One per session, reused.
type publishing struct {
	b      *Bus
	env    *codec.Envelope
	sender *engine.Conn
	now    time.Time
	pos    persist.Position
	done   func(error) // for a sync ack
}

// routedSlack covers what AppendRouted writes besides the sender's values:
// field names and quotes (~125 bytes) and the server's metadata (<= 96), so
// the routed frame is one allocation (BenchmarkMessageEvent shows it).
const routedSlack = 256

func (p *publishing) Prepare(ch *fanout.Channel) ([]byte, *engine.Conn) {
	st := stateOf(ch)
	p.pos = st.clock.Next(p.now)
	var scratch [96]byte
	extra := append(scratch[:0], `"position":"`...)
	extra = p.pos.AppendTo(extra)
	extra = append(extra, `","received_at":`...)
	extra = codec.AppendTimestamp(extra, p.now)
	e := p.env
	buf := make([]byte, engine.HeaderRoom, engine.HeaderRoom+len(e.Payload)+len(e.Metadata)+len(e.ID)+len(e.From)+len(e.Room)+len(e.Channel)+len(e.Timestamp)+routedSlack)
	buf = codec.AppendRouted(buf, e, extra)
	p.b.store.Append(st.name, persist.Entry{Position: p.pos, Data: buf[engine.HeaderRoom:]}, p.done)
	return engine.FinishText(buf), p.sender
}

// syncAck answers an event sent with metadata.ack in sync mode once both the
// routing (delivered count) and the store (durable or not) have reported,
// whichever comes last, or when the deadline passes first.
type syncAck struct {
	b         *Bus
	conn      *engine.Conn
	env       *codec.Envelope
	pos       persist.Position
	delivered int
	err       error
	arrivals  atomic.Int32
	answered  atomic.Bool // the one answer was sent (or is being)
	deadline  *time.Timer
}

// newSyncAck waits for env's routing and storage, at most the command
// timeout: through a Redis outage the store holds the write (and its done)
// until Redis returns, and a publisher must not wait for that.
func (b *Bus) newSyncAck(conn *engine.Conn, env *codec.Envelope) *syncAck {
	a := &syncAck{b: b, conn: conn, env: env}
	a.deadline = time.AfterFunc(b.cfg.CommandTimeout, a.expire)
	return a
}

// stored hears the store's verdict, from a store goroutine (or the loop, for a store in memory).
func (a *syncAck) stored(err error) {
	defer a.b.recoverOffLoop("sync ack")
	a.err = err
	a.arrive()
}

func (a *syncAck) routed(delivered int, pos persist.Position) {
	a.delivered, a.pos = delivered, pos
	a.arrive()
}

func (a *syncAck) arrive() {
	if a.arrivals.Add(1) < 2 || !a.answered.CompareAndSwap(false, true) {
		return
	}
	a.deadline.Stop()
	if a.err != nil {
		a.b.sendErrorTo(a.conn, a.env.Room, a.env.Channel, a.env.ID,
			codec.Unavailable("routed but not persisted: "+a.err.Error()))
		return
	}
	a.conn.Send(a.b.responseFrame(a.env, ackResult(a.delivered, a.pos, true)))
}

// expire answers a publisher whose event the store has not made durable in
// time. The answer is TIMEOUT, not an ack: the event was routed, but it is
// not known to be persisted (it waits to be written when storage returns,
// and may be dropped if the outage buffer overflows meanwhile), and an ack
// in sync mode means persisted. Timer goroutine.
func (a *syncAck) expire() {
	defer a.b.recoverOffLoop("sync ack deadline")
	if !a.answered.CompareAndSwap(false, true) {
		return
	}
	a.b.sendErrorTo(a.conn, a.env.Room, a.env.Channel, a.env.ID, codec.Timeout(
		"routed, but not persisted within "+a.b.cfg.CommandTimeout.String()+
			": storage is unreachable; the event is kept to be written when it returns, unless the outage buffer overflows"))
}

func ackResult(delivered int, pos persist.Position, persisted bool) []byte {
	out := []byte(`{"routed":true,"delivered":`)
	out = appendInt(out, int64(max(delivered, 0)))
	if !pos.IsZero() {
		out = append(out, `,"position":"`...)
		out = pos.AppendTo(out)
		out = append(out, '"')
	}
	if persisted {
		out = append(out, `,"persisted":true`...)
	}
	return append(out, '}')
}

// historyReader adapts the store to the history command.
type historyReader struct{ b *Bus }

func (h historyReader) History(ctx context.Context, q commands.HistoryQuery) ([]commands.HistoryEntry, *codec.Error) {
	pq, cerr := toQuery(q.Limit, q.Since, q.Until)
	if cerr != nil {
		return nil, cerr
	}
	entries, err := h.b.store.Range(ctx, q.Key.String(), pq)
	if err != nil {
		return nil, codec.Unavailable("history read failed: " + err.Error())
	}
	out := make([]commands.HistoryEntry, len(entries))
	for i, e := range entries {
		out[i] = commands.HistoryEntry{Position: e.Position.String(), Envelope: e.Data}
	}
	return out, nil
}

func toQuery(limit int, since, until string) (persist.Query, *codec.Error) {
	q := persist.Query{Limit: limit}
	var err error
	if since != "" {
		if q.Since, err = persist.ParseBound(since); err != nil {
			return q, codec.Validation("payload.parameters.since", err.Error())
		}
	}
	if until != "" {
		if q.Until, err = persist.ParseBound(until); err != nil {
			return q, codec.Validation("payload.parameters.until", err.Error())
		}
	}
	return q, nil
}

// replayer sends a joining member what it missed, from the memory ring the
// store keeps of each channel's newest history.
type replayer struct{ b *Bus }

// Replay runs on c's loop (join_channel is not Blocking): its frames are
// written at once, ahead of any live event, as frames c asked for (the
// engine does not count them as a slow consumer's backlog while c reads).
// It sends what live delivery would have: events that filter matches, and
// none that c's client sent itself (a sender never gets its own event).
func (r replayer) Replay(since string, c *engine.Conn, filter fanout.Filter) (func(*fanout.Channel), *commands.ReplayResult, *codec.Error) {
	q, cerr := toQuery(persist.MaxLimit, since, "")
	if cerr != nil {
		return nil, nil, cerr
	}
	self := ""
	if s, ok := c.Value.(*session); ok {
		self = s.ID()
	}
	res := &commands.ReplayResult{}
	return func(ch *fanout.Channel) {
		// Under the channel lock: nothing is published between this read
		// and the join, so the replay and live delivery meet without a gap
		// or a duplicate.
		entries, complete := r.b.store.Recent(stateOf(ch).name, q)
		if n := len(entries); n > 0 {
			res.Last = entries[n-1].Position.String()
		}
		entries = missed(entries, self, filter)
		// The newest entries that fit the answer budget go; the older rest is left to history
		// (omitted_until), so that the seam with live delivery stays exact.
		from := newestWithin(entries, r.b.cfg.AnswerBytes)
		if from > 0 {
			res.OmittedUntil = entries[from-1].Position.String()
			complete = false
		}
		for _, e := range entries[from:] {
			c.WriteRequested(engine.TextFrame(e.Data))
		}
		res.Replayed = len(entries) - from
		res.Complete = complete
	}, res, nil
}

// missed keeps the entries a member with filter, whose client id is self, would have received live.
// entries is the store's copy, which is not modified.
func missed(entries []persist.Entry, self string, filter fanout.Filter) []persist.Entry {
	var kept []persist.Entry
	for i, e := range entries {
		var head struct {
			From string `json:"from"`
		}
		_ = sonic.ConfigDefault.Unmarshal(e.Data, &head)
		keep := head.From != self && (len(filter) == 0 || filter.Match(newRoutedAttrs(e.Data)))
		switch {
		case keep && kept != nil:
			kept = append(kept, e)
		case !keep && kept == nil:
			kept = append(make([]persist.Entry, 0, len(entries)-1), entries[:i]...)
		}
	}
	if kept == nil {
		return entries
	}
	return kept
}

// newestWithin is the index of the oldest of entries' newest run that fits in budget bytes of frames
// (at least one entry).
func newestWithin(entries []persist.Entry, budget int) int {
	from, size := len(entries), 0
	for from > 0 {
		n := len(entries[from-1].Data) + engine.HeaderRoom
		if from < len(entries) && size+n > budget {
			break
		}
		size += n
		from--
	}
	return from
}

// channelPosition is ch's newest position; the caller holds ch's lock.
func channelPosition(ch *fanout.Channel) string { return stateOf(ch).clock.Last().String() }

// SeedClock makes ch's next positions follow last (the newest position its
// history already holds, after a restart). Call it before serving.
func SeedClock(ch *fanout.Channel, last persist.Position) {
	stateOf(ch).clock.Observe(last)
}
