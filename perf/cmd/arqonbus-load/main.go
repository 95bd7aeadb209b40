// Command arqonbus-load is ArqonBus's load generator: it opens real WebSocket connections to a
// running server (or several nodes of one bus), drives one scenario (fanout, channels, command or
// idle) and reports rates, latency percentiles, loss, duplicates, errors, CPU time and, for idle
// connections, server memory per connection.
//
//	arqonbus-load -scenario fanout -subs 100 -pubs 10 -rate 10000 -duration 10s
//	arqonbus-load -scenario channels -channels 1000 -subs 1 -rate 10000
//	arqonbus-load -scenario command -handlers 1 -requesters 10 -rate 1000
//	arqonbus-load -scenario idle -conns 10000 -server-pid $(pgrep -n arqonbus)
//	arqonbus-load -scenario fanout -addr 127.0.0.1:9100 -sub-addrs 127.0.0.1:9100,127.0.0.1:9101,127.0.0.1:9102 \
//		-server-pids 101,102,103 -redis-pid 100
//
// Given server pids (-server-pid, -server-pids) and a Redis pid (-redis-pid), every run reports
// the CPU time each spent in the measured window, read from /proc, and the servers' CPU per
// delivery; the generator's own CPU is always reported.
//
// With -json the result is one JSON object on stdout (progress goes to stderr either way);
// -summarize FILE prints the table of a file of such lines, with the median of repeated runs.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"github.com/arqonbus/arqonbus/perf/load"
)

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "arqonbus-load:", err)
		}
		os.Exit(1)
	}
}

func run(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("arqonbus-load", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg load.Config
	fs.StringVar(&cfg.Addr, "addr", "127.0.0.1:9100", "server client WebSocket `host:port`")
	subAddrs := fs.String("sub-addrs", "", "comma list of `host:port` addresses subscribers (and idle connections) connect to, round robin, and command handlers to those after the first; publishers and requesters use -addr (default: -addr)")
	fs.StringVar(&cfg.Scenario, "scenario", "", "fanout, channels, command or idle")
	fs.IntVar(&cfg.Subs, "subs", 0, "fanout: subscribers (default 100); channels: subscribers per channel (default 1)")
	fs.IntVar(&cfg.Pubs, "pubs", 0, "fanout: publishers (default 10); channels: publishers per channel (default 1)")
	fs.IntVar(&cfg.Channels, "channels", 0, "channels: channels (default 1000); idle: channels to spread over (default conns/100)")
	fs.Float64Var(&cfg.Rate, "rate", 0, "total messages/s over all publishers (default 10000)")
	fs.IntVar(&cfg.Conns, "conns", 0, "idle: connections (default 10000, at most 19500 per process)")
	fs.IntVar(&cfg.Handlers, "handlers", 0, "command: clients serving bench_echo on the channel (default 1)")
	fs.IntVar(&cfg.Requesters, "requesters", 0, "command: clients sending bench_echo; -rate is their total requests/s (default 10, rate 1000)")
	fs.StringVar(&cfg.MetricsURL, "metrics-url", "", "server `url` of /metrics: also report storage writes, errors and persistence queue depth")
	label := fs.String("label", "", "label of the result row (e.g. base, head, memory, redis)")
	fs.DurationVar(&cfg.Duration, "duration", 10*time.Second, "measured window")
	fs.DurationVar(&cfg.Warmup, "warmup", 2*time.Second, "publishing before the window, not counted")
	fs.DurationVar(&cfg.Drain, "drain", 2*time.Second, "longest wait for late deliveries after publishing stops")
	fs.DurationVar(&cfg.Hold, "hold", 3*time.Second, "idle: how long to hold the connections before reading RSS")
	fs.IntVar(&cfg.ServerPID, "server-pid", 0, "a server pid: its CPU in the window is reported, and idle runs read its VmRSS (counts as one of -server-pids)")
	serverPIDs := fs.String("server-pids", "", "comma list of server `pids` whose CPU time in the window is reported (per pid, summed, and per delivery); idle runs sum their VmRSS")
	fs.IntVar(&cfg.RedisPID, "redis-pid", 0, "Redis server `pid`: its CPU in the window is reported on its own")
	srcIPs := fs.String("src-ips", "auto", "comma list of 127.0.0.x source addresses, round robin (auto: as needed)")
	fs.IntVar(&cfg.ConnectConcurrency, "connect-concurrency", 200, "connections set up at once")
	fs.IntVar(&cfg.ReadLoops, "read-loops", 0, "fanout, channels: event loops reading the subscribers (0: half the CPUs, at least 1)")
	fs.IntVar(&cfg.Pacers, "pacers", 0, "fanout, channels: goroutines sending the publishers' schedules (0: half the CPUs, at least 1)")
	fs.DurationVar(&cfg.ConnectTimeout, "connect-timeout", 10*time.Second, "per connection: dial, upgrade, welcome and join")
	fs.StringVar(&cfg.Room, "room", "perf", "room of the test channels")
	asJSON := fs.Bool("json", false, "print the result as one JSON line")
	summarize := fs.String("summarize", "", "print the table (medians per scenario) of a `file` of -json lines, and exit")
	freePorts := fs.Int("free-ports", 0, "print `n` free TCP ports on 127.0.0.1, one a line, and exit (for scripts)")
	cpuProfile := fs.String("cpuprofile", "", "write the generator's own CPU profile to `file` (to check it stays cheap)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}

	switch {
	case *summarize != "":
		return printSummary(*summarize, stdout)
	case *freePorts > 0:
		return load.PrintFreePorts(*freePorts, stdout)
	}

	ips, err := load.ParseSrcIPs(*srcIPs)
	if err != nil {
		return err
	}
	cfg.SrcIPs = ips
	if cfg.SubAddrs, err = load.ParseAddrs(*subAddrs); err != nil {
		return fmt.Errorf("-sub-addrs: %w", err)
	}
	if cfg.ServerPIDs, err = load.ParsePIDs(*serverPIDs); err != nil {
		return fmt.Errorf("-server-pids: %w", err)
	}
	cfg.Logf = func(format string, a ...any) {
		fmt.Fprintf(stderr, "%s arqonbus-load: %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, a...))
	}

	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := load.Run(ctx, cfg)
	if err != nil {
		return err
	}
	res.Label = *label
	if *asJSON {
		return json.NewEncoder(stdout).Encode(res)
	}
	if err := load.WriteTable(stdout, []load.Result{res}); err != nil {
		return err
	}
	if res.Scenario == load.ScenarioCommand {
		fmt.Fprintf(stdout, "sent %d requests in window, answered %d; timeouts %d, other refusals %d, lost (no answer) %d, dup %d, out of order %d, unplanned %d, rate limited %d; worst send lag %.2f ms\n",
			res.Sent, res.Delivered, res.Timeouts, res.Expected-res.Delivered-res.Lost-res.Timeouts, res.Lost, res.Dup, res.OutOfOrder, res.Unplanned, res.RateLimited, res.SendLagMaxMs)
	} else if res.Scenario != load.ScenarioIdle {
		fmt.Fprintf(stdout, "sent %d in window, expected %d deliveries, delivered %d; lost %d, dup %d, out of order %d, unplanned %d; worst send lag %.2f ms\n",
			res.Sent, res.Expected, res.Delivered, res.Lost, res.Dup, res.OutOfOrder, res.Unplanned, res.SendLagMaxMs)
	} else if res.RSSAfterBytes > 0 {
		fmt.Fprintf(stdout, "server RSS %d -> %d bytes over %d connections: %.0f bytes each\n",
			res.RSSBeforeBytes, res.RSSAfterBytes, res.Conns, res.RSSPerConnBytes)
	}
	if res.Scraped > 0 {
		fmt.Fprintf(stdout, "storage: %d of %d published messages stored by the end of the drain, %.0f/s in the window; queue max %d, at end %d; storage errors %d; degraded %d\n",
			res.Stored, res.SentAll, res.StoredPerSec, res.PersistQueueMax, res.PersistQueueEnd, res.StorageErrors, res.StorageDegraded)
	}
	if res.CPUWindowS > 0 {
		fmt.Fprintf(stdout, "CPU over %.2fs: %s\n", res.CPUWindowS, cpuLine(res))
	}
	if res.FirstError != "" {
		fmt.Fprintf(stdout, "errors %d, disconnects %d, publish errors %d; first: %s\n",
			res.Errors, res.Disconnects, res.PublishErrors, res.FirstError)
	}
	return nil
}

// cpuLine details a result's CPU: every server pid, the sum, Redis and the generator.
func cpuLine(r load.Result) string {
	var b strings.Builder
	for i, p := range r.ServerCPU {
		if i > 0 {
			b.WriteString(", ")
		}
		if p.Missing != "" {
			fmt.Fprintf(&b, "server %d missing (%s)", p.PID, p.Missing)
		} else {
			fmt.Fprintf(&b, "server %d %.3fs", p.PID, p.CPUS)
		}
	}
	if len(r.ServerCPU) > 0 {
		fmt.Fprintf(&b, "; servers %.3fs", r.ServerCPUS)
		if r.ServerCPUUsPerDelivery > 0 {
			fmt.Fprintf(&b, " = %.2f µs per delivery, %.2f µs per message", r.ServerCPUUsPerDelivery, r.ServerCPUUsPerMsg)
		}
		b.WriteString("; ")
	}
	if r.RedisPID > 0 {
		if strings.HasPrefix(r.CPUMissing, "redis") {
			fmt.Fprintf(&b, "redis %d missing; ", r.RedisPID)
		} else {
			fmt.Fprintf(&b, "redis %d %.3fs; ", r.RedisPID, r.RedisCPUS)
		}
	}
	fmt.Fprintf(&b, "generator %.3fs", r.GenCPUS)
	return b.String()
}

func printSummary(path string, w io.Writer) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	results, err := load.ReadResults(f)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	sum := load.Summarize(results)
	if err := load.WriteTable(w, sum); err != nil {
		return err
	}
	for _, r := range sum {
		if r.FirstError != "" {
			fmt.Fprintf(w, "%s %s %s: first error: %s\n", r.Label, r.Scenario, r.Params, r.FirstError)
		}
		if r.CPUMissing != "" {
			fmt.Fprintf(w, "%s %s %s: CPU not read for %s\n", r.Label, r.Scenario, r.Params, r.CPUMissing)
		}
	}
	for _, r := range sum {
		if r.CPUWindowS > 0 {
			fmt.Fprintln(w, "CPU: seconds used in the measured window (idle: while held); srv = all server pids summed (Redis apart), per node in pid order; µs/deliv and µs/msg = summed server CPU per delivery and per message sent in the window")
			break
		}
	}
	for _, r := range sum {
		if r.Scenario == load.ScenarioCommand {
			fmt.Fprintln(w, "command rows: sent/s = requests/s sent, deliv/s = requests/s answered with success, latency = round trip, lost = no answer at all by the end of the drain")
			break
		}
	}
	return nil
}
