package bus

import (
	"strings"
	"time"

	"github.com/bytedance/sonic"

	"github.com/arqonbus/arqonbus/codec"
	"github.com/arqonbus/arqonbus/fanout"
)

// target is the parameters every channel command shares: room and channel,
// defaulting to the envelope's, and "room:channel" in either.
type target struct {
	Room    string `json:"room"`
	Channel string `json:"channel"`
}

// commandTarget resolves the channel a command acts on.
func commandTarget(env *codec.Envelope, params []byte) (fanout.Key, *codec.Error) {
	var t target
	if len(params) > 0 {
		if err := sonic.ConfigDefault.Unmarshal(params, &t); err != nil {
			return fanout.Key{}, codec.Validation("payload.parameters", "parameters.room and parameters.channel must be strings")
		}
	}
	k := fanout.Key{Room: env.Room, Channel: env.Channel}
	if t.Room != "" {
		if r, ch, ok := strings.Cut(t.Room, ":"); ok {
			if t.Channel != "" {
				return k, codec.Validation("payload.parameters.room", `room "room:channel" cannot be combined with channel`)
			}
			t.Room, t.Channel = r, ch
		}
		k.Room = t.Room
	}
	if t.Channel != "" {
		k.Channel = t.Channel
	}
	if !codec.ValidName(k.Room) {
		return k, codec.Validation("payload.parameters.room", "room must match [a-z0-9][a-z0-9_.-]{0,63}")
	}
	if !codec.ValidName(k.Channel) {
		return k, codec.Validation("payload.parameters.channel", "channel must match [a-z0-9][a-z0-9_.-]{0,63}")
	}
	return k, nil
}

// command runs a built-in command.
func (b *Bus) command(s *session, env *codec.Envelope) {
	cmd, cerr := codec.DecodeCommand(env.Payload)
	if cerr != nil {
		b.reject(s, env, cerr)
		return
	}
	b.stats.commands.Add(1)
	var result []byte
	switch cmd.Command {
	case "join_channel":
		result, cerr = b.joinChannel(s, env, cmd.Parameters)
	case "leave_channel":
		result, cerr = b.leaveChannel(s, env, cmd.Parameters)
	case "ping":
		result, cerr = b.ping()
	case "status":
		result, cerr = b.status()
	default:
		cerr = withField(codec.CommandNotFound("unknown command "+quote(cmd.Command)), "payload.command")
	}
	if cerr != nil {
		b.sendError(s, env, cerr)
		return
	}
	b.respond(s, env, result)
}

func (b *Bus) joinChannel(s *session, env *codec.Envelope, params []byte) ([]byte, *codec.Error) {
	k, cerr := commandTarget(env, params)
	if cerr != nil {
		return nil, cerr
	}
	ch, joined, err := b.hub.Join(k, s.conn)
	if err != nil {
		return nil, codec.NotFound("channel " + k.String() + " does not exist")
	}
	s.channels[k] = ch
	return marshal(struct {
		Room    string `json:"room"`
		Channel string `json:"channel"`
		Joined  bool   `json:"joined"`
		Members int    `json:"members"`
	}{k.Room, k.Channel, joined, ch.Members()})
}

func (b *Bus) leaveChannel(s *session, env *codec.Envelope, params []byte) ([]byte, *codec.Error) {
	k, cerr := commandTarget(env, params)
	if cerr != nil {
		return nil, cerr
	}
	ch := s.channels[k]
	if ch == nil {
		return nil, codec.NotFound("not a member of " + k.String())
	}
	b.hub.Leave(ch, s.conn)
	delete(s.channels, k)
	return marshal(struct {
		Room    string `json:"room"`
		Channel string `json:"channel"`
		Left    bool   `json:"left"`
		Members int    `json:"members"`
	}{k.Room, k.Channel, true, ch.Members()})
}

func (b *Bus) ping() ([]byte, *codec.Error) {
	out := []byte(`{"pong":true,"server_time":`)
	out = codec.AppendTimestamp(out, time.Now())
	return append(out, '}'), nil
}

func marshal(v any) ([]byte, *codec.Error) {
	out, err := sonic.ConfigDefault.Marshal(v)
	if err != nil {
		return nil, codec.Internal("encoding the result failed")
	}
	return out, nil
}

func quote(s string) string { return string(codec.AppendString(nil, s)) }
