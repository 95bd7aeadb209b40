package bus

import (
	"context"
	"time"

	"github.com/arqonbus/arqonbus/commands"
	"github.com/arqonbus/arqonbus/fanout"
)

// storeWriteTimeout bounds a channel-registry write.
const storeWriteTimeout = 3 * time.Second

// events hears what commands change: created and deleted channels go to the
// store's registry (off the loop), so a restart restores them.
type events struct{ b *Bus }

func (e events) ChannelCreated(_ commands.Caller, k fanout.Key) {
	created := time.Now()
	if ch := e.b.hub.Channel(k); ch != nil {
		created = ch.Created
	}
	go e.registry(func(ctx context.Context) error { return e.b.store.SaveChannel(ctx, k.String(), created) }, k, "save")
	e.b.broker.channelChanged(k, true)
	e.b.emit("channel_created", map[string]any{"room": k.Room, "channel": k.Channel})
}

func (e events) ChannelDeleted(_ commands.Caller, k fanout.Key) {
	go e.registry(func(ctx context.Context) error { return e.b.store.DeleteChannel(ctx, k.String()) }, k, "delete")
	e.b.broker.channelChanged(k, false)
	e.b.emit("channel_deleted", map[string]any{"room": k.Room, "channel": k.Channel})
}

func (e events) registry(op func(context.Context) error, k fanout.Key, what string) {
	defer e.b.recoverOffLoop("channel registry")
	ctx, cancel := context.WithTimeout(context.Background(), storeWriteTimeout)
	defer cancel()
	if err := op(ctx); err != nil {
		e.b.log.Warn("channel registry write failed", "op", what, "channel", k.String(), "err", err)
	}
}
