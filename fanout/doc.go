// Package fanout owns rooms, channels and membership, and routes a message to
// the connections that should get it.
//
// Membership is written rarely (join, leave) and read on every publish, so each
// channel keeps its members as an immutable snapshot, grouped by event loop,
// that a publish reads without copying. Channels live in a map sharded by name
// hash, and client ids in another, so a publish never waits on an unrelated
// join.
package fanout
