package commands

import (
	"context"
	"errors"
	"sort"
	"strconv"
	"time"

	"github.com/bytedance/sonic"

	"github.com/arqonbus/arqonbus/codec"
	"github.com/arqonbus/arqonbus/engine"
	"github.com/arqonbus/arqonbus/fanout"
)

type joinParams struct {
	channelParams
	Filter  map[string]sonic.NoCopyRawMessage `json:"filter"`
	Handles []string                          `json:"handles"`
	Since   string                            `json:"since"`
}

// maxFilterTerms and maxHandles bound what one join may ask of the router.
const (
	maxFilterTerms = 16
	maxHandles     = 64
)

// JoinChannel is the name of the join command, which the bus may hold back
// until the channel's events reach the node.
const JoinChannel = "join_channel"

// Target is the channel a command acts on, from its envelope and its room
// and channel parameters.
func Target(r *Request) (fanout.Key, *codec.Error) { return requestTarget(r) }

func joinChannelCommand() *Command {
	return &Command{
		Name:        JoinChannel,
		Description: "Join a channel (created if missing, unless auto-create is off) and receive its events.",
		Params: map[string]string{
			"room": "room, or \"room:channel\" (default: the envelope's)", "channel": "channel (default: the envelope's)",
			"filter":  "object of metadata key/value pairs: receive only events whose metadata (or payload.metadata) match all",
			"handles": "array of command names this client serves for the channel",
			"since": "a history position (or RFC 3339 time): first replay what was published after it, then go live; " +
				"a replay too big to send at once keeps the newest part and says omitted_until (history since..until pages through the rest)",
		},
		Run: func(d *Deps, c Caller, r *Request) ([]byte, *codec.Error) {
			var p joinParams
			if e := decodeParams(r.Params, &p); e != nil {
				return nil, e
			}
			k, e := target(r.Env, p.channelParams)
			if e != nil {
				return nil, e
			}
			filter, e := buildFilter(p.Filter)
			if e != nil {
				return nil, e
			}
			if len(p.Handles) > maxHandles {
				return nil, codec.Validation("payload.parameters.handles", "at most 64 command names")
			}
			for _, h := range p.Handles {
				if h == "" || len(h) > 64 {
					return nil, codec.Validation("payload.parameters.handles", "command names must be 1 to 64 characters")
				}
			}
			if c.Subscription(k) == nil && d.MaxSubscriptions > 0 && c.Subscriptions() >= d.MaxSubscriptions {
				return nil, codec.Forbidden("subscription limit reached: a client may join at most " + itoa(d.MaxSubscriptions) + " channels")
			}
			var before func(*fanout.Channel)
			var replay *ReplayResult
			if p.Since != "" {
				if d.Replayer == nil {
					return nil, codec.Unavailable("no history on this node to replay from")
				}
				if before, replay, e = d.Replayer.Replay(p.Since, c.Conn(), filter); e != nil {
					return nil, e
				}
			}
			// The position is read under the channel lock, with the replay: every event the member
			// gets live comes after it, so a client that reconnects resumes from it without a gap.
			var position string
			atJoin := before
			if d.Position != nil {
				atJoin = func(ch *fanout.Channel) {
					if before != nil {
						before(ch)
					}
					position = d.Position(ch)
				}
			}
			ch, joined, err := d.Hub.Join(k, c.Conn(), filter, atJoin)
			if e := channelLimit(err); e != nil {
				return nil, e
			}
			if err != nil {
				return nil, codec.NotFound("channel " + k.String() + " does not exist (auto-create is off)")
			}
			c.Subscribe(k, ch)
			if p.Handles != nil {
				ch.SetHandles(c.Conn(), p.Handles)
			}
			members := ch.Members()
			if joined && d.Events != nil {
				d.Events.Joined(c, k, members)
			}
			return marshal(struct {
				Room    string   `json:"room"`
				Channel string   `json:"channel"`
				Joined  bool     `json:"joined"`
				Members int      `json:"members"`
				Filter  any      `json:"filter,omitempty"`
				Handles []string `json:"handles,omitempty"`
				// Position: the channel's newest position when the member joined ("0-0" for none).
				Position string        `json:"position,omitempty"`
				Replay   *ReplayResult `json:"replay,omitempty"`
			}{k.Room, k.Channel, joined, members, filterJSON(filter), p.Handles, position, replay})
		},
	}
}

// buildFilter turns the filter parameter into terms of compact JSON scalars.
func buildFilter(raw map[string]sonic.NoCopyRawMessage) (fanout.Filter, *codec.Error) {
	if len(raw) > maxFilterTerms {
		return nil, codec.Validation("payload.parameters.filter", "at most 16 filter terms")
	}
	kv := make(map[string]string, len(raw))
	for k, v := range raw {
		val, ok := CompactScalar(v)
		if !ok {
			return nil, codec.Validation("payload.parameters.filter", "filter values must be strings, numbers, booleans or null")
		}
		kv[k] = val
	}
	return fanout.NewFilter(kv), nil
}

func filterJSON(f fanout.Filter) map[string]sonic.NoCopyRawMessage {
	if len(f) == 0 {
		return nil
	}
	out := make(map[string]sonic.NoCopyRawMessage, len(f))
	for _, t := range f {
		out[t.Key] = sonic.NoCopyRawMessage(t.Value)
	}
	return out
}

func leaveChannelCommand() *Command {
	return &Command{
		Name:        "leave_channel",
		Description: "Leave a channel.",
		Params:      map[string]string{"room": "room, or \"room:channel\"", "channel": "channel"},
		Run: func(d *Deps, c Caller, r *Request) ([]byte, *codec.Error) {
			k, e := requestTarget(r)
			if e != nil {
				return nil, e
			}
			ch := c.Subscription(k)
			if ch == nil {
				return nil, codec.NotFound("not a member of " + k.String())
			}
			d.Hub.Leave(ch, c.Conn())
			c.Unsubscribe(k)
			members := ch.Members()
			if d.Events != nil {
				d.Events.Left(c, k, members)
			}
			return marshal(struct {
				Room    string `json:"room"`
				Channel string `json:"channel"`
				Left    bool   `json:"left"`
				Members int    `json:"members"`
			}{k.Room, k.Channel, true, members})
		},
	}
}

type channelSummary struct {
	Channel      string    `json:"channel"`
	Members      int       `json:"members"`
	Published    uint64    `json:"published"`
	Bootstrap    bool      `json:"bootstrap"`
	Created      time.Time `json:"created"`
	LastActivity time.Time `json:"last_activity"`
}

// Paging of list_channels: a page holds limit channels (default, most).
const (
	DefaultChannelsPage = 100
	MaxChannelsPage     = 1000
)

type listChannelsParams struct {
	channelParams
	Limit *int   `json:"limit"`
	After string `json:"after"`
}

// ChannelsPage asks for a page of a room's channels: the first Limit by
// name after After. It travels to the other nodes of a cluster as the
// argument of their ViewChannels; an empty argument (from a node before
// paging) asks for every channel of the room.
type ChannelsPage struct {
	After string `json:"after,omitempty"`
	Limit int    `json:"limit"`
}

func listChannelsCommand() *Command {
	return &Command{
		Name:        "list_channels",
		Description: "A room's channels with member counts, created time and last activity, by name, one page at a time: a result with next has more; ask again with after = next.",
		Params: map[string]string{
			"room":  "room (default: the envelope's)",
			"limit": "channels per page, default 100, at most 1000",
			"after": "list the channels whose names come after this one (the previous page's next)",
		},
		Gathers: true,
		Run: func(d *Deps, _ Caller, r *Request) ([]byte, *codec.Error) {
			var p listChannelsParams
			if e := decodeParams(r.Params, &p); e != nil {
				return nil, e
			}
			room := r.Env.Room
			if p.Room != "" {
				room = p.Room
				if k, e := target(r.Env, p.channelParams); e == nil && p.Channel == "" && k.Room != p.Room {
					room = k.Room // "room:channel" given: list its room
				}
			}
			if !codec.ValidName(room) {
				return nil, codec.Validation("payload.parameters.room", "room must match [a-z0-9][a-z0-9_.-]{0,63}")
			}
			page := ChannelsPage{After: p.After, Limit: DefaultChannelsPage}
			if p.Limit != nil {
				if *p.Limit < 1 {
					return nil, codec.Validation("payload.parameters.limit", "limit must be at least 1")
				}
				page.Limit = min(*p.Limit, MaxChannelsPage)
			}
			if page.After != "" && !codec.ValidName(page.After) {
				return nil, codec.Validation("payload.parameters.after", "after must be a channel name, [a-z0-9][a-z0-9_.-]{0,63}")
			}
			// One more than the page, to know whether there is a next one.
			ask := ChannelsPage{After: page.After, Limit: page.Limit + 1}
			list := localChannels(d, room, ask)
			if d.Remote != nil {
				arg, _ := sonic.ConfigDefault.Marshal(ask)
				list = mergeChannels(list, gather(d, ViewChannels, fanout.Key{Room: room}, arg), ask.Limit)
			}
			next := ""
			if len(list) > page.Limit {
				list = list[:page.Limit]
				next = list[page.Limit-1].Channel
			}
			return marshal(struct {
				Room     string           `json:"room"`
				Channels []channelSummary `json:"channels"`
				Next     string           `json:"next,omitempty"`
			}{room, list, next})
		},
	}
}

// localChannels is this node's part of a page of room's channels: the first
// page.Limit by name after page.After (every channel of the room when
// page.Limit is 0), sorted by name.
func localChannels(d *Deps, room string, page ChannelsPage) []channelSummary {
	limit := page.Limit
	if limit <= 0 {
		limit = int(^uint(0) >> 1)
	}
	best := NewBest(limit, func(a, b *fanout.Channel) bool { return a.Key.Channel < b.Key.Channel })
	d.Hub.WalkChannels(func(ch *fanout.Channel) {
		if ch.Key.Room == room && ch.Key.Channel > page.After {
			best.Offer(ch)
		}
	})
	chans := best.Sorted()
	list := make([]channelSummary, len(chans))
	for i, ch := range chans {
		list[i] = summarize(ch)
	}
	return list
}

// mergeChannels adds the other nodes' lists to this node's and keeps the first limit by name: members
// add up, and a channel is as old as its oldest record and as active as its latest. Every node that has
// a channel's subscription counts each of its events, so published is the largest count, not the sum.
// Each node sent the first limit of its own channels after the same cursor, so every record of the
// first limit of the union is here.
func mergeChannels(list []channelSummary, answers [][]byte, limit int) []channelSummary {
	at := make(map[string]int, len(list))
	for i, c := range list {
		at[c.Channel] = i
	}
	for _, a := range answers {
		var theirs []channelSummary
		if sonic.ConfigDefault.Unmarshal(a, &theirs) != nil {
			continue
		}
		for _, c := range theirs {
			i, ok := at[c.Channel]
			if !ok {
				at[c.Channel] = len(list)
				list = append(list, c)
				continue
			}
			m := &list[i]
			m.Members += c.Members
			m.Published = max(m.Published, c.Published)
			m.Bootstrap = m.Bootstrap || c.Bootstrap
			if c.Created.Before(m.Created) {
				m.Created = c.Created
			}
			if c.LastActivity.After(m.LastActivity) {
				m.LastActivity = c.LastActivity
			}
		}
	}
	sort.Slice(list, func(i, j int) bool { return list[i].Channel < list[j].Channel })
	if len(list) > limit {
		list = list[:limit]
	}
	return list
}

func summarize(ch *fanout.Channel) channelSummary {
	return channelSummary{
		Channel: ch.Key.Channel, Members: ch.Members(), Published: ch.Published(), Bootstrap: ch.Bootstrap,
		Created: ch.Created.UTC(), LastActivity: ch.LastActivity().UTC(),
	}
}

// MemberInfo describes a member; the engine connection's Value provides it.
type MemberInfo interface {
	ID() string
	ClientType() string
}

type memberView struct {
	ClientID   string `json:"client_id"`
	ClientType string `json:"client_type"`
	Node       string `json:"node,omitempty"` // in a cluster: the node it is connected to
}

// channelView is one node's record of a channel.
type channelView struct {
	Room         string         `json:"room"`
	Channel      string         `json:"channel"`
	MemberCount  int            `json:"member_count"`
	Members      []memberView   `json:"members"` // at most MaxListedMembers of them
	Truncated    bool           `json:"members_truncated,omitempty"`
	Published    uint64         `json:"published"`
	Bootstrap    bool           `json:"bootstrap"`
	Created      time.Time      `json:"created"`
	LastActivity time.Time      `json:"last_activity"`
	Handlers     map[string]int `json:"handlers"`
	exists       bool
}

func localChannel(d *Deps, k fanout.Key) channelView {
	v := channelView{Room: k.Room, Channel: k.Channel, Members: []memberView{}, Handlers: map[string]int{}}
	ch := d.Hub.Channel(k)
	if ch == nil {
		return v
	}
	v.exists = true
	ch.ForEachMember(func(conn *engine.Conn) {
		if mi, ok := conn.Value.(MemberInfo); ok {
			v.MemberCount++
			if len(v.Members) < MaxListedMembers {
				v.Members = append(v.Members, memberView{mi.ID(), mi.ClientType(), d.NodeID})
			}
		}
	})
	v.Truncated = v.MemberCount > len(v.Members)
	v.Published, v.Bootstrap = ch.Published(), ch.Bootstrap
	v.Created, v.LastActivity = ch.Created.UTC(), ch.LastActivity().UTC()
	v.Handlers = ch.Handlers()
	return v
}

// clusterChannel is channel k as the whole cluster has it.
func clusterChannel(d *Deps, k fanout.Key) channelView {
	v := localChannel(d, k)
	if d.Remote == nil {
		return v
	}
	for _, a := range gather(d, ViewChannel, k, nil) {
		var theirs channelView
		if sonic.ConfigDefault.Unmarshal(a, &theirs) != nil || theirs.Created.IsZero() {
			continue // a node without the channel answers with no creation time
		}
		if !v.exists || theirs.Created.Before(v.Created) {
			v.Created = theirs.Created
		}
		v.exists = true
		v.MemberCount += max(theirs.MemberCount, len(theirs.Members))
		v.Members = append(v.Members, theirs.Members[:min(len(theirs.Members), MaxListedMembers-len(v.Members))]...)
		v.Published = max(v.Published, theirs.Published)
		v.Bootstrap = v.Bootstrap || theirs.Bootstrap
		if theirs.LastActivity.After(v.LastActivity) {
			v.LastActivity = theirs.LastActivity
		}
	}
	for name, n := range d.Remote.Handlers(k) {
		v.Handlers[name] += n
	}
	v.Truncated = v.MemberCount > len(v.Members)
	return v
}

// MaxListedMembers bounds the members channel_info lists: a channel of 20,000 members would otherwise
// cost a megabyte answer built on the event loop at every call. member_count still counts them all.
const MaxListedMembers = 1000

func channelInfoCommand() *Command {
	return &Command{
		Name:        "channel_info",
		Description: "A channel's members with their client types (the first 1000; member_count counts all, members_truncated says when some are not listed), its counters and its command handlers.",
		Params:      map[string]string{"room": "room, or \"room:channel\"", "channel": "channel"},
		Gathers:     true,
		Run: func(d *Deps, _ Caller, r *Request) ([]byte, *codec.Error) {
			k, e := requestTarget(r)
			if e != nil {
				return nil, e
			}
			v := clusterChannel(d, k)
			if !v.exists {
				return nil, codec.NotFound("channel " + k.String() + " does not exist")
			}
			if d.Remote == nil {
				for i := range v.Members {
					v.Members[i].Node = ""
				}
			}
			return marshal(v)
		},
	}
}

func createChannelCommand() *Command {
	return &Command{
		Name:        "create_channel",
		Description: "Create a channel (admin only).",
		Params:      map[string]string{"room": "room, or \"room:channel\"", "channel": "channel"},
		AdminOnly:   true,
		Run: func(d *Deps, c Caller, r *Request) ([]byte, *codec.Error) {
			k, e := requestTarget(r)
			if e != nil {
				return nil, e
			}
			if _, err := d.Hub.Create(k); err != nil {
				if e := channelLimit(err); e != nil {
					return nil, e
				}
				return nil, codec.Conflict("channel " + k.String() + " already exists")
			}
			if d.Events != nil {
				d.Events.ChannelCreated(c, k)
			}
			return marshal(struct {
				Room    string `json:"room"`
				Channel string `json:"channel"`
				Created bool   `json:"created"`
			}{k.Room, k.Channel, true})
		},
	}
}

func deleteChannelCommand() *Command {
	return &Command{
		Name:        "delete_channel",
		Description: "Delete a channel that has no members (admin only; bootstrap channels are never deleted).",
		Params:      map[string]string{"room": "room, or \"room:channel\"", "channel": "channel"},
		AdminOnly:   true,
		Gathers:     true,
		Run: func(d *Deps, c Caller, r *Request) ([]byte, *codec.Error) {
			k, e := requestTarget(r)
			if e != nil {
				return nil, e
			}
			if d.Remote != nil {
				// Members on other nodes keep the channel; this node's own check is the hub's.
				v := clusterChannel(d, k)
				switch {
				case !v.exists:
					return nil, codec.NotFound("channel " + k.String() + " does not exist")
				case v.Bootstrap:
					return nil, codec.Conflict("channel " + k.String() + " is a bootstrap channel and cannot be deleted")
				case v.MemberCount > 0:
					return nil, codec.Conflict("channel " + k.String() + " has members")
				}
			}
			switch err := d.Hub.Delete(k); err {
			case nil:
			case fanout.ErrChannelNotFound:
				if d.Remote == nil {
					return nil, codec.NotFound("channel " + k.String() + " does not exist")
				}
			case fanout.ErrBootstrap:
				return nil, codec.Conflict("channel " + k.String() + " is a bootstrap channel and cannot be deleted")
			default:
				return nil, codec.Conflict("channel " + k.String() + " has members")
			}
			if d.Events != nil {
				d.Events.ChannelDeleted(c, k)
			}
			return marshal(struct {
				Room    string `json:"room"`
				Channel string `json:"channel"`
				Deleted bool   `json:"deleted"`
			}{k.Room, k.Channel, true})
		},
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

// channelLimitRetryMs is the retry_after_ms of a refusal at the channel cap:
// idle channels are evicted every few seconds to minutes, so a retry soon
// may find room.
const channelLimitRetryMs = 5000

// channelLimit is the answer to a new channel refused at the hub's cap, or
// nil for any other error.
func channelLimit(err error) *codec.Error {
	var le *fanout.LimitError
	if !errors.As(err, &le) {
		return nil
	}
	return codec.RateLimited(le.Error(), channelLimitRetryMs)
}

// Kinds of LocalView, the parts of cluster-wide answers.
const (
	ViewChannels = "channels" // a room's channels (k.Room)
	ViewChannel  = "channel"  // one channel: members, counters, handlers
)

// gatherTimeout bounds how long a cluster-wide answer waits for the other nodes.
const gatherTimeout = time.Second

func gather(d *Deps, kind string, k fanout.Key, arg []byte) [][]byte {
	ctx, cancel := context.WithTimeout(context.Background(), gatherTimeout)
	defer cancel()
	return d.Remote.Gather(ctx, kind, k, arg)
}

// LocalView is this node's part of a cluster-wide answer of kind about k, as JSON; arg is what the
// asking node added (ViewChannels: a ChannelsPage).
func LocalView(d *Deps, kind string, k fanout.Key, arg []byte) []byte {
	var v any
	switch kind {
	case ViewChannels:
		var page ChannelsPage
		if len(arg) > 0 && sonic.ConfigDefault.Unmarshal(arg, &page) != nil {
			return []byte("null")
		}
		page.Limit = min(max(page.Limit, 0), MaxChannelsPage+1)
		v = localChannels(d, k.Room, page)
	case ViewChannel:
		v = localChannel(d, k)
	default:
		return []byte("null")
	}
	out, cerr := marshal(v)
	if cerr != nil {
		return []byte("null")
	}
	return out
}
