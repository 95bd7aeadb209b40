package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// position is a history position "<ms>-<seq>", compared numerically.
type position struct{ ms, seq uint64 }

func parsePosition(s string) (position, bool) {
	a, c, ok := strings.Cut(s, "-")
	if !ok {
		return position{}, false
	}
	ms, err1 := strconv.ParseUint(a, 10, 64)
	seq, err2 := strconv.ParseUint(c, 10, 64)
	return position{ms, seq}, err1 == nil && err2 == nil
}

func (p position) less(q position) bool { return p.ms < q.ms || (p.ms == q.ms && p.seq < q.seq) }

var (
	posKey      = []byte(`"position":"`)
	receivedKey = []byte(`","received_at":`)
)

// positionOf is metadata.position of a routed envelope. The server ends a
// routed envelope's metadata with "position":"<pos>","received_at":..., so
// the last such pair is found without decoding the whole metadata (half the
// Bus's cost per event otherwise); anything else is decoded.
func positionOf(env Envelope) string {
	if len(env.Metadata) == 0 {
		return ""
	}
	if i := bytes.LastIndex(env.Metadata, posKey); i >= 0 {
		rest := env.Metadata[i+len(posKey):]
		if j := bytes.IndexByte(rest, '"'); j > 0 && bytes.HasPrefix(rest[j:], receivedKey) {
			if _, ok := parsePosition(string(rest[:j])); ok {
				return string(rest[:j])
			}
		}
	}
	var m struct {
		Position string `json:"position"`
	}
	_ = json.Unmarshal(env.Metadata, &m)
	return m.Position
}

// Gap reasons.
const (
	// GapReplay: a resuming join could not replay everything missed: the
	// server no longer keeps the oldest part, or left it out for its size.
	GapReplay = "replay_incomplete"
	// GapOverflow: the application did not read Events fast enough and the
	// Subscription's buffer was full; the events in the gap were dropped.
	GapOverflow = "overflow"
)

// Gap says that events of a channel are missing at this point of the
// stream. History(ctx, channel, HistoryOptions{Since: g.Since, Until:
// g.Until}) pages through them when the server still keeps them.
type Gap struct {
	Reason string
	// Since is the last position delivered before the gap ("" if none).
	Since string
	// Until is the newest missing position, included ("" when the server
	// did not say: everything before the next event may be missing).
	Until string
}

// Event is one item of a Subscription's stream: an envelope (Gap == nil)
// or a notice that events are missing here (Gap != nil, Envelope zero).
type Event struct {
	Envelope
	// Position is metadata.position, the event's place in its channel.
	Position string
	Gap      *Gap
}

// Subscription is the Bus's membership of one channel.
//
// Its events come out of one channel, Events(), rather than a callback:
// the application reads at its own pace with select, range and contexts,
// and the Bus's reader never runs application code. The channel is bounded
// (Config.EventBuffer) and the reader waits on a full one only briefly
// (Config.OverflowWait, default 1 s: a GC pause or a busy moment is
// absorbed, and meanwhile TCP pushes back on the server). Past that, the
// event is dropped, and once there is room again the stream carries a Gap
// (Reason GapOverflow) naming the dropped positions, so a stuck consumer
// learns exactly what it missed (and can read it with History) while the
// connection, its other channels and its commands keep going. An
// application that keeps up sees every event once, in order, across
// reconnects.
type Subscription struct {
	bus           *Bus
	room, channel string

	ch   chan Event
	done chan struct{} // closed when the subscription ends

	mu        sync.Mutex
	closed    bool
	err       error
	last      string // position of the last event put in ch
	gap       *Gap   // overflow gap waiting for room in ch
	gapVer    int
	flushing  bool
	flushDone chan struct{}
	sending   sync.WaitGroup // a deliver waiting for room, without the lock
}

// Name is "room:channel".
func (s *Subscription) Name() string { return s.room + ":" + s.channel }

// Events delivers the channel's events in order; it is closed when the
// subscription ends (Leave, Bus.Close, or a failed rejoin: see Err).
func (s *Subscription) Events() <-chan Event { return s.ch }

// Done is closed when the subscription has ended.
func (s *Subscription) Done() <-chan struct{} { return s.done }

// Err is why the subscription ended; nil while it runs and after Leave.
func (s *Subscription) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// deliver puts ev in the stream (see Subscription). It runs on the reader
// goroutine only. When the buffer is full it waits up to wait for room,
// then drops ev into a pending Gap, which later events join without waiting.
func (s *Subscription) deliver(ev Event, wait time.Duration) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	if s.gap != nil {
		s.extendGap(ev)
		s.mu.Unlock()
		return
	}
	select {
	case s.ch <- ev:
		s.sent(ev)
		s.mu.Unlock()
		return
	default:
	}
	sent := false
	if wait > 0 {
		// Wait without the lock, so that the application's Leave or Close
		// can wake us (close waits for us before closing the channel).
		s.sending.Add(1)
		s.mu.Unlock()
		t := time.NewTimer(wait)
		select {
		case s.ch <- ev:
			sent = true
		case <-t.C:
		case <-s.done:
		}
		t.Stop()
		s.mu.Lock()
		s.sending.Done()
		if s.closed {
			s.mu.Unlock()
			return
		}
	}
	if sent {
		s.sent(ev)
	} else {
		s.gap = &Gap{Reason: GapOverflow, Since: s.last}
		s.extendGap(ev)
		if !s.flushing {
			s.flushing = true
			s.flushDone = make(chan struct{})
			go s.flush()
		}
	}
	s.mu.Unlock()
}

// sent records that ev went into the channel.
func (s *Subscription) sent(ev Event) {
	if ev.Gap == nil {
		s.last = ev.Position
	} else if ev.Gap.Until != "" {
		s.last = ev.Gap.Until
	}
}

// extendGap adds ev (an event or another gap) to the pending overflow gap.
func (s *Subscription) extendGap(ev Event) {
	s.gapVer++
	if ev.Gap != nil {
		s.gap.Until = ev.Gap.Until
		return
	}
	s.gap.Until = ev.Position
}

// flush delivers the pending overflow gap once the application makes room,
// waiting off the reader goroutine.
func (s *Subscription) flush() {
	defer close(s.flushDone)
	for {
		s.mu.Lock()
		if s.gap == nil || s.closed {
			s.flushing = false
			s.mu.Unlock()
			return
		}
		g, ver := *s.gap, s.gapVer
		s.mu.Unlock()
		select {
		case s.ch <- Event{Gap: &g}:
		case <-s.done:
			return
		}
		s.mu.Lock()
		s.last = g.Until
		if s.gapVer == ver {
			s.gap, s.flushing = nil, false
			s.mu.Unlock()
			return
		}
		// More was dropped while we waited: report it as the next gap.
		s.gap.Since = g.Until
		s.mu.Unlock()
	}
}

// close ends the subscription; err is nil for Leave.
func (s *Subscription) close(err error) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed, s.err = true, err
	close(s.done)
	fd := s.flushDone
	flushing := s.flushing
	s.mu.Unlock()
	s.sending.Wait()
	if flushing {
		<-fd
	}
	close(s.ch)
}

// Leave leaves the channel. The subscription ends (Events closes) whatever
// the server answers; an error only reports that answer. A Bus that still
// handles commands on the channel stays a member for them.
func (s *Subscription) Leave(ctx context.Context) error {
	b := s.bus
	b.mu.Lock()
	cs := b.chans[s.Name()]
	if cs == nil || cs.sub != s {
		b.mu.Unlock()
		s.close(nil)
		return nil
	}
	cs.sub = nil
	keep := len(cs.handlers) > 0
	if !keep {
		delete(b.chans, s.Name())
	}
	b.mu.Unlock()
	s.close(nil)
	if keep {
		return nil
	}
	ctx, cancel := b.withTimeout(ctx)
	defer cancel()
	b.mu.Lock()
	l := b.link
	b.mu.Unlock()
	if l == nil {
		return nil // not connected: the next connection will not rejoin it
	}
	_, err := l.do(ctx, b.commandEnvelope("leave_channel", nil, s.room, s.channel), nil)
	if errors.Is(err, ErrDisconnected) {
		return nil
	}
	return err
}

// JoinOptions tunes Join.
type JoinOptions struct {
	// Filter: receive only events whose metadata (or payload.metadata)
	// has all these key/value pairs (scalars).
	Filter map[string]any
	// Since: first replay what was published after this history position
	// (or RFC 3339 time), then go live.
	Since string
}

// Join joins "room:channel" and returns its subscription. The Bus keeps
// the channel across reconnects (see Bus). Joining a channel the Bus
// already subscribes to is an error.
func (b *Bus) Join(ctx context.Context, name string, opts JoinOptions) (*Subscription, error) {
	room, channel, err := splitName(name)
	if err != nil {
		return nil, err
	}
	sub := &Subscription{bus: b, room: room, channel: channel,
		ch: make(chan Event, b.cfg.EventBuffer), done: make(chan struct{})}
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil, ErrBusClosed
	}
	cs := b.chans[name]
	if cs != nil && cs.sub != nil {
		b.mu.Unlock()
		return nil, fmt.Errorf("arqonbus: already subscribed to %s", name)
	}
	isNew := cs == nil
	if isNew {
		cs = &channelState{room: room, channel: channel}
		b.chans[name] = cs
	}
	cs.sub, cs.filter = sub, opts.Filter
	if opts.Since != "" {
		cs.since = opts.Since
		cs.last, cs.hasLast = parsePosition(opts.Since)
	}
	b.mu.Unlock()
	if err := b.joinNow(ctx, cs); err != nil {
		b.mu.Lock()
		if cs.sub == sub {
			cs.sub = nil
		}
		if isNew && len(cs.handlers) == 0 && b.chans[name] == cs {
			delete(b.chans, name)
		}
		b.mu.Unlock()
		sub.close(err)
		return nil, err
	}
	return sub, nil
}

// Handle serves command name on "room:channel": the Bus joins the channel
// declaring the command (and keeps doing so on every reconnect), and runs fn
// for each such command, each call on its own goroutine. Registering the
// same name again replaces fn.
func (b *Bus) Handle(ctx context.Context, name, command string, fn HandlerFunc) error {
	room, channel, err := splitName(name)
	if err != nil {
		return err
	}
	if command == "" || fn == nil {
		return errors.New("arqonbus: Handle needs a command name and a function")
	}
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return ErrBusClosed
	}
	cs := b.chans[name]
	if cs == nil {
		cs = &channelState{room: room, channel: channel}
		b.chans[name] = cs
	}
	if cs.handlers == nil {
		cs.handlers = map[string]HandlerFunc{}
	}
	prev, had := cs.handlers[command]
	cs.handlers[command] = fn
	b.mu.Unlock()
	if err := b.joinNow(ctx, cs); err != nil {
		b.mu.Lock()
		if had {
			cs.handlers[command] = prev
		} else {
			delete(cs.handlers, command)
		}
		if len(cs.handlers) == 0 && cs.sub == nil && b.chans[name] == cs {
			delete(b.chans, name)
		}
		b.mu.Unlock()
		return err
	}
	return nil
}

// joinNow joins cs on the current connection, and again on the next one if
// the connection drops before the answer (the reconnect rejoins cs too, and
// positions make the second join harmless).
func (b *Bus) joinNow(ctx context.Context, cs *channelState) error {
	ctx, cancel := b.withTimeout(ctx)
	defer cancel()
	for {
		l, err := b.current(ctx)
		if err != nil {
			return err
		}
		err = b.sendJoin(ctx, l, cs)
		if !errors.Is(err, ErrDisconnected) {
			return err
		}
	}
}

// sendJoin sends join_channel for cs on l and waits for the answer. With a
// since, the channel's events are held from now until the answer, which is
// applied on the reader goroutine, so that a Gap for an incomplete replay
// comes before the replayed events.
func (b *Bus) sendJoin(ctx context.Context, l *link, cs *channelState) error {
	b.mu.Lock()
	params := map[string]any{}
	if len(cs.filter) > 0 {
		params["filter"] = cs.filter
	}
	if len(cs.handlers) > 0 {
		names := make([]string, 0, len(cs.handlers))
		for n := range cs.handlers {
			names = append(names, n)
		}
		slices.Sort(names)
		params["handles"] = names
	}
	since := cs.since
	if since != "" {
		params["since"] = since
		cs.holding++
	}
	b.mu.Unlock()
	env := b.commandEnvelope("join_channel", params, cs.room, cs.channel)
	var hook func(Envelope, error)
	if since != "" {
		hook = func(ans Envelope, err error) { b.joined(cs, since, ans, err) }
	} else {
		hook = func(ans Envelope, err error) {
			if err == nil {
				b.joinedAt(cs, ans)
			}
		}
	}
	_, err := l.do(ctx, env, hook)
	return err
}

type joinResult struct {
	Position string `json:"position"`
	Replay   *struct {
		Complete     bool   `json:"complete"`
		OmittedUntil string `json:"omitted_until"`
	} `json:"replay"`
}

// joinedAt takes the channel's position at the join from its answer: every
// later event is after it, so a rejoin with since = it misses nothing.
func (b *Bus) joinedAt(cs *channelState, ans Envelope) joinResult {
	var p struct {
		Result joinResult `json:"result"`
	}
	_ = json.Unmarshal(ans.Payload, &p)
	if pos, ok := parsePosition(p.Result.Position); ok {
		b.mu.Lock()
		if !cs.hasLast || cs.last.less(pos) {
			cs.last, cs.hasLast, cs.since = pos, true, p.Result.Position
		}
		b.mu.Unlock()
	}
	return p.Result
}

// joined applies the answer to a join with since (on the reader
// goroutine): a Gap if the replay was incomplete, then the held events.
func (b *Bus) joined(cs *channelState, since string, ans Envelope, err error) {
	var gap *Gap
	if err == nil {
		r := b.joinedAt(cs, ans)
		if r.Replay != nil && !r.Replay.Complete {
			gap = &Gap{Reason: GapReplay, Since: since, Until: r.Replay.OmittedUntil}
		}
	}
	b.mu.Lock()
	cs.holding--
	var held []Envelope
	if cs.holding == 0 {
		held, cs.held = cs.held, nil
	}
	sub := cs.sub
	b.mu.Unlock()
	if sub == nil {
		return
	}
	if gap != nil {
		sub.deliver(Event{Gap: gap}, b.cfg.OverflowWait)
	}
	for _, env := range held {
		sub.deliver(Event{Envelope: env, Position: positionOf(env)}, b.cfg.OverflowWait)
	}
}

// onEvent routes a channel's event to its subscription, dropping what was
// already seen (position not after the last) and the Bus's own events
// (which a replay may contain but live delivery never does).
func (b *Bus) onEvent(env Envelope) {
	if env.From == b.cfg.ClientID {
		return
	}
	posStr := positionOf(env)
	pos, hasPos := parsePosition(posStr)
	name := env.Room + ":" + env.Channel
	b.mu.Lock()
	cs := b.chans[name]
	if cs == nil || cs.sub == nil {
		b.mu.Unlock()
		return
	}
	if hasPos {
		if cs.hasLast && !cs.last.less(pos) {
			b.mu.Unlock()
			b.duplicates.Add(1)
			return
		}
		cs.last, cs.hasLast, cs.since = pos, true, posStr
	}
	if cs.holding > 0 {
		cs.held = append(cs.held, env)
		b.mu.Unlock()
		return
	}
	sub := cs.sub
	b.mu.Unlock()
	sub.deliver(Event{Envelope: env, Position: posStr}, b.cfg.OverflowWait)
}

// onCommand runs the handler of a command sent to this Bus, on a goroutine
// of its own, and answers it on the connection it came in on.
func (b *Bus) onCommand(l *link, env Envelope) {
	var p struct {
		Command    string          `json:"command"`
		Parameters json.RawMessage `json:"parameters"`
	}
	_ = json.Unmarshal(env.Payload, &p)
	b.mu.Lock()
	var fn HandlerFunc
	if cs := b.chans[env.Room+":"+env.Channel]; cs != nil {
		fn = cs.handlers[p.Command]
	}
	b.mu.Unlock()
	if fn == nil {
		b.respond(l, env, nil, &Error{Code: "COMMAND_NOT_FOUND", Status: 404, Message: "no handler for " + strconv.Quote(p.Command) + " here"})
		return
	}
	select {
	case b.handlers <- struct{}{}:
	default:
		b.respond(l, env, nil, &Error{Code: "UNAVAILABLE", Status: 503, Message: "handler busy"})
		return
	}
	b.hwg.Go(func() {
		defer func() { <-b.handlers }()
		ctx, cancel := context.WithTimeout(b.ctx, b.cfg.HandlerTimeout)
		defer cancel()
		result, err := runHandler(ctx, fn, p.Parameters, env)
		b.respond(l, env, result, err)
	})
}

func runHandler(ctx context.Context, fn HandlerFunc, params json.RawMessage, env Envelope) (result any, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("handler panicked: %v\n%s", r, debug.Stack())
		}
	}()
	return fn(ctx, params, env)
}

// respond sends a command_response for the command env.
func (b *Bus) respond(l *link, env Envelope, result any, err error) {
	type errBody struct {
		Code    string `json:"code"`
		Status  int    `json:"status"`
		Message string `json:"message"`
	}
	body := struct {
		RequestID string   `json:"request_id"`
		Status    string   `json:"status"`
		Result    any      `json:"result,omitempty"`
		Error     *errBody `json:"error,omitempty"`
	}{RequestID: env.ID, Status: "success", Result: result}
	if err != nil {
		eb := &errBody{Code: "INTERNAL", Status: 500, Message: err.Error()}
		var e *Error
		if errors.As(err, &e) {
			eb = &errBody{Code: e.Code, Status: e.Status, Message: e.Message}
		}
		body.Status, body.Result, body.Error = "error", nil, eb
	} else if result == nil {
		body.Result = map[string]any{}
	}
	p, merr := json.Marshal(body)
	if merr != nil {
		p, _ = json.Marshal(map[string]any{"request_id": env.ID, "status": "error",
			"error": errBody{Code: "INTERNAL", Status: 500, Message: "result does not encode: " + merr.Error()}})
	}
	_ = l.conn.Send(Envelope{ID: NewID("resp"), Type: "command_response", Room: env.Room, Channel: env.Channel, Payload: p})
}
