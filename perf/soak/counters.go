package soak

import (
	"sync"
	"sync/atomic"
)

// counter names one of the run's event counts.
type counter int

// The counts the workloads keep. Violations are wrong answers from the bus (a gap, a duplicate,
// a healthy client cut); errors are failures that a loaded but correct bus could still produce
// now and then (a dial that timed out) and that a soak should show when they start to pile up.
const (
	cDelivered         counter = iota // events received by chat and bulk members
	cPublished                        // events sent by chat and bulk publishers
	cPubErrors                        // error answers to publishers' events
	cSeqGaps                          // a publisher's sequence skipped ahead at a member (violation)
	cSeqDups                          // a publisher's sequence repeated or went back (violation)
	cReplayIncomplete                 // a since rejoin whose replay said complete=false (violation)
	cHealthyDrops                     // a reading, well-behaved client lost its connection (violation)
	cRejoins                          // leave_channel then join_channel since, same connection
	cReconnects                       // dropped the connection on purpose, came back with since
	cReplayed                         // events replayed by those rejoins
	cCmdSent                          // commands sent to handlers
	cCmdOK                            // ... answered by a handler
	cCmdErrors                        // ... answered with an error other than TIMEOUT
	cCmdTimeouts                      // ... answered with TIMEOUT by the server
	cCmdLost                          // ... never answered (given up locally)
	cHistReads                        // history commands answered
	cHistErrors                       // history commands answered with an error or not at all
	cHistBad                          // history answers out of order (violation)
	cChurnChannels                    // unique channels joined, published to and left
	cChurnErrors                      // ... steps that failed
	cChurnConns                       // connections opened, joined, published, closed
	cChurnConnErrors                  // ... that failed
	cStalledStarted                   // clients that stopped reading
	cStalledCut                       // ... seen cut off by the server
	cStalledNotCut                    // ... still connected when their lifetime ran out
	cGarbageSent                      // garbage frames sent
	cGarbageExpected                  // ... answered as the protocol says
	cGarbageUnexpected                // ... answered otherwise (see the per-kind report)
	cDialErrors                       // healthy clients that could not connect or join
	cOtherErrors                      // unexpected error envelopes to healthy clients
	numCounters
)

var counterNames = [numCounters]string{
	cDelivered: "delivered", cPublished: "published", cPubErrors: "publish_errors",
	cSeqGaps: "seq_gaps", cSeqDups: "seq_dups", cReplayIncomplete: "replay_incomplete",
	cHealthyDrops: "healthy_drops", cRejoins: "rejoins", cReconnects: "reconnects",
	cReplayed: "replayed", cCmdSent: "commands_sent", cCmdOK: "commands_ok",
	cCmdErrors: "command_errors", cCmdTimeouts: "command_timeouts", cCmdLost: "commands_lost",
	cHistReads: "history_reads", cHistErrors: "history_errors", cHistBad: "history_out_of_order",
	cChurnChannels: "churn_channels", cChurnErrors: "churn_channel_errors",
	cChurnConns: "churn_connections", cChurnConnErrors: "churn_connection_errors",
	cStalledStarted: "stalled_started", cStalledCut: "stalled_cut", cStalledNotCut: "stalled_not_cut",
	cGarbageSent: "garbage_sent", cGarbageExpected: "garbage_expected",
	cGarbageUnexpected: "garbage_unexpected", cDialErrors: "dial_errors", cOtherErrors: "other_errors",
}

// errorCounters add up to a line's "errs" column, violationCounters to its "viol" column.
var (
	errorCounters = []counter{cPubErrors, cCmdErrors, cCmdTimeouts, cCmdLost, cHistErrors,
		cChurnErrors, cChurnConnErrors, cDialErrors, cOtherErrors}
	violationCounters = []counter{cSeqGaps, cSeqDups, cReplayIncomplete, cHealthyDrops, cHistBad}
)

// Counts is a snapshot of every counter, indexed by counter.
type Counts [numCounters]int64

// Map names the counts, for JSON and the summary.
func (c Counts) Map() map[string]int64 {
	m := make(map[string]int64, numCounters)
	for i, v := range c {
		m[counterNames[i]] = v
	}
	return m
}

func (c Counts) sum(which []counter) int64 {
	var n int64
	for _, k := range which {
		n += c[k]
	}
	return n
}

// Errors is the sum of the error counters.
func (c Counts) Errors() int64 { return c.sum(errorCounters) }

// Violations is the sum of the violation counters.
func (c Counts) Violations() int64 { return c.sum(violationCounters) }

// minus returns c - prev, counter by counter.
func (c Counts) minus(prev Counts) Counts {
	for i := range c {
		c[i] -= prev[i]
	}
	return c
}

// counters is the live, shared set.
type counters struct {
	v [numCounters]atomic.Int64

	mu    sync.Mutex
	notes map[string]int64 // first occurrences of errors and violations, by text, counted
}

// maxNotes bounds the distinct notes kept: a bus that fails the same way a million times keeps
// one note with a count, one that fails in a million ways keeps the first maxNotes.
const maxNotes = 50

func newCounters() *counters { return &counters{notes: make(map[string]int64)} }

func (c *counters) add(k counter, n int64) { c.v[k].Add(n) }
func (c *counters) inc(k counter)          { c.v[k].Add(1) }

// fail counts k and keeps note, a short description of what happened, for the summary.
func (c *counters) fail(k counter, note string) {
	c.v[k].Add(1)
	c.mu.Lock()
	defer c.mu.Unlock()
	key := counterNames[k] + ": " + note
	if _, ok := c.notes[key]; ok || len(c.notes) < maxNotes {
		c.notes[key]++
	}
}

func (c *counters) snapshot() Counts {
	var s Counts
	for i := range s {
		s[i] = c.v[i].Load()
	}
	return s
}

func (c *counters) noteList() map[string]int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]int64, len(c.notes))
	for k, v := range c.notes {
		out[k] = v
	}
	return out
}
