package soak

import (
	"strings"
	"testing"
	"time"
)

// line builds a judged sample: minute idx with the given RSS (MiB), goroutines, fds and p99s.
func line(idx int, rssMiB, gor, fds int64, fanP99, cmdP99 time.Duration) Sample {
	return Sample{
		Index: idx, Elapsed: time.Duration(idx) * time.Minute,
		RSS: rssMiB << 20, Goroutines: gor, FDs: fds, Channels: 20, HeapInuse: 10 << 20,
		FanOut:  LatencyStats{Count: 1000, P50: fanP99 / 4, P99: fanP99},
		Command: LatencyStats{Count: 100, P50: cmdP99 / 4, P99: cmdP99},
	}
}

// flatRun is 10 minutes of a steady server: baseline, warm-up, then noise only.
func flatRun() []Sample {
	s := []Sample{{Index: 0, RSS: 10 << 20, Goroutines: 20, FDs: 20}}
	for i := 1; i <= 10; i++ {
		s = append(s, line(i, 40+int64(i%2), 30, 150+int64(i%3), 20*time.Millisecond, 15*time.Millisecond))
	}
	return s
}

func TestJudgeFlat(t *testing.T) {
	v := Judge(flatRun(), 2*time.Minute, DefaultTolerances(), Counts{}, false)
	if !v.Judged || !v.Flat || !v.Passed() {
		t.Fatalf("steady run judged %+v, want flat", v)
	}
	// 8 judged lines (3..10): thirds of 3, early 3-5, late 8-10.
	if got := v.EarlyLines; len(got) != 3 || got[0] != 3 || got[2] != 5 {
		t.Errorf("early lines %v, want [3 4 5]", got)
	}
	if got := v.LateLines; len(got) != 3 || got[0] != 8 || got[2] != 10 {
		t.Errorf("late lines %v, want [8 9 10]", got)
	}
}

func TestJudgeGrowth(t *testing.T) {
	cases := []struct {
		name   string
		mutate func(s *Sample) // applied to lines 6 and later
		want   string          // the failing check's name
	}{
		{"rss leak", func(s *Sample) { s.RSS += int64(s.Index) * 3 << 20 }, "rss"},
		{"goroutine leak", func(s *Sample) { s.Goroutines += int64(s.Index) * 2 }, "goroutines"},
		{"descriptor leak", func(s *Sample) { s.FDs += int64(s.Index) * 10 }, "fds"},
		{"fan-out p99 tripled", func(s *Sample) { s.FanOut.P99 *= 3 }, "fanout_p99"},
		{"command p99 tripled", func(s *Sample) { s.Command.P99 *= 3 }, "command_p99"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			run := flatRun()
			for i := range run {
				if run[i].Index >= 6 {
					tc.mutate(&run[i])
				}
			}
			v := Judge(run, 2*time.Minute, DefaultTolerances(), Counts{}, false)
			if v.Flat || v.Passed() {
				t.Fatalf("judged flat: %+v", v.Checks)
			}
			if len(v.Reasons) != 1 || !strings.HasPrefix(v.Reasons[0], tc.want+" grew") {
				t.Errorf("reasons %q, want one about %s", v.Reasons, tc.want)
			}
		})
	}
}

func TestJudgeTolerances(t *testing.T) {
	run := flatRun()
	for i := range run {
		if run[i].Index >= 6 {
			// Within every allowance: +6 MiB on 40 (under 8 MiB), +3 goroutines (under 5),
			// +9 descriptors (under 10), p99 to 9 ms from 3 ms (tripled, but under the 10 ms floor).
			run[i].RSS += 6 << 20
			run[i].Goroutines += 3
			run[i].FDs += 9
		}
		run[i].FanOut.P99 = 3 * time.Millisecond
		if run[i].Index >= 6 {
			run[i].FanOut.P99 = 9 * time.Millisecond
		}
	}
	v := Judge(run, 2*time.Minute, DefaultTolerances(), Counts{}, false)
	if !v.Flat {
		t.Errorf("growth within the tolerances judged not flat: %q", v.Reasons)
	}
	// Channel growth is shown but never fails a run (no eviction yet).
	for i := range run {
		run[i].Channels = int64(run[i].Index) * 1000
	}
	v = Judge(run, 2*time.Minute, DefaultTolerances(), Counts{}, false)
	if !v.Flat {
		t.Errorf("channel growth failed the run: %q", v.Reasons)
	}
	var seen bool
	for _, c := range v.Checks {
		if c.Name == "channels" {
			seen = true
			if c.OK || !c.Informative {
				t.Errorf("channels check %+v: want shown as grown, informative", c)
			}
		}
	}
	if !seen {
		t.Error("no channels check")
	}
}

// A spike in one late line does not decide: each third is judged by its median.
func TestJudgeMedianIgnoresOneSpike(t *testing.T) {
	run := flatRun()
	run[9].RSS *= 3
	run[9].FanOut.P99 = 5 * time.Second
	if v := Judge(run, 2*time.Minute, DefaultTolerances(), Counts{}, false); !v.Flat {
		t.Errorf("one spike judged not flat: %q", v.Reasons)
	}
}

func TestJudgeViolationsAndExit(t *testing.T) {
	var total Counts
	total[cSeqGaps] = 2
	total[cHealthyDrops] = 1
	total[cCmdTimeouts] = 7 // an error, not a violation
	v := Judge(flatRun(), 2*time.Minute, DefaultTolerances(), total, false)
	if !v.Flat || v.Correct || v.Passed() || v.Violations != 3 {
		t.Fatalf("got flat=%v correct=%v passed=%v violations=%d, want flat, incorrect, 3", v.Flat, v.Correct, v.Passed(), v.Violations)
	}
	if !strings.Contains(v.Reasons[0], "seq_gaps 2") || !strings.Contains(v.Reasons[0], "healthy_drops 1") {
		t.Errorf("reason %q does not name the violations", v.Reasons[0])
	}
	v = Judge(flatRun(), 2*time.Minute, DefaultTolerances(), Counts{}, true)
	if v.Passed() {
		t.Error("a run whose server exited passed")
	}
}

func TestJudgeShortAndUnmeasured(t *testing.T) {
	run := flatRun()[:3] // baseline, 1, 2: nothing after a 2-minute warm-up
	if v := Judge(run, 2*time.Minute, DefaultTolerances(), Counts{}, false); v.Judged || !v.Passed() {
		t.Errorf("short run: judged=%v passed=%v, want not judged and passed", v.Judged, v.Passed())
	}
	// Two judged lines: one early, one late.
	v := Judge(flatRun()[:4], time.Minute, DefaultTolerances(), Counts{}, false)
	if !v.Judged || len(v.EarlyLines) != 1 || v.EarlyLines[0] != 2 || v.LateLines[0] != 3 {
		t.Errorf("two judged lines: %+v", v)
	}
	// No /proc (RSS -1 everywhere): skipped, not failed.
	run = flatRun()
	for i := range run {
		run[i].RSS, run[i].FDs = -1, -1
		run[i].Command = LatencyStats{}
	}
	v = Judge(run, 2*time.Minute, DefaultTolerances(), Counts{}, false)
	if !v.Flat {
		t.Errorf("unmeasured figures failed the run: %q", v.Reasons)
	}
	for _, c := range v.Checks {
		if (c.Name == "rss" || c.Name == "fds" || c.Name == "command_p99") && c.Skipped == "" {
			t.Errorf("%s not skipped: %+v", c.Name, c)
		}
	}
}

func TestMedianOf(t *testing.T) {
	ss := []Sample{{RSS: 5}, {RSS: 1}, {RSS: 3}, {RSS: 4}}
	if got := medianOf(ss, func(s Sample) int64 { return s.RSS }); got != 3 {
		t.Errorf("median of 5 1 3 4 = %d, want the lower middle 3", got)
	}
	ss[1].RSS = -1
	if got := medianOf(ss, func(s Sample) int64 { return s.RSS }); got != -1 {
		t.Errorf("median with a missing value = %d, want -1", got)
	}
}

func TestConfigValidate(t *testing.T) {
	c := DefaultConfig()
	c.URL = "ws://127.0.0.1:1/"
	c.Duration = 3 * time.Minute
	got, err := c.Validate()
	if err != nil {
		t.Fatal(err)
	}
	if got.Warmup != time.Minute {
		t.Errorf("3-minute run: warm-up %v, want 1m (two judged lines)", got.Warmup)
	}
	if got.RunID == "" {
		t.Error("no run id")
	}
	c.Duration = 30 * time.Minute
	if got, _ := c.Validate(); got.Warmup != 2*time.Minute {
		t.Errorf("30-minute run: warm-up %v, want the default 2m", got.Warmup)
	}
	bad := c
	bad.ChatPublishers, bad.Rejoiners = 20, 20
	bad.URL = ""
	if _, err := bad.Validate(); err == nil || !strings.Contains(err.Error(), "URL") || !strings.Contains(err.Error(), "publishers") {
		t.Errorf("bad config: %v", err)
	}
}

func TestSampleLine(t *testing.T) {
	s := line(3, 42, 30, 150, 12*time.Millisecond, 4*time.Millisecond)
	s.Elapsed = 3*time.Minute + 400*time.Millisecond
	s.DeliveriesPerS, s.Conns, s.SlowCuts = 2345.6, 140, -1
	got := s.line()
	for _, want := range []string{"03:00", "42.0", "150", "2346", "12.00ms", "4.00ms", " - "} {
		if !strings.Contains(got, want) {
			t.Errorf("line %q lacks %q", got, want)
		}
	}
	if len(got) != len(lineHeader) {
		t.Errorf("line is %d wide, header %d:\n%s\n%s", len(got), len(lineHeader), lineHeader, got)
	}
	if c := clock(61*time.Minute + 5*time.Second); c != "1:01:05" {
		t.Errorf("clock = %q", c)
	}
}
