package bus

import (
	"time"

	"github.com/arqonbus/arqonbus/commands"
	"github.com/arqonbus/arqonbus/fanout"
)

// events hears what commands change: created and deleted channels go to the
// store's registry (queued, written off the loop), so a restart restores them.
type events struct{ b *Bus }

func (e events) ChannelCreated(_ commands.Caller, k fanout.Key) {
	created := time.Now()
	if ch := e.b.hub.Channel(k); ch != nil {
		created = ch.Created
	}
	// Queued, not run on a goroutine of its own: the store writes one
	// channel's registry entries in the order they were made.
	e.b.store.SaveChannel(k.String(), created, e.registryDone(k, "save"))
	e.b.broker.channelChanged(k, true)
	e.b.emit("channel_created", map[string]any{"room": k.Room, "channel": k.Channel})
}

func (e events) ChannelDeleted(_ commands.Caller, k fanout.Key) {
	e.b.store.DeleteChannel(k.String(), e.registryDone(k, "delete"))
	e.b.broker.channelChanged(k, false)
	e.b.emit("channel_deleted", map[string]any{"room": k.Room, "channel": k.Channel})
}

// registryDone logs a registry write the store could not make.
func (e events) registryDone(k fanout.Key, what string) func(error) {
	return func(err error) {
		defer e.b.recoverOffLoop("channel registry")
		if err != nil {
			e.b.log.Warn("channel registry write failed", "op", what, "channel", k.String(), "err", err)
		}
	}
}

// ChannelRemoved hears that a channel left the hub: pass it as
// fanout.Options.OnRemoved. It runs under the hub's locks, so the store
// forgets the channel's ring before a channel of the same name can be made
// again. A channel deleted here has its stream and registry entry deleted
// by ChannelDeleted; an evicted one keeps its stream (history reads it).
func (b *Bus) ChannelRemoved(ch *fanout.Channel, why fanout.Removal) {
	b.store.Forget(stateOf(ch).name)
	if why == fanout.Evicted {
		b.stats.evicted.Add(1)
	}
}
