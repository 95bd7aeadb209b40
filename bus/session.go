package bus

import (
	"crypto/rand"
	"encoding/hex"
	"sync/atomic"

	"github.com/arqonbus/arqonbus/codec"
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
	conn        *engine.Conn
	id          atomic.Pointer[string]
	claimable   bool // the id was assigned, and the first envelope may claim another
	registered  bool // id is bound in the hub
	admin       bool
	clientType  string
	screenName  string
	avatar      string
	personality string

	channels map[fanout.Key]*fanout.Channel

	messages, commands bucket                 // rate limits
	outstanding        atomic.Int32           // commands in flight to handlers
	attrs              msgAttrs               // scratch for filter matching, reused per message
	pub                publishing             // scratch for stamping a publish, reused per message
	agent              *telemetry.AgentHandle // ai-agent activity, coalesced; nil for others

	violations  int
	windowStart int64 // unix nanos of the violation window's start
}

func sessionOf(c *engine.Conn) *session { return c.Value.(*session) }

func (s *session) ID() string               { return *s.id.Load() }
func (s *session) setID(id string)          { s.id.Store(&id) }
func (s *session) ClientType() string       { return s.clientType }
func (s *session) Admin() bool              { return s.admin }
func (s *session) Conn() *engine.Conn       { return s.conn }
func (s *session) Subscriptions() int       { return len(s.channels) }
func (s *session) Unsubscribe(k fanout.Key) { delete(s.channels, k) }

func (s *session) Subscription(k fanout.Key) *fanout.Channel { return s.channels[k] }

func (s *session) Subscribe(k fanout.Key, ch *fanout.Channel) { s.channels[k] = ch }

// Open binds the client id, welcomes the client and joins the auto-join channels.
func (b *Bus) Open(c *engine.Conn) {
	s := sessionOf(c)
	if !b.bind(s, s.ID()) {
		b.sendError(s, nil, codec.Conflict("client id "+s.ID()+" is already connected"))
		c.CloseNow(engine.ClosePolicyViolation, "client id in use")
		return
	}
	b.stats.clientConnected(s.clientType)
	b.welcome(s)
	b.telemetryConnected(s)
	for _, k := range b.cfg.AutoJoin {
		if ch, _, err := b.hub.Join(k, c, nil, nil); err == nil {
			s.channels[k] = ch
		}
	}
}

// bind registers id for s, replacing a live holder when so configured.
func (b *Bus) bind(s *session, id string) bool {
	if b.cfg.ReplaceDuplicate {
		if old := b.hub.Replace(id, s.conn); old != nil {
			old.Close(engine.ClosePolicyViolation, "replaced by a new connection with the same client id")
		}
	} else if err := b.hub.Register(id, s.conn); err != nil {
		return false
	}
	s.registered = true
	return true
}

// Close forgets the session: its id, its memberships, and the commands in
// flight to it (their requesters learn at once).
func (b *Bus) Close(c *engine.Conn) {
	s, _ := c.Value.(*session)
	if s == nil || !s.registered {
		return
	}
	b.stats.clientDisconnected(s.clientType)
	b.telemetryDisconnected(s)
	b.hub.Unregister(s.ID(), c)
	for k, ch := range s.channels {
		b.hub.Leave(ch, c)
		delete(s.channels, k)
	}
	for _, f := range b.pending.DropHandler(c) {
		b.sendErrorTo(f.Requester, f.Room, f.Channel, f.RequestID,
			codec.Unavailable("the handler serving this command disconnected"))
	}
}

// claim lets an assigned-id session take the id its first envelope names.
func (b *Bus) claim(s *session, id string) *codec.Error {
	old := s.ID()
	if !b.bind(s, id) {
		return codec.Conflict("client id " + id + " is already connected")
	}
	b.hub.Unregister(old, s.conn)
	s.setID(id)
	return nil
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
