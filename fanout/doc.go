// Package fanout owns rooms, channels and membership, and routes a message to
// the connections that should get it.
//
// Each channel keeps its members in a mutable roster where a join or a leave
// costs O(1) (a reconnect storm must not cost O(members) per change), and
// hands publishes an immutable snapshot, grouped by event loop, that the
// loops read without copying; the snapshot is rebuilt lazily, by the first
// publish after a change, and only for the loops whose members changed.
// Channels live in a map sharded by name
// hash, and client ids in another, so a publish never waits on an unrelated
// join.
package fanout
