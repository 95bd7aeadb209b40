// Package cluster carries what crosses ArqonBus nodes, through one Redis (standalone or Redis Cluster):
//
//   - the node registry: every node heartbeats into a sorted set; a node unseen for NodeTTL is dead;
//   - the client-id directory: which node holds each client id, so ids are unique in the cluster and a
//     private message finds its target's node;
//   - channel events: a publish is one Lua call that assigns the channel's next history position from
//     the stream's top, appends the event to the channel's stream and SPUBLISHes it on the channel's shard
//     channel, so that the stream order, the positions and the delivery order agree on every node;
//   - interest-based subscriptions: a node subscribes to a channel's shard channel only while it has local
//     members, and catches up from the stream whenever a subscription starts or resumes, so that a node's
//     handler sees each channel's events once, in order, without gaps (up to the history size);
//   - per-node inboxes and one control topic, for whatever the bus sends to one node or to all.
//
// Every key of a channel carries the channel as its hash tag ({room:channel}); every registry key carries
// {cluster}. On Redis Cluster a channel's stream and traffic therefore stay on the channel's shard, and
// the registry's scripts touch one slot.
//
// Nothing here blocks an event loop: publishes are queued and sent in pipelined batches by writer
// goroutines; subscriptions, catch-up reads and heartbeats run on their own goroutines; what arrives is
// handed to the Handler.
package cluster
