package soak

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"
)

// runner holds what the workloads share.
type runner struct {
	cfg     Config
	c       *counters
	fanout  *latency // publisher's clock to member's, live events only
	command *latency // command to handler, round trip
	history *latency // history command, round trip
	sched   *latency // how late the driver's own 10 ms sleeps wake: the machine's noise
	garbage *garbageStats
}

// Report is the outcome of a run.
type Report struct {
	Config   Config                    `json:"config"`
	Started  time.Time                 `json:"started"`
	Elapsed  time.Duration             `json:"elapsed_ns"`
	Samples  []Sample                  `json:"samples"`
	Total    map[string]int64          `json:"total"`
	FanOut   LatencyStats              `json:"fanout"`
	Command  LatencyStats              `json:"command"`
	History  LatencyStats              `json:"history"`
	Sched    LatencyStats              `json:"sched"`
	Garbage  map[string]garbageOutcome `json:"garbage"`
	Notes    map[string]int64          `json:"notes"`
	Verdict  Verdict                   `json:"verdict"`
	Stopping string                    `json:"stopping,omitempty"` // why the run ended early
}

// setupTimeout bounds the connection of every long-lived client before the load starts.
const setupTimeout = 2 * time.Minute

// stopTimeout bounds the wait for the workloads to close their connections at the end.
const stopTimeout = 30 * time.Second

// Run drives the server at cfg.URL for cfg.Duration, writing one line per cfg.Interval to out
// (and to cfg.OutDir), then the summary and the verdict. It returns the report; err is for a
// run that could not be made at all (bad settings, no server), not for a run that found growth.
func Run(ctx context.Context, cfg Config, out io.Writer) (Report, error) {
	cfg, err := cfg.Validate()
	if err != nil {
		return Report{}, err
	}
	rep := Report{Config: cfg, Started: time.Now()}
	r := &runner{cfg: cfg, c: newCounters(), fanout: newLatency(), command: newLatency(),
		history: newLatency(), sched: newLatency(), garbage: newGarbageStats()}

	var files outFiles
	if cfg.OutDir != "" {
		if files, err = openOutFiles(cfg.OutDir); err != nil {
			return rep, err
		}
		defer files.close()
	}
	w := out
	if files.txt != nil {
		w = io.MultiWriter(out, files.txt)
	}
	fmt.Fprintf(w, "soak: %s for %v against %s, one line every %v, warm-up %v left out of the verdict\n",
		r.describe(), cfg.Duration, cfg.URL, cfg.Interval, cfg.Warmup)

	// The baseline: the server before the soak's clients arrive.
	base := readServer(ctx, cfg)
	if cfg.ServerPID > 0 && !processAlive(cfg.ServerPID) {
		return rep, fmt.Errorf("server process %d is not running", cfg.ServerPID)
	}
	if cfg.MetricsURL != "" && base.Goroutines < 0 {
		return rep, fmt.Errorf("the server's metrics cannot be read: %v", base.Problems)
	}

	loadCtx, stopLoad := context.WithCancel(ctx)
	defer stopLoad()
	var wg sync.WaitGroup
	setupStart := time.Now()
	fmt.Fprintf(w, "soak: connecting %d long-lived clients\n", r.longLived())
	if err := r.startClients(loadCtx, &wg); err != nil {
		stopLoad()
		waitTimeout(&wg, stopTimeout)
		return rep, err
	}
	if n := r.c.snapshot()[cDialErrors]; n > 0 {
		fmt.Fprintf(w, "soak: %d clients failed to connect at first (they keep trying; counted as errors)\n", n)
	}
	fmt.Fprintf(w, "soak: clients ready in %.1f s; load running\n\n%s\n\n", time.Since(setupStart).Seconds(), legend)
	r.startLoad(loadCtx, &wg)

	start := time.Now()
	rep.Started = start
	prev := prevState{counts: r.c.snapshot(), server: base, at: start}
	first := r.sampleFrom(0, 0, base, prev)
	rep.Samples = append(rep.Samples, first)
	fmt.Fprintln(w, lineHeader)
	files.emit(w, first)

	serverExited := false
	tick := time.NewTicker(cfg.Interval)
	defer tick.Stop()
	alive := time.NewTicker(time.Second)
	defer alive.Stop()
	// The run ends with the line due at cfg.Duration; a duration that is not a whole number of
	// intervals ends at the duration, without a line for the partial interval.
	lines := int(cfg.Duration / cfg.Interval)
	end := time.NewTimer(cfg.Duration + cfg.Interval/2) // only a safety net then
	if cfg.Duration%cfg.Interval != 0 {
		end.Reset(cfg.Duration)
	}
	defer end.Stop()
loop:
	for idx := 1; ; {
		select {
		case <-ctx.Done():
			rep.Stopping = "interrupted"
			break loop
		case <-alive.C:
			if cfg.ServerPID > 0 && !processAlive(cfg.ServerPID) {
				serverExited = true
				rep.Stopping = "the server process exited"
				fmt.Fprintf(w, "soak: the server process %d exited; stopping\n", cfg.ServerPID)
				break loop
			}
		case now := <-tick.C:
			st := readServer(ctx, cfg)
			s := r.sampleFrom(idx, now.Sub(start), st, prev)
			prev = prevState{counts: r.c.snapshot(), server: st, at: now}
			rep.Samples = append(rep.Samples, s)
			files.emit(w, s)
			if idx == lines {
				break loop
			}
			idx++
		case <-end.C:
			break loop
		}
	}
	rep.Elapsed = time.Since(start)
	stopLoad()
	if !waitTimeout(&wg, stopTimeout) {
		fmt.Fprintf(w, "soak: some clients did not stop within %v\n", stopTimeout)
	}

	total := r.c.snapshot()
	rep.Total = total.Map()
	rep.FanOut, rep.Command, rep.History = r.fanout.overall(), r.command.overall(), r.history.overall()
	rep.Sched = r.sched.overall()
	rep.Garbage = r.garbage.snapshot()
	rep.Notes = r.c.noteList()
	rep.Verdict = Judge(rep.Samples, cfg.Warmup, cfg.Tolerances, total, serverExited)

	fmt.Fprintln(w)
	r.writeSummary(w, rep, total)
	if files.json != nil {
		if err := json.NewEncoder(files.json).Encode(rep); err != nil {
			fmt.Fprintf(w, "soak: writing summary.json: %v\n", err)
		}
	}
	return rep, nil
}

// describe says what the load is, in one line.
func (r *runner) describe() string {
	c := r.cfg
	chat := float64(c.ChatChannels*c.ChatPublishers) * c.ChatRate * float64(c.ChatMembers-1)
	bulk := c.BulkRate * float64(c.BulkMembers)
	return fmt.Sprintf("%d chat channels x %d members (%d publishing %.0f/s, %d rejoining every %v), "+
		"bulk feed %.0f/s x %d B to %d, %d requesters x %.0f/s to %d handlers, history %.1f/s, "+
		"channel churn %.1f/s, connection churn %.1f/s, %d stalled, %d garbage clients (about %.0f deliveries/s)",
		c.ChatChannels, c.ChatMembers, c.ChatPublishers, c.ChatRate, c.Rejoiners, c.RejoinEvery,
		c.BulkRate, c.BulkBytes, c.BulkMembers, c.Requesters, c.CommandRate, c.Handlers, c.HistoryRate,
		c.ChurnChannelRate, c.ChurnConnRate, c.Stalled, c.Garbage, chat+bulk)
}

// longLived counts the clients that stay for the whole run (chat, bulk, handlers).
func (r *runner) longLived() int {
	c := r.cfg
	return c.ChatChannels*c.ChatMembers + c.BulkMembers + 1 + c.Handlers
}

// startClients connects the members and handlers and waits until each has joined (or failed
// once: failures are counted and retried in the background).
func (r *runner) startClients(ctx context.Context, wg *sync.WaitGroup) error {
	c := r.cfg
	var ready sync.WaitGroup
	// A few at a time: a soak measures a steady state, not a connection storm.
	slots := make(chan struct{}, 16)
	launch := func(run func(ready func())) {
		ready.Add(1)
		wg.Add(1)
		slots <- struct{}{}
		var once sync.Once
		done := func() { once.Do(func() { <-slots; ready.Done() }) }
		go func() {
			defer wg.Done()
			defer done() // a client that never got to try is ready too (the run is ending)
			run(done)
		}()
	}
	for i := range c.Handlers {
		id := fmt.Sprintf("soak-handler-%s-%d", c.RunID, i)
		launch(func(ready func()) { r.runHandler(ctx, id, ready) })
	}
	var pubs []*publisher
	for ch := range c.ChatChannels {
		for i := range c.ChatMembers {
			m := r.newMember(fmt.Sprintf("soak-chat-%s-%d-%d", c.RunID, ch, i), chatChannel(ch),
				i >= c.ChatPublishers && i < c.ChatPublishers+c.Rejoiners)
			if i < c.ChatPublishers {
				pubs = append(pubs, m.attachPublisher(c.ChatRate, c.PayloadBytes))
			}
			launch(func(ready func()) { m.run(ctx, ready) })
		}
	}
	for i := range c.BulkMembers + 1 {
		m := r.newMember(fmt.Sprintf("soak-bulk-%s-%d", c.RunID, i), bulkChannel, false)
		if i == 0 {
			pubs = append(pubs, m.attachPublisher(c.BulkRate, c.BulkBytes))
		}
		launch(func(ready func()) { m.run(ctx, ready) })
	}
	done := make(chan struct{})
	go func() { ready.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(setupTimeout):
		return fmt.Errorf("the clients did not connect within %v", setupTimeout)
	case <-ctx.Done():
		return ctx.Err()
	}
	// Those that failed keep trying in the background (and are counted); if none got in, there
	// is nothing to soak.
	if n := r.c.snapshot()[cDialErrors]; n >= int64(r.longLived()) {
		return fmt.Errorf("no client could connect and join: %v", r.c.noteList())
	}
	for _, p := range pubs {
		wg.Add(1)
		go func() { defer wg.Done(); p.run(ctx) }()
	}
	return nil
}

// startLoad starts everything that comes and goes: requesters, history reads, churn, stalled
// and garbage clients.
func (r *runner) startLoad(ctx context.Context, wg *sync.WaitGroup) {
	c := r.cfg
	spawn := func(f func()) {
		wg.Add(1)
		go func() { defer wg.Done(); f() }()
	}
	if c.CommandRate > 0 {
		for i := range c.Requesters {
			id := fmt.Sprintf("soak-req-%s-%d", c.RunID, i)
			spawn(func() { r.runRequester(ctx, id) })
		}
	}
	if c.HistoryRate > 0 {
		spawn(func() { r.runHistory(ctx, "soak-hist-"+c.RunID) })
	}
	if c.ChurnChannelRate > 0 {
		spawn(func() { r.runChannelChurn(ctx, "soak-churn-"+c.RunID) })
	}
	if c.ChurnConnRate > 0 {
		spawn(func() { r.runConnChurn(ctx) })
	}
	for i := range c.Stalled {
		spawn(func() { r.runStalled(ctx, i) })
	}
	spawn(func() { r.runSchedProbe(ctx) })
	for i := range c.Garbage {
		spawn(func() { r.runGarbage(ctx, i) })
	}
}

// schedProbeSleep is the probe's nap; how late it wakes is the scheduling delay every client
// of the soak (and the server) suffers on this machine at that moment.
const schedProbeSleep = 10 * time.Millisecond

// runSchedProbe measures the machine's scheduling noise: on a shared 2-core machine, latency
// spikes that the probe sees too are not the bus's doing.
func (r *runner) runSchedProbe(ctx context.Context) {
	for ctx.Err() == nil {
		t := time.Now()
		if !sleepCtx(ctx, schedProbeSleep) {
			return
		}
		r.sched.record(time.Since(t) - schedProbeSleep)
	}
}

// prevState is what the previous line saw, for the interval's differences.
type prevState struct {
	counts Counts
	server serverState
	at     time.Time
}

// sampleFrom makes line idx from the server's state st and the counters since prev.
func (r *runner) sampleFrom(idx int, elapsed time.Duration, st serverState, prev prevState) Sample {
	now := r.c.snapshot()
	d := now.minus(prev.counts)
	secs := time.Since(prev.at).Seconds()
	if idx == 0 || secs <= 0 {
		secs = 1
	}
	delta := func(cur, old int64) int64 {
		if cur < 0 || old < 0 {
			return -1
		}
		return cur - old
	}
	s := Sample{
		Index: idx, Elapsed: elapsed,
		RSS: st.RSS, Goroutines: st.Goroutines, FDs: st.FDs, Channels: st.Channels, Conns: st.Conns,
		HeapInuse: st.HeapInuse, RedisRSS: st.RedisRSS,
		Counts: d, Errors: d.Errors(), Violations: d.Violations(),
		SlowCuts:     delta(st.SlowCuts, prev.server.SlowCuts),
		ServerErrs:   delta(st.Errors, prev.server.Errors),
		CountsByName: d.Map(),
		Problems:     st.Problems,
		Load1:        load1(),
	}
	if idx > 0 {
		s.DeliveriesPerS = float64(d[cDelivered]) / secs
		s.CommandsPerS = float64(d[cCmdOK]) / secs
		if sent := delta(st.Sent, prev.server.Sent); sent >= 0 {
			s.ServerSentPerS = float64(sent) / secs
		}
		s.FanOut, s.Command, s.History = r.fanout.rotate(), r.command.rotate(), r.history.rotate()
		s.Sched = r.sched.rotate()
	} else {
		s.SlowCuts, s.ServerErrs = 0, 0
	}
	if s.RedisRSS < 0 {
		s.RedisRSS = 0
	}
	return s
}

// writeSummary prints the totals, the latencies, the garbage outcomes, the notes and the verdict.
func (r *runner) writeSummary(w io.Writer, rep Report, total Counts) {
	fmt.Fprintf(w, "==> summary of %v", rep.Elapsed.Round(time.Second))
	if rep.Stopping != "" {
		fmt.Fprintf(w, " (stopped early: %s)", rep.Stopping)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, lineHeader)
	for _, s := range rep.Samples {
		fmt.Fprintln(w, s.line())
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "totals:")
	for i := 0; i < int(numCounters); i += 4 {
		fmt.Fprint(w, " ")
		for k := i; k < min(i+4, int(numCounters)); k++ {
			fmt.Fprintf(w, " %24s %-9d", counterNames[k], total[k])
		}
		fmt.Fprintln(w)
	}
	lat := func(name string, l LatencyStats) {
		if l.Count == 0 {
			fmt.Fprintf(w, "  %-10s none\n", name)
			return
		}
		fmt.Fprintf(w, "  %-10s n=%-9d p50 %s  p99 %s  max %s\n", name, l.Count,
			ms(l.P50, 1), ms(l.P99, 1), ms(l.Max, 1))
	}
	fmt.Fprintln(w, "latency over the whole run:")
	lat("fan-out", rep.FanOut)
	lat("command", rep.Command)
	lat("history", rep.History)
	lat("sched", rep.Sched)
	fmt.Fprintln(w, "  (sched: how late the driver's 10 ms sleeps woke up; when it is high, so is every latency above, and the machine is to blame)")
	if r.cfg.Garbage > 0 {
		fmt.Fprintln(w, "garbage, by kind (as_spec: answered as the protocol says; a policy close 1008 for too many violations also counts):")
		r.garbage.write(w)
	}
	if len(rep.Notes) > 0 {
		fmt.Fprintln(w, "errors and violations seen (first kinds, counted):")
		keys := make([]string, 0, len(rep.Notes))
		for k := range rep.Notes {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			fmt.Fprintf(w, "  %6d  %s\n", rep.Notes[k], k)
		}
	}
	rep.Verdict.write(w)
}

// waitTimeout waits for wg up to d; false if it had to give up.
func waitTimeout(wg *sync.WaitGroup, d time.Duration) bool {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
		return true
	case <-time.After(d):
		return false
	}
}

// outFiles are the run's files: minutes.txt (what is printed), minutes.jsonl (one Sample a
// line) and summary.json (the Report).
type outFiles struct {
	txt   io.Writer
	jsonl *os.File
	json  *os.File
	all   []*os.File
}

func openOutFiles(dir string) (outFiles, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return outFiles{}, fmt.Errorf("creating %s: %w", dir, err)
	}
	var f outFiles
	var errs []error
	open := func(name string) *os.File {
		h, err := os.Create(filepath.Join(dir, name))
		if err != nil {
			errs = append(errs, err)
			return nil
		}
		f.all = append(f.all, h)
		return h
	}
	txt := open("minutes.txt")
	f.jsonl, f.json = open("minutes.jsonl"), open("summary.json")
	if err := errors.Join(errs...); err != nil {
		f.close()
		return outFiles{}, err
	}
	f.txt = txt
	return f, nil
}

func (f outFiles) close() {
	for _, h := range f.all {
		h.Close()
	}
}

// emit prints one line (to w, which includes minutes.txt) and appends it to minutes.jsonl.
func (f outFiles) emit(w io.Writer, s Sample) {
	fmt.Fprintln(w, s.line())
	for _, p := range s.Problems {
		fmt.Fprintln(w, "        note: "+p)
	}
	if f.jsonl != nil {
		_ = json.NewEncoder(f.jsonl).Encode(s)
	}
}
