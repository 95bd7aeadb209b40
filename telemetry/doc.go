// Package telemetry produces the bus's own telemetry — connects, joins,
// commands, storage changes, metrics snapshots and coalesced agent activity —
// off the event loops, and serves it on the telemetry WebSocket.
//
// Telemetry must never slow routing. Producers (Emit, Forward, Release) only
// try a send on a bounded queue: when it is full the event is dropped and
// counted, never waited for. One goroutine (Run) drains the queue, encodes
// each event into a "telemetry" envelope and fans it out, both to the members
// of a channel of the client bus's hub and to every telemetry WebSocket
// connection; it also ticks the periodic metrics snapshot and flushes agent
// activity.
//
// Agent activity is coalesced: an AgentHandle per ai-agent session keeps
// atomic counters per activity that the bus bumps on every action (no
// allocation, no channel send), and Run turns them into one agent_activity
// event per agent and activity every AgentFlushEvery.
package telemetry
