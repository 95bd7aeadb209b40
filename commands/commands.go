// Package commands owns ArqonBus's built-in commands and the table of
// commands in flight to the clients that serve them.
//
// A built-in runs on the caller's event loop and must not block; one that
// reads a remote store is marked Blocking and the bus runs it off the loop.
package commands

import (
	"context"
	"strings"

	"github.com/bytedance/sonic"

	"github.com/arqonbus/arqonbus/codec"
	"github.com/arqonbus/arqonbus/engine"
	"github.com/arqonbus/arqonbus/fanout"
)

// Caller is the session that sent a command. Its methods are called on the
// caller's event loop only (never by Blocking commands).
type Caller interface {
	ID() string
	ClientType() string
	Admin() bool
	Conn() *engine.Conn
	// Subscription returns the caller's membership of k, or nil.
	Subscription(k fanout.Key) *fanout.Channel
	// Subscribe and Unsubscribe keep the caller's own list of memberships.
	Subscribe(k fanout.Key, ch *fanout.Channel)
	Unsubscribe(k fanout.Key)
	Subscriptions() int
}

// Deps is what the built-ins act on.
type Deps struct {
	Hub              *fanout.Hub
	MaxSubscriptions int
	// AnswerBytes bounds a history answer in bytes (at least one entry); 0: no bound.
	AnswerBytes int
	// Status returns the status command's result (the bus knows its counters).
	Status func() any
	// Events reports membership and channel changes (telemetry); may be nil.
	Events Events
	// Replayer serves join_channel's since; may be nil (no history).
	Replayer Replayer
	// Position is the channel's newest history position ("0-0" for none), read under its lock at a
	// join: what a member that has seen nothing yet resumes from. May be nil (no positions).
	Position func(ch *fanout.Channel) string
	// Remote reaches the other nodes of a cluster; nil on a standalone bus.
	Remote Remote
	// NodeID names this node in cluster-wide answers.
	NodeID string
}

// Remote reaches the other nodes of a cluster.
type Remote interface {
	// Gather asks every other live node for its LocalView of kind, k and arg, and returns the answers
	// that arrived before ctx ended.
	Gather(ctx context.Context, kind string, k fanout.Key, arg []byte) [][]byte
	// Handlers counts, by command name, the handlers of k on other nodes that this node routes
	// commands to: what channel_info reports, so that it never shows a handler routing does not
	// know yet.
	Handlers(k fanout.Key) map[string]int
}

// Replayer sends a joining member the messages it missed.
type Replayer interface {
	// Replay checks since and returns the function to run under the
	// channel's lock, just before c becomes a member, and the result it
	// fills in. It replays what c would have received live: the events
	// filter matches, but not c's own.
	Replay(since string, c *engine.Conn, filter fanout.Filter) (before func(*fanout.Channel), res *ReplayResult, err *codec.Error)
}

// ReplayResult says what a join's replay sent.
type ReplayResult struct {
	Replayed int    `json:"replayed"`
	Last     string `json:"last_position,omitempty"`
	// Complete is false when the replay lacks some of what was missed: history older than what is
	// kept was asked for (gone), or the oldest part was left out for its size (OmittedUntil).
	Complete bool `json:"complete"`
	// OmittedUntil, when set, is the newest position left out of the replay because the whole would
	// have been too big to send at once: history with since (the join's) and until (this) pages
	// through what was left out, which comes just before the first replayed event.
	OmittedUntil string `json:"omitted_until,omitempty"`
}

// Events hears about what commands change. Implementations must not block.
type Events interface {
	Joined(c Caller, k fanout.Key, members int)
	Left(c Caller, k fanout.Key, members int)
	ChannelCreated(c Caller, k fanout.Key)
	ChannelDeleted(c Caller, k fanout.Key)
}

// Request is one command as the bus received it.
type Request struct {
	Env    *codec.Envelope
	Name   string
	Params []byte // raw parameters object, or nil
}

// Command is one built-in.
type Command struct {
	Name        string
	Description string
	Params      map[string]string // parameter -> what it means, for help
	AdminOnly   bool
	// Blocking commands run off the event loop: they may wait on a store,
	// and must not touch the Caller.
	Blocking bool
	// Gathers: in a cluster (Deps.Remote set) the command asks the other
	// nodes, so it is Blocking there.
	Gathers bool
	Run     func(d *Deps, c Caller, r *Request) (result []byte, err *codec.Error)
}

// Set is the built-ins by name.
type Set struct {
	byName map[string]*Command
	order  []*Command
}

// Get returns the built-in called name, or nil.
func (s *Set) Get(name string) *Command { return s.byName[name] }

// Names lists the built-ins, in help's order.
func (s *Set) Names() []string {
	out := make([]string, len(s.order))
	for i, c := range s.order {
		out[i] = c.Name
	}
	return out
}

func (s *Set) add(cmds ...*Command) {
	if s.byName == nil {
		s.byName = make(map[string]*Command)
	}
	for _, c := range cmds {
		s.byName[c.Name] = c
		s.order = append(s.order, c)
	}
}

// Builtins returns the SPEC's built-in commands; history reads from store.
func Builtins(store HistoryReader) *Set {
	s := &Set{}
	s.add(statusCommand(), pingCommand(), listChannelsCommand(), channelInfoCommand(),
		createChannelCommand(), deleteChannelCommand(), joinChannelCommand(), leaveChannelCommand(),
		historyCommand(store))
	s.add(helpCommand(s))
	return s
}

// Run runs cmd for c, checking the admin rule first.
func Run(cmd *Command, d *Deps, c Caller, r *Request) ([]byte, *codec.Error) {
	if cmd.AdminOnly && !c.Admin() {
		return nil, codec.Forbidden(cmd.Name + " needs an admin client")
	}
	return cmd.Run(d, c, r)
}

// channelParams are the parameters every channel command shares.
type channelParams struct {
	Room    string `json:"room"`
	Channel string `json:"channel"`
}

// decodeParams decodes a command's parameters object into v.
func decodeParams(raw []byte, v any) *codec.Error {
	if len(raw) == 0 {
		return nil
	}
	if err := sonic.ConfigDefault.Unmarshal(raw, v); err != nil {
		return codec.Validation("payload.parameters", "parameters: "+firstLine(err.Error()))
	}
	return nil
}

// requestTarget is target for commands whose only parameters are room and
// channel.
func requestTarget(r *Request) (fanout.Key, *codec.Error) {
	var p channelParams
	if e := decodeParams(r.Params, &p); e != nil {
		return fanout.Key{}, e
	}
	return target(r.Env, p)
}

// target resolves the channel a command acts on: the envelope's room and
// channel unless the parameters name others, "room:channel" allowed.
func target(env *codec.Envelope, p channelParams) (fanout.Key, *codec.Error) {
	k := fanout.Key{Room: env.Room, Channel: env.Channel}
	if p.Room != "" {
		if r, ch, ok := strings.Cut(p.Room, ":"); ok {
			if p.Channel != "" {
				return k, codec.Validation("payload.parameters.room", `room given as "room:channel" cannot be combined with channel`)
			}
			p.Room, p.Channel = r, ch
		}
		k.Room = p.Room
	}
	if p.Channel != "" {
		k.Channel = p.Channel
	}
	if !codec.ValidName(k.Room) {
		return k, codec.Validation("payload.parameters.room", "room must match [a-z0-9][a-z0-9_.-]{0,63}")
	}
	if !codec.ValidName(k.Channel) {
		return k, codec.Validation("payload.parameters.channel", "channel must match [a-z0-9][a-z0-9_.-]{0,63}")
	}
	return k, nil
}

func marshal(v any) ([]byte, *codec.Error) {
	out, err := sonic.ConfigDefault.Marshal(v)
	if err != nil {
		return nil, codec.Internal("encoding the result failed")
	}
	return out, nil
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}
