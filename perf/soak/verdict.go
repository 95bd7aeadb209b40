package soak

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
)

// Tolerances bound how much a figure may grow between the early and the late part of a run
// before the run is called not flat. Each resource gets the larger of a relative and an
// absolute allowance, so that a small figure is not failed for noise (8 MiB of RSS on 30 MiB
// is GC timing, not a leak).
type Tolerances struct {
	RSSPct, GoroutinesPct, FDsPct float64 // allowed growth in percent
	RSSBytes                      int64   // ... or in absolute terms, whichever is larger
	Goroutines, FDs               int64
	// LatencyFactor bounds the late p99 against the early one; LatencyFloor is a p99 that always
	// passes (on a shared 2-core machine a few milliseconds of p99 are scheduling noise).
	LatencyFactor float64
	LatencyFloor  time.Duration
}

// DefaultTolerances: RSS +20% or 8 MiB, goroutines +10% or 5, descriptors +10% or 10 (connection
// churn keeps a few in flight), p99 at most twice the early one or under 10 ms.
func DefaultTolerances() Tolerances {
	return Tolerances{
		RSSPct: 20, RSSBytes: 8 << 20,
		GoroutinesPct: 10, Goroutines: 5,
		FDsPct: 10, FDs: 10,
		LatencyFactor: 2, LatencyFloor: 10 * time.Millisecond,
	}
}

// Check is one judged figure: its median in the early and in the late third of the judged
// lines, and the limit the late one had to stay within.
type Check struct {
	Name        string `json:"name"`
	Early       int64  `json:"early"` // bytes, counts or nanoseconds
	Late        int64  `json:"late"`
	Limit       int64  `json:"limit"`
	OK          bool   `json:"ok"`
	Skipped     string `json:"skipped,omitempty"` // why it was not judged (not measured)
	Unit        string `json:"unit"`              // "bytes", "count" or "ns"
	Informative bool   `json:"informative"`       // shown, never fails the run
}

// Verdict is the outcome of a run.
type Verdict struct {
	Judged        bool     `json:"judged"` // enough lines after the warm-up
	Flat          bool     `json:"flat"`   // every judged resource and latency within its limit
	Correct       bool     `json:"correct"`
	ServerExited  bool     `json:"server_exited"`
	Checks        []Check  `json:"checks"`
	EarlyLines    []int    `json:"early_lines"` // the lines (Sample.Index) of each third
	LateLines     []int    `json:"late_lines"`
	Violations    int64    `json:"violations"`
	Reasons       []string `json:"reasons"` // why the run failed, one line each
	JudgedFromIdx int      `json:"judged_from"`
}

// Passed tells whether the run should exit 0: flat (or too short to judge), no violation, and
// the server still running.
func (v Verdict) Passed() bool { return len(v.Reasons) == 0 }

// Judge compares the early and late parts of a run. Lines of the warm-up (due at or before warmup)
// and the baseline (Index 0) are left out; of the rest, the first third (rounded up) is early,
// the last third late, and each figure's median over its third stands for it, so that one odd
// line (a GC, a noisy neighbour) does not decide. total holds the run's counts, for violations.
func Judge(samples []Sample, warmup time.Duration, tol Tolerances, total Counts, serverExited bool) Verdict {
	v := Verdict{Correct: true, ServerExited: serverExited}
	if serverExited {
		v.Reasons = append(v.Reasons, "the server process exited during the run")
	}
	if n := total.Violations(); n > 0 {
		v.Correct = false
		v.Violations = n
		var parts []string
		for _, k := range violationCounters {
			if total[k] > 0 {
				parts = append(parts, fmt.Sprintf("%s %d", counterNames[k], total[k]))
			}
		}
		v.Reasons = append(v.Reasons, "violations: "+strings.Join(parts, ", "))
	}
	var judged []Sample
	for _, s := range samples {
		// Rounded: the line due at the end of the warm-up comes a little after it.
		if s.Index > 0 && s.Elapsed.Round(time.Second) > warmup {
			judged = append(judged, s)
		}
	}
	if len(judged) < 2 {
		v.Flat = true // nothing to say: not a failure of the bus
		return v
	}
	v.Judged = true
	v.JudgedFromIdx = judged[0].Index
	k := (len(judged) + 2) / 3
	early, late := judged[:k], judged[len(judged)-k:]
	for _, s := range early {
		v.EarlyLines = append(v.EarlyLines, s.Index)
	}
	for _, s := range late {
		v.LateLines = append(v.LateLines, s.Index)
	}

	growth := func(name, unit string, get func(Sample) int64, pct float64, abs int64, informative bool) {
		c := Check{Name: name, Unit: unit, Informative: informative}
		e, l := medianOf(early, get), medianOf(late, get)
		if e < 0 || l < 0 {
			c.Skipped = "not measured"
			c.OK = true
			v.Checks = append(v.Checks, c)
			return
		}
		c.Early, c.Late = e, l
		c.Limit = e + max(int64(float64(e)*pct/100), abs)
		c.OK = l <= c.Limit
		v.Checks = append(v.Checks, c)
	}
	latencyCheck := func(name string, get func(Sample) LatencyStats, informative bool) {
		c := Check{Name: name, Unit: "ns", Informative: informative}
		has := func(ss []Sample) []Sample {
			var out []Sample
			for _, s := range ss {
				if get(s).Count > 0 {
					out = append(out, s)
				}
			}
			return out
		}
		e, l := has(early), has(late)
		if len(e) == 0 || len(l) == 0 {
			c.Skipped = "not measured"
			c.OK = true
			v.Checks = append(v.Checks, c)
			return
		}
		p99 := func(s Sample) int64 { return int64(get(s).P99) }
		c.Early, c.Late = medianOf(e, p99), medianOf(l, p99)
		c.Limit = max(int64(float64(c.Early)*tol.LatencyFactor), int64(tol.LatencyFloor))
		c.OK = c.Late <= c.Limit
		v.Checks = append(v.Checks, c)
	}
	growth("rss", "bytes", func(s Sample) int64 { return s.RSS }, tol.RSSPct, tol.RSSBytes, false)
	growth("goroutines", "count", func(s Sample) int64 { return s.Goroutines }, tol.GoroutinesPct, tol.Goroutines, false)
	growth("fds", "count", func(s Sample) int64 { return s.FDs }, tol.FDsPct, tol.FDs, false)
	latencyCheck("fanout_p99", func(s Sample) LatencyStats { return s.FanOut }, false)
	latencyCheck("command_p99", func(s Sample) LatencyStats { return s.Command }, false)
	latencyCheck("history_p99", func(s Sample) LatencyStats { return s.History }, false)
	// The machine's own noise, to read the latencies by: shown, never judged.
	latencyCheck("sched_p99", func(s Sample) LatencyStats { return s.Sched }, true)
	// Shown for the record; a bus without channel eviction grows here under churn by design.
	growth("channels", "count", func(s Sample) int64 { return s.Channels }, 10, 10, true)
	growth("heap_inuse", "bytes", func(s Sample) int64 { return s.HeapInuse }, 20, 8<<20, true)

	var noise string
	for _, c := range v.Checks {
		if c.Name == "sched_p99" && c.Skipped == "" {
			noise = fmt.Sprintf(" (the machine's scheduling delay p99 went from %s to %s meanwhile)",
				c.format(c.Early), c.format(c.Late))
		}
	}
	v.Flat = true
	for _, c := range v.Checks {
		if c.OK || c.Informative {
			continue
		}
		v.Flat = false
		reason := fmt.Sprintf("%s grew from %s to %s (limit %s)", c.Name, c.format(c.Early), c.format(c.Late), c.format(c.Limit))
		if c.Unit == "ns" {
			reason += noise
		}
		v.Reasons = append(v.Reasons, reason)
	}
	return v
}

// medianOf is the median of get over ss (the lower middle for an even count); -1 when any
// value is missing (-1), since a resource read only now and then cannot be judged.
func medianOf(ss []Sample, get func(Sample) int64) int64 {
	vals := make([]int64, 0, len(ss))
	for _, s := range ss {
		x := get(s)
		if x < 0 {
			return -1
		}
		vals = append(vals, x)
	}
	if len(vals) == 0 {
		return -1
	}
	slices.Sort(vals)
	return vals[(len(vals)-1)/2]
}

func (c Check) format(v int64) string {
	switch c.Unit {
	case "bytes":
		return fmt.Sprintf("%.1f MiB", float64(v)/(1<<20))
	case "ns":
		return fmt.Sprintf("%.2f ms", float64(v)/float64(time.Millisecond))
	}
	return fmt.Sprint(v)
}

// write prints the verdict table and the outcome.
func (v Verdict) write(w io.Writer) {
	if v.Judged {
		fmt.Fprintf(w, "judged: early lines %v against late lines %v, the median of each (lines before %d are warm-up)\n",
			v.EarlyLines, v.LateLines, v.JudgedFromIdx)
		fmt.Fprintf(w, "  %-12s %12s %12s %12s %8s  %s\n", "figure", "early", "late", "limit", "change", "")
		for _, c := range v.Checks {
			if c.Skipped != "" {
				fmt.Fprintf(w, "  %-12s %12s %12s %12s %8s  %s\n", c.Name, "-", "-", "-", "-", c.Skipped)
				continue
			}
			change := "-"
			if c.Early > 0 {
				change = fmt.Sprintf("%+.0f%%", 100*float64(c.Late-c.Early)/float64(c.Early))
			}
			mark := "ok"
			switch {
			case c.Informative:
				mark = "(shown, not judged)"
			case !c.OK:
				mark = "GREW"
			}
			fmt.Fprintf(w, "  %-12s %12s %12s %12s %8s  %s\n", c.Name, c.format(c.Early), c.format(c.Late),
				c.format(c.Limit), change, mark)
		}
	} else {
		fmt.Fprintln(w, "too few lines after the warm-up to judge growth (need 2): run longer")
	}
	switch {
	case v.Passed() && v.Judged:
		fmt.Fprintln(w, "verdict: flat")
	case v.Passed():
		fmt.Fprintln(w, "verdict: not judged (too short), no violations")
	default:
		fmt.Fprintln(w, "verdict: NOT FLAT")
		for _, r := range v.Reasons {
			fmt.Fprintln(w, "  - "+r)
		}
	}
}
