package bus

import (
	"crypto/rand"
	"encoding/hex"
	"sync/atomic"

	"github.com/arqonbus/arqonbus/codec"
	"github.com/arqonbus/arqonbus/commands"
	"github.com/arqonbus/arqonbus/engine"
	"github.com/arqonbus/arqonbus/fanout"
	"github.com/arqonbus/arqonbus/telemetry"
)

// Client types a connection may declare.
const (
	TypeHuman     = "human"
	TypeAgent     = "ai-agent"
	TypeDashboard = "dashboard"
	TypeService   = "service"
)

var clientTypes = []string{TypeHuman, TypeAgent, TypeDashboard, TypeService}

// session is the bus's state for one connection. Apart from id (which other
// loops read through channel_info), it is touched only on the connection's
// event loop.
type session struct {
	b           *Bus
	conn        *engine.Conn
	id          atomic.Pointer[string]
	claimable   bool // the id was assigned, and the first envelope may claim another
	opened      bool // the id is bound and the client welcomed
	binding     bool // an id is being bound (in a cluster, Redis is asked): messages wait in held
	admin       bool
	clientType  string
	screenName  string
	avatar      string
	personality string
	resumeToken string // from the upgrade: lets this connection take its id over from a live one

	channels map[fanout.Key]*fanout.Channel

	messages, commands bucket                 // rate limits
	outstanding        atomic.Int32           // commands in flight to handlers
	attrs              msgAttrs               // scratch for filter matching, reused per message
	pub                publishing             // scratch for stamping a publish, reused per message
	agent              *telemetry.AgentHandle // ai-agent activity, coalesced; nil for others

	held      [][]byte // messages that arrived while binding, copied
	heldBytes int

	violations  int
	windowStart int64 // unix nanos of the violation window's start
}

// Bounds of what a client may send before its id is confirmed.
const (
	maxHeld      = 256
	maxHeldBytes = 4 << 20
)

func sessionOf(c *engine.Conn) *session { return c.Value.(*session) }

func (s *session) ID() string         { return *s.id.Load() }
func (s *session) setID(id string)    { s.id.Store(&id) }
func (s *session) ClientType() string { return s.clientType }
func (s *session) Admin() bool        { return s.admin }
func (s *session) Conn() *engine.Conn { return s.conn }
func (s *session) Subscriptions() int { return len(s.channels) }

func (s *session) Subscription(k fanout.Key) *fanout.Channel { return s.channels[k] }

// Subscribe and Unsubscribe keep the session's memberships, and tell the
// broker about each new and each ended one (a cluster subscribes the node to
// channels with local members only).
func (s *session) Subscribe(k fanout.Key, ch *fanout.Channel) {
	if _, ok := s.channels[k]; !ok {
		s.b.broker.joined(k)
	}
	s.channels[k] = ch
}

func (s *session) Unsubscribe(k fanout.Key) {
	if _, ok := s.channels[k]; ok {
		delete(s.channels, k)
		s.b.broker.left(k)
	}
}

// hold keeps a copy of msg for when the id is bound, after the messages
// already waiting (or, with first, before them); false when the client has
// sent too much meanwhile.
func (s *session) hold(msg []byte, first bool) bool {
	if len(s.held) >= maxHeld || s.heldBytes+len(msg) > maxHeldBytes {
		return false
	}
	m := append([]byte(nil), msg...)
	if first {
		s.held = append([][]byte{m}, s.held...)
	} else {
		s.held = append(s.held, m)
	}
	s.heldBytes += len(msg)
	return true
}

// Open binds the client id, welcomes the client and joins the auto-join
// channels; in a cluster that waits for Redis to confirm the id is free.
func (b *Bus) Open(c *engine.Conn) {
	s := sessionOf(c)
	s.binding = true
	b.broker.bind(s, s.ID(), func(e *codec.Error) {
		s.binding = false
		if e != nil {
			s.held, s.heldBytes = nil, 0
			b.sendError(s, nil, e)
			c.CloseNow(engine.ClosePolicyViolation, "client id in use")
			return
		}
		s.opened = true
		b.stats.clientConnected(s.clientType)
		b.welcome(s)
		b.telemetryConnected(s)
		for _, k := range b.cfg.AutoJoin {
			if ch, _, err := b.hub.Join(k, c, nil, nil); err == nil {
				s.Subscribe(k, ch)
			}
		}
		b.releaseHeld(s)
	})
}

// bindLocal registers id for s on this node, replacing a live holder when so
// configured.
func (b *Bus) bindLocal(s *session, id string) bool {
	if b.mayReplace(s, id) {
		if old := b.hub.Replace(id, s.conn); old != nil {
			old.Close(engine.ClosePolicyViolation, "replaced by a new connection with the same client id")
		}
		return true
	}
	return b.hub.Register(id, s.conn) == nil
}

// Close forgets the session: its id, its memberships, and the commands in
// flight to it (their requesters learn at once).
func (b *Bus) Close(c *engine.Conn) {
	s, _ := c.Value.(*session)
	if s == nil {
		return
	}
	if s.binding || s.opened {
		b.broker.unbind(s, s.ID())
	}
	if !s.opened {
		return
	}
	b.stats.clientDisconnected(s.clientType)
	b.telemetryDisconnected(s)
	for k, ch := range s.channels {
		b.hub.Leave(ch, c)
		s.Unsubscribe(k)
	}
	for _, f := range b.pending.DropHandler(c) {
		b.handlerGone(f, "the handler serving this command disconnected")
	}
}

// handlerGone tells the requester of f that its handler went away.
func (b *Bus) handlerGone(f *commands.Inflight, why string) {
	e := codec.Unavailable(why)
	if f.Requester == nil {
		b.broker.answer(f, "", nil, e)
		return
	}
	b.sendErrorTo(f.Requester, f.Room, f.Channel, f.RequestID, e)
}

// claim lets an assigned-id session take the id its first envelope (msg)
// names. The envelope waits, with whatever follows it, until the id is bound;
// then it is handled again (now from its own id), or refused.
func (b *Bus) claim(s *session, env *codec.Envelope, msg []byte) {
	if !s.hold(msg, true) {
		b.reject(s, env, codec.RateLimited("too many messages while the client id is being confirmed", 100))
		return
	}
	old := s.ID()
	s.binding = true
	b.broker.bind(s, env.From, func(e *codec.Error) {
		s.binding = false
		if e != nil {
			first := s.held[0]
			s.held = s.held[1:]
			s.heldBytes -= len(first)
			b.reject(s, env, withField(e, "from"))
		} else {
			b.broker.unbind(s, old)
			s.setID(env.From)
			s.claimable = false
		}
		b.releaseHeld(s)
	})
}

// releaseHeld handles the messages that waited for the id, in order.
func (b *Bus) releaseHeld(s *session) {
	for len(s.held) > 0 && !s.binding && !s.conn.Closed() {
		m := s.held[0]
		s.held[0] = nil
		s.held = s.held[1:]
		s.heldBytes -= len(m)
		b.Message(s.conn, m)
	}
	if len(s.held) == 0 {
		s.held = nil
	}
}

func validClientType(t string) bool {
	for _, ct := range clientTypes {
		if t == ct {
			return true
		}
	}
	return false
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
