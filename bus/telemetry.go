package bus

import (
	"github.com/arqonbus/arqonbus/codec"
	"github.com/arqonbus/arqonbus/commands"
	"github.com/arqonbus/arqonbus/fanout"
	"github.com/arqonbus/arqonbus/telemetry"
)

// Telemetry hooks. Every one is a no-op without an emitter, and none blocks:
// the emitter drops (and counts) what it cannot queue.

func (b *Bus) emit(eventType string, fields map[string]any) {
	if b.tel != nil {
		b.tel.Emit(eventType, fields)
	}
}

func (b *Bus) telemetryConnected(s *session) {
	if b.tel == nil {
		return
	}
	if s.clientType == TypeAgent {
		s.agent = b.tel.Agent(s.ID(), s.personality)
	}
	b.tel.Emit("client_connected", map[string]any{
		"client_id": s.ID(), "client_type": s.clientType, "screen_name": s.screenName,
		"personality": s.personality, "remote": s.conn.RemoteAddr(),
	})
}

func (b *Bus) telemetryDisconnected(s *session) {
	if b.tel == nil {
		return
	}
	s.agent.Release()
	b.tel.Emit("client_disconnected", map[string]any{"client_id": s.ID(), "client_type": s.clientType})
}

func (b *Bus) telemetryCommand(s *session, env *codec.Envelope, name string, code string) {
	if b.tel == nil {
		return
	}
	s.agent.Activity(telemetry.ActivityCommand, env.Room, env.Channel)
	status := "success"
	if code != "" {
		status = "error"
	}
	f := map[string]any{"client_id": s.ID(), "client_type": s.clientType, "command": name, "status": status}
	if code != "" {
		f["code"] = code
	}
	b.tel.Emit("command_executed", f)
}

// events also tells telemetry about joins, leaves and channel changes.

func (e events) Joined(c commands.Caller, k fanout.Key, members int) {
	if e.b.tel == nil {
		return
	}
	if s, ok := c.(*session); ok {
		s.agent.Activity(telemetry.ActivityJoined, k.Room, k.Channel)
	}
	e.b.tel.Emit("channel_joined", map[string]any{"client_id": c.ID(), "client_type": c.ClientType(), "room": k.Room, "channel": k.Channel, "members": members})
}

func (e events) Left(c commands.Caller, k fanout.Key, members int) {
	if e.b.tel == nil {
		return
	}
	if s, ok := c.(*session); ok {
		s.agent.Activity(telemetry.ActivityLeft, k.Room, k.Channel)
	}
	e.b.tel.Emit("channel_left", map[string]any{"client_id": c.ID(), "client_type": c.ClientType(), "room": k.Room, "channel": k.Channel, "members": members})
}
