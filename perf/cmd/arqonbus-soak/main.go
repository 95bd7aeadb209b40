// Command arqonbus-soak drives a running ArqonBus server with a long, mixed, realistic load
// (package perf/soak) and reports, every interval, the server's memory, goroutines, open
// descriptors and channels and the latency its clients see; at the end a verdict: flat or not.
//
// scripts/soak.sh (make soak) builds the server, starts a fresh one and runs this against it.
//
// Exit status: 0 flat (or too short to judge) with no violation, 1 not flat or violations,
// 2 the run could not be made.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/arqonbus/arqonbus/perf/load"
	"github.com/arqonbus/arqonbus/perf/soak"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	code, err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "arqonbus-soak:", err)
	}
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) (int, error) {
	cfg := soak.DefaultConfig()
	fs := flag.NewFlagSet("arqonbus-soak", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "127.0.0.1:9100", "the server's client WebSocket `host:port`")
	fs.StringVar(&cfg.MetricsURL, "metrics-url", "", "the server's /metrics `URL` (goroutines, channels, connections, slow consumers)")
	fs.IntVar(&cfg.ServerPID, "server-pid", 0, "the server's `pid`, for RSS and open descriptors (/proc)")
	fs.IntVar(&cfg.RedisPID, "redis-pid", 0, "a Redis `pid`, for its RSS")
	fs.DurationVar(&cfg.Duration, "duration", cfg.Duration, "how long the load runs")
	fs.DurationVar(&cfg.Interval, "interval", cfg.Interval, "one report line per `interval`")
	fs.DurationVar(&cfg.Warmup, "warmup", cfg.Warmup, "left out of the verdict (shortened so that at least 2 lines are judged)")
	fs.StringVar(&cfg.OutDir, "out", "", "`dir` for minutes.txt, minutes.jsonl and summary.json")
	fs.StringVar(&cfg.RunID, "run-id", "", "makes client ids and churn channels unique (default: from the clock)")

	fs.IntVar(&cfg.ChatChannels, "chat-channels", cfg.ChatChannels, "chat channels")
	fs.IntVar(&cfg.ChatMembers, "chat-members", cfg.ChatMembers, "members of each chat channel")
	fs.IntVar(&cfg.ChatPublishers, "chat-publishers", cfg.ChatPublishers, "publishers among each channel's members")
	fs.Float64Var(&cfg.ChatRate, "chat-rate", cfg.ChatRate, "events a second from each chat publisher")
	fs.IntVar(&cfg.PayloadBytes, "payload", cfg.PayloadBytes, "text bytes in a chat event")
	fs.IntVar(&cfg.Rejoiners, "rejoiners", cfg.Rejoiners, "members of each chat channel that leave and come back with since")
	fs.DurationVar(&cfg.RejoinEvery, "rejoin-every", cfg.RejoinEvery, "how often each rejoiner leaves")
	fs.DurationVar(&cfg.RejoinAway, "rejoin-away", cfg.RejoinAway, "how long it stays away")
	fs.IntVar(&cfg.BulkMembers, "bulk-members", cfg.BulkMembers, "readers of the bulk feed")
	fs.Float64Var(&cfg.BulkRate, "bulk-rate", cfg.BulkRate, "bulk events a second")
	fs.IntVar(&cfg.BulkBytes, "bulk-bytes", cfg.BulkBytes, "text bytes in a bulk event")
	fs.IntVar(&cfg.Handlers, "handlers", cfg.Handlers, "command handlers")
	fs.IntVar(&cfg.Requesters, "requesters", cfg.Requesters, "clients sending commands to the handlers")
	fs.Float64Var(&cfg.CommandRate, "command-rate", cfg.CommandRate, "commands a second from each requester")
	fs.Float64Var(&cfg.HistoryRate, "history-rate", cfg.HistoryRate, "history reads a second")
	fs.Float64Var(&cfg.ChurnChannelRate, "churn-channels", cfg.ChurnChannelRate, "unique channels joined, published to and left, a second")
	fs.Float64Var(&cfg.ChurnConnRate, "churn-conns", cfg.ChurnConnRate, "connections opened, joined, published and closed, a second")
	fs.IntVar(&cfg.Stalled, "stalled", cfg.Stalled, "clients that stop reading, at a time")
	fs.DurationVar(&cfg.StalledLife, "stalled-life", cfg.StalledLife, "time a stalled client is given to be cut")
	fs.IntVar(&cfg.Garbage, "garbage", cfg.Garbage, "clients sending garbage")
	fs.DurationVar(&cfg.GarbageEvery, "garbage-every", cfg.GarbageEvery, "one garbage frame per client this often")

	fs.Float64Var(&cfg.Tolerances.RSSPct, "tol-rss-pct", cfg.Tolerances.RSSPct, "allowed RSS growth, percent")
	rssMiB := fs.Int64("tol-rss-mib", cfg.Tolerances.RSSBytes>>20, "... or MiB, whichever is larger")
	fs.Float64Var(&cfg.Tolerances.GoroutinesPct, "tol-goroutines-pct", cfg.Tolerances.GoroutinesPct, "allowed goroutine growth, percent")
	fs.Int64Var(&cfg.Tolerances.Goroutines, "tol-goroutines", cfg.Tolerances.Goroutines, "... or count")
	fs.Float64Var(&cfg.Tolerances.FDsPct, "tol-fds-pct", cfg.Tolerances.FDsPct, "allowed descriptor growth, percent")
	fs.Int64Var(&cfg.Tolerances.FDs, "tol-fds", cfg.Tolerances.FDs, "... or count")
	fs.Float64Var(&cfg.Tolerances.LatencyFactor, "tol-p99-factor", cfg.Tolerances.LatencyFactor, "late p99 at most this times the early one")
	fs.DurationVar(&cfg.Tolerances.LatencyFloor, "tol-p99-floor", cfg.Tolerances.LatencyFloor, "... or under this")
	freePorts := fs.Int("free-ports", 0, "print `n` free TCP ports on 127.0.0.1, one a line, and exit (for scripts)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0, nil
		}
		return 2, err
	}
	if *freePorts > 0 {
		if err := load.PrintFreePorts(*freePorts, stdout); err != nil {
			return 2, err
		}
		return 0, nil
	}
	cfg.Tolerances.RSSBytes = *rssMiB << 20
	cfg.URL = "ws://" + *addr + "/"

	rep, err := soak.Run(ctx, cfg, stdout)
	if err != nil {
		return 2, err
	}
	if cfg.OutDir != "" {
		fmt.Fprintf(stdout, "lines and summary written to %s\n", cfg.OutDir)
	}
	if !rep.Verdict.Passed() {
		return 1, nil
	}
	return 0, nil
}
