package bus

import (
	"bytes"
	"time"

	"github.com/bytedance/sonic"

	"github.com/arqonbus/arqonbus/codec"
	"github.com/arqonbus/arqonbus/commands"
	"github.com/arqonbus/arqonbus/engine"
	"github.com/arqonbus/arqonbus/fanout"
	"github.com/arqonbus/arqonbus/persist"
	"github.com/arqonbus/arqonbus/telemetry"
)

// Message decodes, checks and dispatches one client envelope.
func (b *Bus) Message(c *engine.Conn, msg []byte) {
	s := sessionOf(c)
	if s.binding {
		if !s.hold(msg, false) {
			c.CloseNow(engine.CloseTryAgainLater, "too many messages before the client id was confirmed")
		}
		return
	}
	if !s.opened {
		return
	}
	env, cerr := codec.Decode(msg)
	if cerr != nil {
		b.reject(s, env, cerr)
		return
	}
	if env.From != s.ID() {
		if !s.claimable {
			b.reject(s, env, withField(codec.Forbidden("from must be your client id "+s.ID()), "from"))
			return
		}
		b.claim(s, env, msg)
		return
	}
	s.claimable = false
	b.stats.received(env.Type)

	// Rate limits are flow control, not violations: refused, not counted.
	received := time.Now()
	now := received.UnixNano()
	if env.Type == codec.TypeCommand {
		if ok, wait := s.commands.take(now, b.cfg.CommandRate, b.cfg.CommandBurst); !ok {
			b.stats.rateLimited.Add(1)
			b.sendError(s, env, rateLimited("command", wait))
			return
		}
	} else if ok, wait := s.messages.take(now, b.cfg.RateLimit, b.cfg.RateBurst); !ok {
		b.stats.rateLimited.Add(1)
		b.sendError(s, env, rateLimited("message", wait))
		return
	}

	switch env.Type {
	case codec.TypeEvent:
		b.publish(s, env, received)
	case codec.TypePrivate:
		b.private(s, env, msg)
	case codec.TypeCommand:
		b.command(s, env, msg)
	case codec.TypeCommandResponse:
		b.commandResponse(s, env, msg)
	case codec.TypeTelemetry:
		b.telemetry(s, env, msg)
	}
}

// publish routes an event to its channel's other members, as the sender sent
// it plus its history position (see publishing).
func (b *Bus) publish(s *session, env *codec.Envelope, received time.Time) {
	k := fanout.Key{Room: env.Room, Channel: env.Channel}
	ch := s.channels[k]
	if ch == nil {
		b.reject(s, env, codec.Forbidden("join "+k.String()+" before publishing to it"))
		return
	}
	b.broker.publish(s, ch, env, received)
	s.agent.Activity(telemetry.ActivityPublished, env.Room, env.Channel)
}

// publishLocal routes an event to ch's members on this node, its position
// from the channel's own clock, and acks it when asked.
func (b *Bus) publishLocal(s *session, ch *fanout.Channel, env *codec.Envelope, received time.Time) {
	b.routeLocal(&s.pub, &s.attrs, s.conn, ch, env, received, true)
}

// routeLocal is publishLocal with its scratch (p, attrs) given: the session's
// on its loop, fresh ones elsewhere. onLoop says whether the ack may be
// written directly.
func (b *Bus) routeLocal(p *publishing, attrs *msgAttrs, sender *engine.Conn, ch *fanout.Channel, env *codec.Envelope, received time.Time, onLoop bool) {
	ack := wantsAck(env.Metadata)
	var sa *syncAck
	p.b, p.env, p.now, p.done, p.sender = b, env, received, nil, sender
	if ack && b.cfg.SyncAcks {
		sa = b.newSyncAck(sender, env)
		p.done = sa.stored
	}
	attrs.reset(env)
	var here *engine.Loop
	if onLoop {
		here = sender.Loop()
	}
	published := ch.PublishFrom(here, p, attrs)
	attrs.reset(nil)
	pos := p.pos
	p.env, p.done, p.sender = nil, nil, nil
	switch {
	case sa != nil:
		sa.routed(published.Recipients(), pos)
	case ack && onLoop:
		sender.Write(b.responseFrame(env, ackResult(published.Recipients(), pos, false)))
	case ack:
		sender.Send(b.responseFrame(env, ackResult(published.Recipients(), pos, false)))
	}
}

// private delivers to payload.target only.
func (b *Bus) private(s *session, env *codec.Envelope, msg []byte) {
	target, cerr := codec.DecodePrivateTarget(env.Payload)
	if cerr != nil {
		b.reject(s, env, cerr)
		return
	}
	s.agent.Activity(telemetry.ActivityPrivate, env.Room, env.Channel)
	c := b.hub.Client(target)
	if c == nil || c.Closed() {
		b.broker.private(s, env, target, msg)
		return
	}
	c.SendFrom(s.conn.Loop(), engine.TextFrame(msg))
	b.stats.privates.Add(1)
	if wantsAck(env.Metadata) {
		b.respond(s, env, ackResult(1, persist.Position{}, false))
	}
}

// command sends a command to a member that serves it on the target channel
// (on this node or another), or runs the built-in of that name.
func (b *Bus) command(s *session, env *codec.Envelope, msg []byte) {
	cmd, cerr := codec.DecodeCommand(env.Payload)
	if cerr != nil {
		b.reject(s, env, cerr)
		return
	}
	b.stats.commands.Add(1)
	if h := b.broker.pickHandler(fanout.Key{Room: env.Room, Channel: env.Channel}, cmd.Command); !h.none() {
		if h.conn != nil {
			b.forward(s, env, msg, h.conn)
		} else {
			b.broker.forward(s, env, cmd.Command, msg, h)
		}
		b.telemetryCommand(s, env, cmd.Command, "")
		return
	}
	builtin := b.builtins.Get(cmd.Command)
	if builtin == nil {
		b.stats.commandErrors.Add(1)
		b.telemetryCommand(s, env, cmd.Command, codec.CodeCommandNotFound)
		b.sendError(s, env, withField(codec.CommandNotFound("no built-in or handler for command "+quote(cmd.Command)+" on "+env.Room+":"+env.Channel), "payload.command"))
		return
	}
	req := &commands.Request{Env: env, Name: cmd.Command, Params: cmd.Parameters}
	if builtin.Name == commands.JoinChannel {
		// A join waits until the channel's events reach this node, so that the member misses
		// nothing published after its join was answered.
		if k, e := commands.Target(req); e == nil && !b.broker.ready(s, k, func() { b.runBuiltin(s, builtin, req) }) {
			return
		}
	}
	b.runBuiltin(s, builtin, req)
}

// runBuiltin runs a built-in command for s and answers it.
func (b *Bus) runBuiltin(s *session, builtin *commands.Command, req *commands.Request) {
	env := req.Env
	if builtin.Blocking || (builtin.Gathers && b.deps.Remote != nil) {
		b.telemetryCommand(s, env, builtin.Name, "")
		b.runBlocking(s, builtin, req)
		return
	}
	result, cerr := commands.Run(builtin, b.deps, s, req)
	if cerr != nil {
		b.stats.commandErrors.Add(1)
		b.telemetryCommand(s, env, builtin.Name, cerr.Code)
		b.sendError(s, env, cerr)
		return
	}
	b.telemetryCommand(s, env, builtin.Name, "")
	b.respond(s, env, result)
}

// runBlocking runs a command that may wait on a store off the event loop;
// its answer goes back through the connection's inbox.
func (b *Bus) runBlocking(s *session, cmd *commands.Command, req *commands.Request) {
	select {
	case b.blocking <- struct{}{}:
	default:
		b.stats.commandErrors.Add(1)
		b.sendError(s, req.Env, codec.Unavailable("too many commands waiting on storage; retry shortly"))
		return
	}
	if cmd.AdminOnly && !s.admin {
		<-b.blocking
		b.sendError(s, req.Env, codec.Forbidden(cmd.Name+" needs an admin client"))
		return
	}
	conn := s.conn
	go func() {
		defer func() { <-b.blocking }()
		answered := false
		defer func() {
			if !answered { // it panicked
				b.stats.commandErrors.Add(1)
				b.sendErrorTo(conn, req.Env.Room, req.Env.Channel, req.Env.ID, codec.Internal(cmd.Name+" failed"))
			}
		}()
		defer b.recoverOffLoop("blocking command " + cmd.Name)
		result, cerr := cmd.Run(b.deps, nil, req)
		answered = true
		if cerr != nil {
			b.stats.commandErrors.Add(1)
			b.sendErrorTo(conn, req.Env.Room, req.Env.Channel, req.Env.ID, cerr)
			return
		}
		conn.SendRequested(b.responseFrame(req.Env, result))
	}()
}

// forward hands a command, as sent, to the handler h and remembers who asked.
// When another requester's command with the same id is in flight to h, this
// one waits for it to be answered: h's answer names the command by its id
// alone.
func (b *Bus) forward(s *session, env *codec.Envelope, msg []byte, h *engine.Conn) {
	f := &commands.Inflight{RequestID: env.ID, Room: env.Room, Channel: env.Channel, Requester: s.conn, RequesterID: s.ID(),
		Handler: h, Frame: engine.TextFrame(msg)}
	b.addPending(s, env, f)
}

// sendToHandler sends a command to its local handler, now in flight there
// (commands.Pending's forward: it holds the table's lock).
func (b *Bus) sendToHandler(f *commands.Inflight, here *engine.Loop) {
	f.Handler.SendFrom(here, f.Frame)
	b.stats.forwarded.Add(1)
}

// addPending records f, a command s sent, as in flight to its handler (or
// waiting for its turn), or tells s why not.
func (b *Bus) addPending(s *session, env *codec.Envelope, f *commands.Inflight) bool {
	switch b.pending.Add(f, &s.outstanding, int32(b.cfg.MaxPendingCommands), s.conn.Loop()) {
	case commands.Full:
		b.stats.rateLimited.Add(1)
		b.sendError(s, env, codec.RateLimited("too many commands in flight; wait for answers", int64(b.cfg.CommandTimeout/time.Millisecond)))
		return false
	case commands.Conflict:
		b.sendError(s, env, withField(codec.Conflict("you have a command with this id in flight to that handler already"), "id"))
		return false
	}
	return true
}

// commandResponse routes a handler's answer to the requester alone.
func (b *Bus) commandResponse(s *session, env *codec.Envelope, msg []byte) {
	var p struct {
		RequestID string `json:"request_id"`
	}
	_ = sonic.ConfigDefault.Unmarshal(env.Payload, &p) // codec checked it is a string
	f := b.pending.Resolve(s.conn, p.RequestID)
	if f == nil {
		b.reject(s, env, withField(codec.NotFound("no command "+quote(p.RequestID)+" is awaiting your response"), "payload.request_id"))
		return
	}
	if f.Requester == nil {
		b.broker.answer(f, s.ID(), msg, nil)
		return
	}
	if !f.Requester.Closed() {
		f.Requester.SendRequestedFrom(s.conn.Loop(), engine.TextFrame(msg)) // an answer the requester asked for
	}
}

// commandTimedOut answers a requester whose handler did not. Timer goroutine.
// A command another node forwarded here times out there.
func (b *Bus) commandTimedOut(f *commands.Inflight) {
	defer b.recoverOffLoop("command timeout")
	if f.Requester == nil {
		return
	}
	b.stats.commandTimeouts.Add(1)
	b.sendErrorTo(f.Requester, f.Room, f.Channel, f.RequestID,
		codec.Timeout("no command_response within "+b.cfg.CommandTimeout.String()))
}

// telemetry re-broadcasts a client's telemetry on the telemetry stream.
func (b *Bus) telemetry(s *session, env *codec.Envelope, msg []byte) {
	frame := engine.TextFrame(msg)
	if ch := b.hub.Channel(TelemetryChannel); ch != nil {
		ch.PublishFrom(s.conn.Loop(), fanout.Frame{Data: frame, Sender: s.conn}, nil)
	}
	if b.tel != nil {
		b.tel.Forward(frame)
	}
}

var ackKey = []byte(`"ack"`)

// wantsAck reports metadata.ack == true, without decoding metadata that
// cannot hold it.
func wantsAck(meta []byte) bool {
	if len(meta) == 0 || !bytes.Contains(meta, ackKey) {
		return false
	}
	var m struct {
		Ack bool `json:"ack"`
	}
	return sonic.ConfigDefault.Unmarshal(meta, &m) == nil && m.Ack
}

// reject answers a bad envelope with an error and counts the violation;
// past the budget the connection is closed with 1008.
func (b *Bus) reject(s *session, env *codec.Envelope, e *codec.Error) {
	b.sendError(s, env, e)
	now := time.Now().UnixNano()
	if now-s.windowStart > int64(b.cfg.ViolationWindow) {
		s.windowStart, s.violations = now, 0
	}
	s.violations++
	if s.violations > b.cfg.MaxViolations {
		b.stats.violationCloses.Add(1)
		s.conn.CloseNow(engine.ClosePolicyViolation, "too many protocol violations")
	}
}

// sendError writes an error envelope addressed like env (when there is one).
func (b *Bus) sendError(s *session, env *codec.Envelope, e *codec.Error) {
	room, channel := "", ""
	if env != nil {
		room, channel = env.Room, env.Channel
		if e.RequestID == "" {
			e.RequestID = env.ID
		}
	}
	s.conn.Write(b.errorFrame(room, channel, e))
}

// sendErrorTo sends an error from any goroutine.
func (b *Bus) sendErrorTo(c *engine.Conn, room, channel, requestID string, e *codec.Error) {
	e.RequestID = requestID
	c.Send(b.errorFrame(room, channel, e))
}

func (b *Bus) errorFrame(room, channel string, e *codec.Error) []byte {
	b.stats.errored(e.Code)
	buf := make([]byte, engine.HeaderRoom, 256)
	buf = codec.AppendError(buf, b.ids.Next("err"), room, channel, time.Now(), e)
	return engine.FinishText(buf)
}

// respond writes a successful command_response to env with result (raw JSON): an answer the client
// asked for, not counted as a slow consumer's backlog while it reads.
func (b *Bus) respond(s *session, env *codec.Envelope, result []byte) {
	s.conn.WriteRequested(b.responseFrame(env, result))
}

func (b *Bus) responseFrame(env *codec.Envelope, result []byte) []byte {
	buf := make([]byte, engine.HeaderRoom, 128+len(result))
	buf = codec.AppendResponse(buf, b.ids.Next("resp"), env.Room, env.Channel, time.Now(), env.ID, result)
	return engine.FinishText(buf)
}

func withField(e *codec.Error, field string) *codec.Error {
	e.Field = field
	return e
}

func quote(s string) string { return string(codec.AppendString(nil, s)) }
