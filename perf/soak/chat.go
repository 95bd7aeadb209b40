package soak

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/arqonbus/arqonbus/client"
)

// Rooms and channels of the run. Chat and bulk channels are fixed names, so that a soak against
// a server that outlives it would reuse them; churn channels are unique to the run.
const (
	soakRoom        = "soak"
	chatChannelFmt  = "chat-%d"
	bulkChannel     = "bulk"
	servicesChannel = "services"
	churnRoom       = "soakchurn"
	echoCommand     = "soak_echo"
)

func chatChannel(i int) string { return fmt.Sprintf(chatChannelFmt, i) }

// eventPayload is what the soak's publishers put in an event: send time in Unix nanoseconds,
// publisher id and its sequence number (-1: not sequenced, as from churning connections), and
// some text to give the event a realistic size.
type eventPayload struct {
	T int64  `json:"t"`
	P string `json:"p"`
	S int64  `json:"s"`
}

// appendEventPayload writes {"t":..,"p":"..","s":..,"x":"<text>"}; p and text are plain ASCII.
func appendEventPayload(dst []byte, t int64, p string, s int64, text string) []byte {
	return fmt.Appendf(dst, `{"t":%d,"p":%q,"s":%d,"x":%q}`, t, p, s, text)
}

// filler is n bytes of readable text.
func filler(n int) string {
	const words = "the quick brown fox jumps over the lazy dog while the bus carries every word "
	var b strings.Builder
	for b.Len() < n {
		b.WriteString(words)
	}
	return b.String()[:n]
}

// member is one reading client of a chat or bulk channel. It checks each publisher's sequence
// (no gap, no duplicate, in order), measures the latency of live events, follows the history
// position, and when it loses its connection (or drops it on purpose, as a rejoiner) comes back
// with join_channel since, so that the check spans the seam.
type member struct {
	r        *runner
	id       string
	channel  string
	rejoiner bool
	pub      *publisher // nil: reads only

	mu        sync.Mutex
	sess      *session // current connection, nil between connections
	joined    bool     // sess is a member of the channel
	replaying bool     // a join with since is in flight: events now are replayed, not live
	lastPos   string
	lastSeq   map[string]int64
}

func (r *runner) newMember(id, channel string, rejoiner bool) *member {
	return &member{r: r, id: id, channel: channel, rejoiner: rejoiner, lastSeq: make(map[string]int64)}
}

// run keeps the member connected until ctx ends. ready is called once, after the first join.
func (m *member) run(ctx context.Context, ready func()) {
	cycle := 0
	var rejoin *time.Timer
	var rejoinTick <-chan time.Time // nil for a member that stays
	if m.rejoiner {
		// The first leave comes at a random point of the period, so that the rejoiners do not
		// all leave at once; then one every period.
		rejoin = time.NewTimer(rand.N(m.r.cfg.RejoinEvery) + time.Millisecond)
		defer rejoin.Stop()
		rejoinTick = rejoin.C
	}
	for ctx.Err() == nil {
		s, err := m.connect(ctx)
		if ready != nil {
			ready()
			ready = nil
		}
		if err != nil {
			if ctx.Err() == nil {
				m.r.c.fail(cDialErrors, "chat member: "+shortErr(err))
				sleepCtx(ctx, time.Second)
			}
			continue
		}
	connected:
		for {
			select {
			case <-ctx.Done():
				s.close()
				return
			case <-s.done:
				if ctx.Err() == nil {
					code, reason := s.c.CloseCode()
					m.r.c.fail(cHealthyDrops, fmt.Sprintf("chat member lost its connection (close %d %s)", code, reason))
				}
				break connected
			case <-rejoinTick:
				rejoin.Reset(m.r.cfg.RejoinEvery)
				cycle++
				if cycle%2 == 1 {
					if !m.leaveAndRejoin(ctx, s) {
						s.abort()
						break connected
					}
					continue
				}
				// A network drop as a client sees it: the connection just goes away.
				m.setSession(nil)
				s.abort()
				m.r.c.inc(cReconnects)
				sleepCtx(ctx, m.r.cfg.RejoinAway)
				break connected
			}
		}
		m.setSession(nil)
	}
}

func (m *member) setSession(s *session) {
	m.mu.Lock()
	m.sess, m.joined = s, false
	m.mu.Unlock()
}

// current is the member's connection if it is joined, else nil.
func (m *member) current() *session {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.joined {
		return nil
	}
	return m.sess
}

// connect dials (retrying a CONFLICT: the server may not have seen the old connection go yet)
// and joins, with since when the member has a position.
func (m *member) connect(ctx context.Context) (*session, error) {
	var s *session
	var err error
	for attempt := 0; ; attempt++ {
		s, err = dialSession(ctx, m.r.cfg.URL, m.id, m.onEnvelope)
		if err == nil {
			break
		}
		var ae *client.Error
		if !asClientError(err, &ae) || ae.Code != "CONFLICT" || attempt == 50 || ctx.Err() != nil {
			return nil, err
		}
		sleepCtx(ctx, 100*time.Millisecond)
	}
	m.setSession(s)
	if err := m.join(ctx, s); err != nil {
		s.abort()
		m.setSession(nil)
		return nil, err
	}
	return s, nil
}

// join joins the member's channel, with since if it has a position, and checks the replay.
func (m *member) join(ctx context.Context, s *session) error {
	m.mu.Lock()
	since := m.lastPos
	m.replaying = since != ""
	m.mu.Unlock()
	params := json.RawMessage(`{}`)
	if since != "" {
		params, _ = json.Marshal(map[string]string{"since": since})
	}
	jctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	env, err := s.command(jctx, soakRoom, m.channel, "join_channel", params)
	m.mu.Lock()
	m.replaying = false
	if err == nil {
		m.joined = true
	}
	m.mu.Unlock()
	if err != nil {
		return fmt.Errorf("join %s:%s: %w", soakRoom, m.channel, err)
	}
	if since != "" {
		var res struct {
			Result struct {
				Replay *struct {
					Replayed int  `json:"replayed"`
					Complete bool `json:"complete"`
				} `json:"replay"`
			} `json:"result"`
		}
		_ = json.Unmarshal(env.Payload, &res)
		switch rp := res.Result.Replay; {
		case rp == nil:
			m.r.c.fail(cReplayIncomplete, "join_channel since answered without a replay object")
		case !rp.Complete:
			m.r.c.add(cReplayed, int64(rp.Replayed))
			m.r.c.fail(cReplayIncomplete, "join_channel since: replay complete=false")
		default:
			m.r.c.add(cReplayed, int64(rp.Replayed))
		}
	}
	return nil
}

// leaveAndRejoin leaves the channel on the same connection, stays away, and joins again with
// since. False if the connection failed on the way.
func (m *member) leaveAndRejoin(ctx context.Context, s *session) bool {
	lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	_, err := s.command(lctx, soakRoom, m.channel, "leave_channel", nil)
	cancel()
	m.mu.Lock()
	m.joined = false
	m.mu.Unlock()
	if err != nil {
		if ctx.Err() == nil {
			m.r.c.fail(cOtherErrors, "leave_channel: "+shortErr(err))
		}
		return ctx.Err() == nil && s.c.Err() == nil
	}
	sleepCtx(ctx, m.r.cfg.RejoinAway)
	if ctx.Err() != nil {
		return true
	}
	if err := m.join(ctx, s); err != nil {
		if ctx.Err() == nil {
			m.r.c.fail(cOtherErrors, "rejoin: "+shortErr(err))
		}
		return false
	}
	m.r.c.inc(cRejoins)
	return true
}

// onEnvelope handles everything the member receives that is not an answer to its commands.
func (m *member) onEnvelope(_ *session, env client.Envelope) {
	switch {
	case env.Type == "event":
		m.onEvent(env)
	case isNotice(env):
	case env.Type == "error":
		if m.pub != nil && m.pub.ownError(env) {
			return
		}
		m.r.c.fail(cOtherErrors, "chat member got error "+errorCode(env))
	default:
		m.r.c.fail(cOtherErrors, "chat member got unexpected "+env.Type)
	}
}

func (m *member) onEvent(env client.Envelope) {
	now := time.Now()
	var p eventPayload
	if err := json.Unmarshal(env.Payload, &p); err != nil {
		m.r.c.fail(cOtherErrors, "event payload is not the soak's")
		return
	}
	var meta struct {
		Position string `json:"position"`
	}
	_ = json.Unmarshal(env.Metadata, &meta)
	m.r.c.inc(cDelivered)

	m.mu.Lock()
	live := !m.replaying
	if meta.Position != "" {
		m.lastPos = meta.Position
	}
	var gap, dup bool
	var last int64
	if p.S >= 0 && p.P != "" {
		l, seen := m.lastSeq[p.P]
		last = l
		switch {
		case !seen || p.S == l+1:
		case p.S > l+1:
			gap = true
		default:
			dup = true
		}
		if !seen || p.S > l {
			m.lastSeq[p.P] = p.S
		}
	}
	m.mu.Unlock()

	// Replayed events are old by design: only live ones measure the fan-out.
	if live && p.T > 0 {
		m.r.fanout.record(now.Sub(time.Unix(0, p.T)))
	}
	what := "live"
	if !live {
		what = "replay"
	}
	if m.rejoiner {
		what += " after rejoin"
	}
	if gap {
		m.r.c.fail(cSeqGaps, fmt.Sprintf("%s: a publisher's sequence skipped (%s events missing)", what, magnitude(p.S-last-1)))
	}
	switch {
	case dup && p.S == last:
		m.r.c.fail(cSeqDups, what+": a publisher's last event came again")
	case dup:
		m.r.c.fail(cSeqDups, fmt.Sprintf("%s: a publisher's sequence went back (by %s)", what, magnitude(last-p.S)))
	}
}

// publisher sends events into its member's channel at a steady rate, numbering them.
type publisher struct {
	m    *member
	rate float64
	text string

	mu     sync.Mutex
	sentAt map[string]time.Time // ids of recent events, to recognise errors about them
}

func (m *member) attachPublisher(rate float64, size int) *publisher {
	p := &publisher{m: m, rate: rate, text: filler(size), sentAt: make(map[string]time.Time)}
	m.pub = p
	return p
}

// run publishes until ctx ends; it waits while its member is not joined.
func (p *publisher) run(ctx context.Context) {
	if p.rate <= 0 {
		return
	}
	every := time.Duration(float64(time.Second) / p.rate)
	t := time.NewTicker(every)
	defer t.Stop()
	var seq int64
	var buf []byte
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s := p.m.current()
		if s == nil {
			continue
		}
		id := client.NewID("msg")
		buf = appendEventPayload(buf[:0], time.Now().UnixNano(), p.m.id, seq, p.text)
		env := client.Envelope{ID: id, Type: "event", Room: soakRoom, Channel: p.m.channel, Payload: buf}
		p.remember(id)
		if err := s.c.Send(env); err != nil {
			continue // the member notices the lost connection; the sequence goes on unbroken
		}
		seq++
		p.m.r.c.inc(cPublished)
	}
}

// remember keeps the ids of the last minute's events.
func (p *publisher) remember(id string) {
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.sentAt[id] = now
	if len(p.sentAt) > 4*int(p.rate*60)+100 {
		for k, t := range p.sentAt {
			if now.Sub(t) > time.Minute {
				delete(p.sentAt, k)
			}
		}
	}
}

// ownError counts an error about one of the publisher's events; false if it is about something
// else.
func (p *publisher) ownError(env client.Envelope) bool {
	rid := env.RequestID()
	p.mu.Lock()
	_, ok := p.sentAt[rid]
	p.mu.Unlock()
	if !ok {
		return false
	}
	p.m.r.c.fail(cPubErrors, "publish answered "+errorCode(env))
	return true
}

// magnitude buckets a count for notes ("1", "2-9", "10-99", ...), so that notes stay few.
func magnitude(n int64) string {
	switch {
	case n <= 1:
		return "1"
	case n < 10:
		return "2-9"
	case n < 100:
		return "10-99"
	case n < 1000:
		return "100-999"
	}
	return "1000+"
}
