package soak

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// Sample is one report line: the server's state at the end of an interval and what the
// interval carried. Server figures that could not be read are -1.
type Sample struct {
	Index   int           `json:"index"`      // 0: the baseline before the load, then 1, 2, ...
	Elapsed time.Duration `json:"elapsed_ns"` // since the load started

	RSS        int64 `json:"rss_bytes"`
	Goroutines int64 `json:"goroutines"`
	FDs        int64 `json:"fds"`
	Channels   int64 `json:"channels"`
	Conns      int64 `json:"connections"`
	HeapInuse  int64 `json:"heap_inuse_bytes"`
	RedisRSS   int64 `json:"redis_rss_bytes,omitempty"`

	DeliveriesPerS float64 `json:"deliveries_per_s"` // events received by the soak's members
	ServerSentPerS float64 `json:"server_sent_per_s"`
	CommandsPerS   float64 `json:"commands_per_s"`

	FanOut  LatencyStats `json:"fanout"`
	Command LatencyStats `json:"command"`
	History LatencyStats `json:"history"`
	Sched   LatencyStats `json:"sched"` // the driver's own wake-up delay: the machine's noise
	Load1   float64      `json:"load1"` // the machine's 1-minute load average

	Counts     Counts `json:"-"`
	Errors     int64  `json:"errors"`     // sum of the error counters in the interval
	Violations int64  `json:"violations"` // sum of the violation counters in the interval
	SlowCuts   int64  `json:"slow_cuts"`  // slow consumers the server closed in the interval
	ServerErrs int64  `json:"server_error_envelopes"`

	CountsByName map[string]int64 `json:"counts"`
	Problems     []string         `json:"problems,omitempty"`
}

// lineHeader names the columns of Sample.line.
const lineHeader = "  time  rss_MiB  gorout   fds  chans  conns  deliv/s  fan_p50  fan_p99  cmd/s  cmd_p99 hist_p99  errs  viol  slow_cut stall_cut garbage_bad sched_p99"

// line formats s as one report line under lineHeader.
func (s Sample) line() string {
	c := s.Counts
	return fmt.Sprintf("%6s %8s %7s %5s %6s %6s %8.0f %8s %8s %6.0f %8s %8s %5d %5d %9s %9d %11d %9s",
		clock(s.Elapsed), mib(s.RSS), num(s.Goroutines), num(s.FDs), num(s.Channels), num(s.Conns),
		s.DeliveriesPerS, ms(s.FanOut.P50, s.FanOut.Count), ms(s.FanOut.P99, s.FanOut.Count),
		s.CommandsPerS, ms(s.Command.P99, s.Command.Count), ms(s.History.P99, s.History.Count),
		s.Errors, s.Violations, num(s.SlowCuts), c[cStalledCut], c[cGarbageUnexpected],
		ms(s.Sched.P99, s.Sched.Count))
}

// clock formats d as mm:ss (hh:mm:ss past an hour).
func clock(d time.Duration) string {
	d = d.Round(time.Second)
	h, m, sec := int(d.Hours()), int(d.Minutes())%60, int(d.Seconds())%60
	if h > 0 {
		return fmt.Sprintf("%d:%02d:%02d", h, m, sec)
	}
	return fmt.Sprintf("%02d:%02d", m, sec)
}

func mib(b int64) string {
	if b < 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f", float64(b)/(1<<20))
}

func num(v int64) string {
	if v < 0 {
		return "-"
	}
	return fmt.Sprint(v)
}

// ms formats a latency in milliseconds; "-" when nothing was measured.
func ms(d time.Duration, count int64) string {
	if count == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond))
}

// writeLines prints the header and every sample's line.
func writeLines(w io.Writer, samples []Sample) {
	fmt.Fprintln(w, lineHeader)
	for _, s := range samples {
		fmt.Fprintln(w, s.line())
	}
}

// legend explains the columns, once at the start of a run.
var legend = strings.TrimSpace(`
columns: time since the load started; the server's resident memory (VmRSS), goroutines (/metrics),
open descriptors (/proc/<pid>/fd), channels and WebSocket connections (/metrics); events received by
the soak's members a second; fan-out latency p50/p99 (publisher's clock to member's); commands to
handlers a second and their round-trip p99; history read p99; errors and violations (gaps,
duplicates, incomplete replays, healthy clients cut) in the interval; slow consumers the server cut
(/metrics), non-reading clients seen cut, garbage frames answered otherwise than the protocol says;
how late the driver's own 10 ms sleeps woke (p99): the machine's scheduling noise, which every latency includes.
`)
