package bus

import (
	"crypto/rand"
	"encoding/hex"
	"net/http"

	"github.com/arqonbus/arqonbus/codec"
	"github.com/arqonbus/arqonbus/engine"
	"github.com/arqonbus/arqonbus/fanout"
)

// Client types a connection may declare.
const (
	TypeHuman     = "human"
	TypeAgent     = "ai-agent"
	TypeDashboard = "dashboard"
	TypeService   = "service"
)

var clientTypes = []string{TypeHuman, TypeAgent, TypeDashboard, TypeService}

// session is the bus's state for one connection. It is touched only on the
// connection's event loop.
type session struct {
	conn        *engine.Conn
	id          string
	claimable   bool // the id was assigned, and the first envelope may claim another
	registered  bool // id is bound in the hub
	clientType  string
	screenName  string
	avatar      string
	personality string

	channels map[fanout.Key]*fanout.Channel

	violations  int
	windowStart int64 // unix nanos of the violation window's start
}

func sessionOf(c *engine.Conn) *session { return c.Value.(*session) }

// Upgrade reads identity from the request's query.
func (b *Bus) Upgrade(c *engine.Conn, r *engine.Request) error {
	q := r.Query
	s := &session{conn: c, clientType: TypeHuman, channels: make(map[fanout.Key]*fanout.Channel)}
	if id := q.Get("client_id"); id != "" {
		if !codec.ValidClientID(id) {
			return &engine.Reject{Status: http.StatusBadRequest, Reason: "client_id must be 1 to 128 characters of [A-Za-z0-9_.:-]"}
		}
		s.id = id
	} else {
		s.id = "arq_client_" + randomHex(8)
		s.claimable = true
	}
	if t := q.Get("client_type"); t != "" {
		if !validClientType(t) {
			return &engine.Reject{Status: http.StatusBadRequest, Reason: "client_type must be one of human, ai-agent, dashboard, service"}
		}
		s.clientType = t
	}
	s.screenName = q.Get("screen_name")
	s.avatar = q.Get("avatar")
	s.personality = q.Get("personality")
	c.Value = s
	return nil
}

// Open binds the client id, welcomes the client and joins the auto-join channels.
func (b *Bus) Open(c *engine.Conn) {
	s := sessionOf(c)
	if !b.bind(s, s.id) {
		b.sendError(s, nil, codec.Conflict("client id "+s.id+" is already connected"))
		c.CloseNow(engine.ClosePolicyViolation, "client id in use")
		return
	}
	b.stats.clientConnected(s.clientType)
	b.welcome(s)
	for _, k := range b.cfg.AutoJoin {
		if ch, _, err := b.hub.Join(k, c); err == nil {
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

// Close forgets the session: its id and its memberships.
func (b *Bus) Close(c *engine.Conn) {
	s, _ := c.Value.(*session)
	if s == nil || !s.registered {
		return
	}
	b.stats.clientDisconnected(s.clientType)
	b.hub.Unregister(s.id, c)
	for k, ch := range s.channels {
		b.hub.Leave(ch, c)
		delete(s.channels, k)
	}
}

// claim lets an assigned-id session take the id its first envelope names.
func (b *Bus) claim(s *session, id string) *codec.Error {
	if !b.bind(s, id) {
		return codec.Conflict("client id " + id + " is already connected")
	}
	b.hub.Unregister(s.id, s.conn)
	s.id = id
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
