// Package persist owns history: per-channel memory rings, Redis Streams batch writers, and the buffer that
// carries writes across a Redis outage.
//
// Every routed event gets a history position at publish time, made by the channel's Clock: a Redis stream
// id "<unix ms>-<seq>", strictly increasing per channel. The Redis store writes each entry with that
// explicit id (XADD key MAXLEN ~ n <id> e <envelope JSON>), so an event carries its position before Redis
// has it, and a retried write is recognised as already present instead of being stored twice.
//
// Two stores implement Store: Memory (rings only) and Redis (rings for fallback reads, plus sharded writer
// goroutines that pipeline batches to Redis and hold writes in a bounded buffer while Redis is away).
package persist
