package commands

import (
	"context"
	"time"

	"github.com/bytedance/sonic"

	"github.com/arqonbus/arqonbus/codec"
	"github.com/arqonbus/arqonbus/fanout"
)

// HistoryQuery asks for a channel's history: Limit entries (1 to 1000),
// after Since and up to Until (each a history position or an RFC 3339
// time, empty for no bound).
type HistoryQuery struct {
	Key          fanout.Key
	Limit        int
	Since, Until string
}

// HistoryEntry is one stored envelope and its position.
type HistoryEntry struct {
	Position string
	Envelope []byte // the envelope JSON as routed
}

// HistoryReader reads history; it may wait on a store, so history is a
// Blocking command.
type HistoryReader interface {
	History(ctx context.Context, q HistoryQuery) ([]HistoryEntry, *codec.Error)
}

// historyTimeout bounds one history read.
const historyTimeout = 3 * time.Second

type historyParams struct {
	channelParams
	Limit *int   `json:"limit"`
	Since string `json:"since"`
	Until string `json:"until"`
}

func historyCommand(store HistoryReader) *Command {
	return &Command{
		Name:        "history",
		Description: "A channel's stored events, oldest first, each the original envelope with its position.",
		Params: map[string]string{
			"room": "room, or \"room:channel\"", "channel": "channel",
			"limit": "entries to return, default 50, at most 1000",
			"since": "only after this position or RFC 3339 time", "until": "only up to this position or RFC 3339 time",
		},
		Blocking: true,
		Run: func(_ *Deps, _ Caller, r *Request) ([]byte, *codec.Error) {
			var p historyParams
			if e := decodeParams(r.Params, &p); e != nil {
				return nil, e
			}
			k, e := target(r.Env, p.channelParams)
			if e != nil {
				return nil, e
			}
			q := HistoryQuery{Key: k, Limit: 50, Since: p.Since, Until: p.Until}
			if p.Limit != nil {
				if *p.Limit < 1 {
					return nil, codec.Validation("payload.parameters.limit", "limit must be at least 1")
				}
				q.Limit = min(*p.Limit, 1000)
			}
			if store == nil {
				return nil, codec.Unavailable("history is not stored on this node")
			}
			ctx, cancel := context.WithTimeout(context.Background(), historyTimeout)
			defer cancel()
			entries, e := store.History(ctx, q)
			if e != nil {
				return nil, e
			}
			type entry struct {
				Position string                 `json:"position"`
				Envelope sonic.NoCopyRawMessage `json:"envelope"`
			}
			list := make([]entry, len(entries))
			for i, en := range entries {
				list[i] = entry{en.Position, en.Envelope}
			}
			return marshal(struct {
				Room    string  `json:"room"`
				Channel string  `json:"channel"`
				Count   int     `json:"count"`
				Entries []entry `json:"entries"`
			}{k.Room, k.Channel, len(list), list})
		},
	}
}
