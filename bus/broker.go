package bus

import (
	"time"

	"github.com/arqonbus/arqonbus/cluster"
	"github.com/arqonbus/arqonbus/codec"
	"github.com/arqonbus/arqonbus/commands"
	"github.com/arqonbus/arqonbus/engine"
	"github.com/arqonbus/arqonbus/fanout"
)

// broker carries what may cross nodes: client ids, events, private messages, commands to handlers and
// their answers, and channel interest. A standalone bus has solo, for which every client and member is
// on this node; a clustered bus has a *mesh (mesh.go), which goes through Redis for what is not here.
// The bus asks its broker, never "am I clustered?".
//
// Methods taking a session run on its event loop; callbacks they are given run there too.
type broker interface {
	// bind makes id s's client id and calls done (maybe before bind returns) with nil or the refusal.
	bind(s *session, id string, done func(*codec.Error))
	// unbind lets go of id, which s held (s is closing, or claimed another).
	unbind(s *session, id string)
	// publish routes an event s sent to ch, of which s is a member, and acks it if asked.
	publish(s *session, ch *fanout.Channel, env *codec.Envelope, received time.Time)
	// private delivers msg to target, which is not connected to this node, or tells s why not.
	private(s *session, env *codec.Envelope, target string, msg []byte)
	// pickHandler chooses, round robin, who serves command name on k: a member here or elsewhere.
	pickHandler(k fanout.Key, name string) handlerRef
	// forward sends command name to a handler on another node and answers s if it cannot.
	forward(s *session, env *codec.Envelope, name string, msg []byte, h handlerRef)
	// answer takes a handler's command_response (msg) to the requester of f, on another node, or tells
	// it the command failed (e not nil).
	answer(f *commands.Inflight, handlerID string, msg []byte, e *codec.Error)
	// ready reports whether k's events reach this node. When they do not, it makes them, and runs
	// retry on s's loop once they do (or cannot): a join waits for that.
	ready(s *session, k fanout.Key, retry func()) bool
	// joined and left follow this node's memberships of k, one call per member.
	joined(k fanout.Key)
	left(k fanout.Key)
	// channelChanged tells the other nodes that k was created (or deleted) here.
	channelChanged(k fanout.Key, created bool)
	// nodes lists the bus's live nodes; nil for a standalone bus.
	nodes() []cluster.Info
}

// handlerRef is a command handler: a local connection, or a client on another node.
type handlerRef struct {
	conn         *engine.Conn
	node, client string // instance and client id, when elsewhere
}

func (h handlerRef) none() bool { return h.conn == nil && h.node == "" }

// solo is the broker of a standalone bus.
type solo struct{ b *Bus }

func (o solo) bind(s *session, id string, done func(*codec.Error)) {
	if !o.b.bindLocal(s, id) {
		done(codec.Conflict("client id " + id + " is already connected"))
		return
	}
	done(nil)
}

func (o solo) unbind(s *session, id string) { o.b.hub.Unregister(id, s.conn) }

func (o solo) publish(s *session, ch *fanout.Channel, env *codec.Envelope, received time.Time) {
	o.b.publishLocal(s, ch, env, received)
}

func (o solo) private(s *session, env *codec.Envelope, target string, _ []byte) {
	o.b.sendError(s, env, withField(codec.TargetNotFound("client "+target+" is not connected"), "payload.target"))
}

func (o solo) pickHandler(k fanout.Key, name string) handlerRef {
	if ch := o.b.hub.Channel(k); ch != nil {
		return handlerRef{conn: ch.PickHandler(name)}
	}
	return handlerRef{}
}

func (o solo) forward(*session, *codec.Envelope, string, []byte, handlerRef) {}
func (o solo) answer(*commands.Inflight, string, []byte, *codec.Error)       {}
func (o solo) ready(*session, fanout.Key, func()) bool                       { return true }
func (o solo) joined(fanout.Key)                                             {}
func (o solo) left(fanout.Key)                                               {}
func (o solo) channelChanged(fanout.Key, bool)                               {}
func (o solo) nodes() []cluster.Info                                         { return nil }
