package commands

import (
	"context"
	"math"
	"time"

	"github.com/bytedance/sonic"

	"github.com/arqonbus/arqonbus/codec"
	"github.com/arqonbus/arqonbus/fanout"
	"github.com/arqonbus/arqonbus/persist"
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
		Name: "history",
		Description: "A channel's stored events, oldest first, each the original envelope with its position. " +
			"An answer holds at most limit entries and at most a byte budget (half the outbound buffer, at least one entry); " +
			"more: true says there is more: with since, ask again with since = next_since (the next page, newer); " +
			"without since (the newest entries), ask again with until = next_until (the page before, older).",
		Params: map[string]string{
			"room": "room, or \"room:channel\"", "channel": "channel",
			"limit": "entries to return, default 50, at most 1000",
			"since": "only after this position or RFC 3339 time (then the oldest first; page on with next_since)",
			"until": "only up to this position or RFC 3339 time, included (without since: the newest first; page back with next_until)",
		},
		Blocking: true,
		Run: func(d *Deps, _ Caller, r *Request) ([]byte, *codec.Error) {
			var p historyParams
			if e := decodeParams(r.Params, &p); e != nil {
				return nil, e
			}
			k, e := target(r.Env, p.channelParams)
			if e != nil {
				return nil, e
			}
			limit := 50
			if p.Limit != nil {
				if *p.Limit < 1 {
					return nil, codec.Validation("payload.parameters.limit", "limit must be at least 1")
				}
				limit = min(*p.Limit, maxHistoryLimit)
			}
			if store == nil {
				return nil, codec.Unavailable("history is not stored on this node")
			}
			// One more than the limit, where the store allows it, to know whether there is more.
			q := HistoryQuery{Key: k, Limit: min(limit+1, maxHistoryLimit), Since: p.Since, Until: p.Until}
			ctx, cancel := context.WithTimeout(context.Background(), historyTimeout)
			defer cancel()
			entries, e := store.History(ctx, q)
			if e != nil {
				return nil, e
			}
			page := pageHistory(entries, limit, p.Since != "", d.AnswerBytes)
			type entry struct {
				Position string                 `json:"position"`
				Envelope sonic.NoCopyRawMessage `json:"envelope"`
			}
			list := make([]entry, len(page.entries))
			for i, en := range page.entries {
				list[i] = entry{en.Position, en.Envelope}
			}
			return marshal(struct {
				Room      string  `json:"room"`
				Channel   string  `json:"channel"`
				Count     int     `json:"count"`
				Entries   []entry `json:"entries"`
				More      bool    `json:"more"`
				NextSince string  `json:"next_since,omitempty"`
				NextUntil string  `json:"next_until,omitempty"`
			}{k.Room, k.Channel, len(list), list, page.more, page.nextSince, page.nextUntil})
		},
	}
}

// maxHistoryLimit is the most entries one history answer holds (persist.MaxLimit).
const maxHistoryLimit = persist.MaxLimit

// historyEntryOverhead is what an entry adds to its envelope in an answer: the position and the JSON
// around them.
const historyEntryOverhead = 64

// historyPage is what one history answer holds, and where the next page starts.
type historyPage struct {
	entries              []HistoryEntry
	more                 bool
	nextSince, nextUntil string
}

// pageHistory cuts what the store returned (oldest first; up to limit+1 entries) to one answer: at
// most limit entries and budget bytes (0: no bound), at least one. With since, the oldest go and the
// next page starts after the last; without, the newest go and the next page ends before the first.
// A full answer of the largest limit says more: the store could not say whether there is.
func pageHistory(entries []HistoryEntry, limit int, since bool, budget int) historyPage {
	var pg historyPage
	if len(entries) > limit || (len(entries) == maxHistoryLimit && limit == maxHistoryLimit) {
		pg.more = true
	}
	if len(entries) > limit {
		if since {
			entries = entries[:limit]
		} else {
			entries = entries[len(entries)-limit:]
		}
	}
	if budget > 0 {
		n, size := 0, 0
		for n < len(entries) {
			i := n
			if !since {
				i = len(entries) - 1 - n
			}
			add := len(entries[i].Envelope) + len(entries[i].Position) + historyEntryOverhead
			if n > 0 && size+add > budget {
				pg.more = true
				break
			}
			size += add
			n++
		}
		if since {
			entries = entries[:n]
		} else {
			entries = entries[len(entries)-n:]
		}
	}
	pg.entries = entries
	if pg.more && len(entries) > 0 {
		if since {
			pg.nextSince = entries[len(entries)-1].Position
		} else if p, ok := persist.ParsePosition(entries[0].Position); ok && !p.IsZero() {
			pg.nextUntil = before(p).String()
		}
	}
	if pg.more && pg.nextSince == "" && pg.nextUntil == "" {
		pg.more = false // nothing older than the very first position
	}
	return pg
}

// before is the position just before p, which is not zero (until is inclusive: until before(p) ends
// just before p).
func before(p persist.Position) persist.Position {
	if p.Seq > 0 {
		return persist.Position{Ms: p.Ms, Seq: p.Seq - 1}
	}
	return persist.Position{Ms: p.Ms - 1, Seq: math.MaxUint64}
}
