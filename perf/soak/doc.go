// Package soak drives a running ArqonBus server with a long, mixed, realistic load and watches
// whether anything grows: the server's resident memory, goroutines and open descriptors, its
// channel count, and the latency its clients see.
//
// The load runs concurrently, each part on its own connections (see Run):
//
//   - chat fan-out: a few channels with a few dozen members each and a few publishers; every
//     delivered event carries its send time, so each member measures end-to-end latency, and
//     every member checks that each publisher's sequence arrives without gap or duplicate;
//   - a bulk feed: one channel of larger events with a few readers;
//   - commands to handlers: service clients registered with parameters.handles, requesters
//     sending command envelopes with unique ids, round trips timed;
//   - history reads of the chat channels;
//   - since rejoins: some chat members leave (or drop their connection) every so often and
//     come back with join_channel since = the last position they saw; their sequence check
//     spans the seam, so a gap or duplicate there is a violation;
//   - channel churn (join, publish, leave of unique channel names) and connection churn
//     (connect, join, publish, disconnect);
//   - clients that stop reading, which the server must cut as slow consumers, replaced as they
//     go; and clients that send garbage (invalid JSON and envelopes, binary frames, bad UTF-8,
//     oversized frames, reserved opcodes), whose answers are checked against the protocol.
//
// Every interval (a minute by default) it prints one line of the server's state and the
// interval's figures; at the end a summary and a verdict (see Judge): flat, or what grew.
//
// perf/cmd/arqonbus-soak is the command; scripts/soak.sh (make soak) starts a fresh server for it.
package soak
