// Package perf measures ArqonBus from outside, over real sockets, like a user's load test.
//
// The code lives in subpackages: perf/load holds the scenarios and the statistics (so that they
// can be tested against a small in-test server), and perf/cmd/arqonbus-load is the command that
// scripts/bench.sh drives against a freshly started server.
package perf
