package bus

import (
	"bytes"
	"time"

	"github.com/bytedance/sonic"

	"github.com/arqonbus/arqonbus/codec"
	"github.com/arqonbus/arqonbus/engine"
	"github.com/arqonbus/arqonbus/fanout"
)

// Message decodes, checks and dispatches one client envelope.
func (b *Bus) Message(c *engine.Conn, msg []byte) {
	s := sessionOf(c)
	if !s.registered {
		return
	}
	env, cerr := codec.Decode(msg)
	if cerr != nil {
		b.reject(s, env, cerr)
		return
	}
	b.stats.received(env.Type)
	if env.Type == codec.TypeSystem || env.Type == codec.TypeError {
		b.reject(s, env, withField(codec.Forbidden("clients may not send "+env.Type.String()+" envelopes"), "type"))
		return
	}
	if env.From != s.id {
		if !s.claimable {
			b.reject(s, env, withField(codec.Forbidden("from must be your client id "+s.id), "from"))
			return
		}
		if e := b.claim(s, env.From); e != nil {
			b.reject(s, env, withField(e, "from"))
			return
		}
	}
	s.claimable = false

	switch env.Type {
	case codec.TypeEvent:
		b.publish(s, env, msg)
	case codec.TypePrivate:
		b.private(s, env, msg)
	case codec.TypeCommand:
		b.command(s, env)
	case codec.TypeTelemetry:
		b.telemetry(s, env, msg)
	case codec.TypeCommandResponse:
		b.reject(s, env, codec.NotFound("no pending command with that request_id"))
	}
}

// publish routes an event to its channel's other members, as the sender sent it.
func (b *Bus) publish(s *session, env *codec.Envelope, msg []byte) {
	k := fanout.Key{Room: env.Room, Channel: env.Channel}
	ch := s.channels[k]
	if ch == nil {
		b.reject(s, env, codec.Forbidden("join "+k.String()+" before publishing to it"))
		return
	}
	seq, members := ch.Publish(engine.TextFrame(msg), s.conn)
	if wantsAck(env.Metadata) {
		b.respond(s, env, ackResult(members-1, seq))
	}
}

// private delivers to payload.target only.
func (b *Bus) private(s *session, env *codec.Envelope, msg []byte) {
	target, cerr := codec.DecodePrivateTarget(env.Payload)
	if cerr != nil {
		b.reject(s, env, cerr)
		return
	}
	if !b.hub.SendTo(target, engine.TextFrame(msg)) {
		b.reject(s, env, withField(codec.TargetNotFound("client "+target+" is not connected"), "payload.target"))
		return
	}
	b.stats.privates.Add(1)
	if wantsAck(env.Metadata) {
		b.respond(s, env, ackResult(1, 0))
	}
}

// telemetry re-broadcasts a client's telemetry on the telemetry stream.
func (b *Bus) telemetry(s *session, env *codec.Envelope, msg []byte) {
	if ch := b.hub.Channel(TelemetryChannel); ch != nil {
		ch.Publish(engine.TextFrame(msg), s.conn)
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

func ackResult(delivered int, seq uint64) []byte {
	out := []byte(`{"routed":true,"delivered":`)
	out = appendInt(out, int64(max(delivered, 0)))
	if seq > 0 {
		out = append(out, `,"position":`...)
		out = appendInt(out, int64(seq))
	}
	return append(out, '}')
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
	b.stats.errored(e.Code)
	buf := make([]byte, engine.HeaderRoom, 256)
	buf = codec.AppendError(buf, b.ids.Next("err"), room, channel, time.Now(), e)
	s.conn.Write(engine.FinishText(buf))
}

// respond writes a successful command_response to env with result (raw JSON).
func (b *Bus) respond(s *session, env *codec.Envelope, result []byte) {
	buf := make([]byte, engine.HeaderRoom, 128+len(result))
	buf = codec.AppendResponse(buf, b.ids.Next("resp"), env.Room, env.Channel, time.Now(), env.ID, result)
	s.conn.Write(engine.FinishText(buf))
}

func withField(e *codec.Error, field string) *codec.Error {
	e.Field = field
	return e
}
