package bus

import (
	"fmt"
	"runtime/debug"
)

// recoverOffLoop, deferred at the top of bus code that runs off the event
// loops (blocking commands, timers, Redis and cluster callbacks, cluster
// jobs), turns a panic into a log line and a count (Counters.Panics): the
// loops recover their own (engine), and one bad message must never take the
// process down from anywhere else either.
func (b *Bus) recoverOffLoop(where string) {
	if r := recover(); r != nil {
		b.stats.panics.Add(1)
		b.log.Error("panic off the event loops", "where", where, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
	}
}
