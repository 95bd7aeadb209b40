package soak

import (
	"errors"
	"fmt"
	"time"
)

// Config says what to drive, for how long, and at what rates. The defaults (DefaultConfig) are a
// modest, realistic mix of about 2,500 deliveries a second that leaves a 2-core machine headroom.
type Config struct {
	URL        string // the server's client WebSocket, ws://host:port/
	MetricsURL string // its /metrics (empty: no server-side figures)
	ServerPID  int    // its process, for RSS and open descriptors (0: not read)
	RedisPID   int    // a Redis it uses, for Redis's RSS (0: none)

	Duration time.Duration // how long the load runs
	Interval time.Duration // one report line per interval
	// Warmup is left out of the verdict: the server's pools, buffers and rings fill during it.
	// It is shortened when the run is short, so that at least two lines are judged.
	Warmup time.Duration
	OutDir string // where minutes.txt, minutes.jsonl and summary.txt go (empty: nowhere)
	RunID  string // makes client ids and churn channel names unique to the run

	// Chat fan-out: ChatChannels channels of ChatMembers members, ChatPublishers of whom publish
	// ChatRate events a second each, PayloadBytes of text in each event.
	ChatChannels, ChatMembers, ChatPublishers int
	ChatRate                                  float64
	PayloadBytes                              int
	// Rejoiners per chat channel (among its members): each leaves (or, every other time, drops its
	// connection) every RejoinEvery, stays away RejoinAway, and comes back with since.
	Rejoiners               int
	RejoinEvery, RejoinAway time.Duration

	// Bulk feed: one channel, BulkMembers readers, one publisher of BulkRate events a second of
	// BulkBytes each.
	BulkMembers int
	BulkRate    float64
	BulkBytes   int

	// Commands to handlers: Handlers service clients, Requesters sending CommandRate commands a
	// second each.
	Handlers, Requesters int
	CommandRate          float64

	HistoryRate float64 // history reads a second (one reader)

	ChurnChannelRate float64 // unique channels joined, published to and left, a second
	ChurnConnRate    float64 // connections opened, joined, published, closed, a second

	// Clients that stop reading: Stalled at a time, each given StalledLife to be cut before it
	// is counted as not cut and replaced.
	Stalled     int
	StalledLife time.Duration

	Garbage      int           // clients sending garbage
	GarbageEvery time.Duration // one garbage frame per client this often

	// Limits of the verdict (see Judge).
	Tolerances Tolerances
}

// DefaultConfig is the standard soak: 30 minutes, one line a minute.
func DefaultConfig() Config {
	return Config{
		Duration: 30 * time.Minute, Interval: time.Minute, Warmup: 2 * time.Minute,

		ChatChannels: 4, ChatMembers: 30, ChatPublishers: 2, ChatRate: 10, PayloadBytes: 120,
		Rejoiners: 2, RejoinEvery: 20 * time.Second, RejoinAway: 2 * time.Second,

		BulkMembers: 5, BulkRate: 10, BulkBytes: 4096,

		Handlers: 2, Requesters: 4, CommandRate: 25,
		HistoryRate: 2,

		ChurnChannelRate: 5, ChurnConnRate: 2,

		Stalled: 3, StalledLife: 5 * time.Minute,
		Garbage: 2, GarbageEvery: time.Second,

		Tolerances: DefaultTolerances(),
	}
}

// Validate checks the settings and shortens the warm-up of a short run.
func (c Config) Validate() (Config, error) {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if c.URL == "" {
		bad("the server's URL is required")
	}
	if c.Interval <= 0 {
		bad("interval must be positive")
	}
	if c.Duration < c.Interval {
		bad("duration %v is shorter than one interval %v", c.Duration, c.Interval)
	}
	if c.Warmup < 0 {
		bad("warm-up must not be negative")
	}
	if c.ChatChannels < 1 || c.ChatMembers < 2 {
		bad("chat needs at least 1 channel of 2 members")
	}
	if c.ChatPublishers < 1 || c.ChatPublishers+c.Rejoiners > c.ChatMembers {
		bad("chat publishers (%d) plus rejoiners (%d) must be at least 1 and at most the members (%d)",
			c.ChatPublishers, c.Rejoiners, c.ChatMembers)
	}
	for name, v := range map[string]int{"payload": c.PayloadBytes, "bulk members": c.BulkMembers,
		"bulk size": c.BulkBytes, "handlers": c.Handlers, "requesters": c.Requesters,
		"stalled": c.Stalled, "garbage": c.Garbage, "rejoiners": c.Rejoiners} {
		if v < 0 {
			bad("%s must not be negative", name)
		}
	}
	for name, v := range map[string]float64{"chat rate": c.ChatRate, "bulk rate": c.BulkRate,
		"command rate": c.CommandRate, "history rate": c.HistoryRate,
		"channel churn rate": c.ChurnChannelRate, "connection churn rate": c.ChurnConnRate} {
		if v < 0 {
			bad("%s must not be negative", name)
		}
	}
	if c.Requesters > 0 && c.Handlers < 1 {
		bad("requesters need at least one handler")
	}
	if c.Rejoiners > 0 && (c.RejoinEvery <= 0 || c.RejoinAway < 0) {
		bad("rejoin period must be positive")
	}
	if c.Stalled > 0 && c.StalledLife <= 0 {
		bad("stalled lifetime must be positive")
	}
	if c.Garbage > 0 && c.GarbageEvery <= 0 {
		bad("garbage period must be positive")
	}
	if err := errors.Join(errs...); err != nil {
		return c, err
	}
	// At least two judged lines: the warm-up ends two intervals before the end at the latest.
	if limit := c.Duration - 2*c.Interval; c.Warmup > limit {
		c.Warmup = max(limit, 0)
	}
	if c.RunID == "" {
		c.RunID = fmt.Sprintf("%x", time.Now().UnixNano()%(1<<32))
	}
	return c, nil
}
