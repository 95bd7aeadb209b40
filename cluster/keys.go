package cluster

// keys names every Redis key and shard channel under one prefix.
type keys struct {
	prefix string
	// Registry keys, all in the {cluster} slot so that one script can read and write them together.
	nodes   string // sorted set: instance -> unix ms of its last heartbeat (Redis's clock)
	info    string // hash: instance -> its advertised Info as JSON
	clients string // hash: client id -> instance holding it
	control string // shard channel every node subscribes to
}

func newKeys(prefix string) keys {
	return keys{
		prefix:  prefix,
		nodes:   prefix + ":{cluster}:nodes",
		info:    prefix + ":{cluster}:info",
		clients: prefix + ":{cluster}:clients",
		control: prefix + ":{cluster}:control",
	}
}

// stream is a channel's history stream: the key persist.Redis writes too.
func (k keys) stream(channel string) string { return k.prefix + ":{" + channel + "}:stream" }

// events is a channel's shard channel, in the stream's slot.
func (k keys) events(channel string) string { return k.prefix + ":{" + channel + "}:events" }

// inbox is one instance's shard channel.
func (k keys) inbox(instance string) string { return k.inboxPrefix() + instance }

func (k keys) inboxPrefix() string { return k.prefix + ":{cluster}:inbox:" }

// owned is the set of client ids an instance claimed, for clearing them once it is gone.
func (k keys) owned(instance string) string { return k.ownedPrefix() + instance }

func (k keys) ownedPrefix() string { return k.prefix + ":{cluster}:owned:" }
