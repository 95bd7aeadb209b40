package soak

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/arqonbus/arqonbus/perf/load"
)

// Metrics read from the server's /metrics.
const (
	mGoroutines = "go_goroutines"
	mChannels   = "arqonbus_channels_total"
	mConns      = "arqonbus_websocket_connections"
	mSent       = "arqonbus_messages_sent_total"
	mSlow       = "arqonbus_slow_consumers_total"
	mHeapInuse  = "go_memstats_heap_inuse_bytes"
	mErrors     = "arqonbus_errors_total"                             // summed over codes
	mViolCloses = `arqonbus_limit_refusals_total{limit="violations"}` // closes for repeated violations
)

// serverState is one reading of the server from outside: /proc and /metrics. A field that
// could not be read is -1.
type serverState struct {
	RSS        int64 // bytes
	FDs        int64
	Goroutines int64
	Channels   int64
	Conns      int64
	Sent       int64 // messages sent to clients so far
	SlowCuts   int64 // slow consumers closed so far
	HeapInuse  int64
	Errors     int64 // error envelopes sent so far, all codes
	ViolCloses int64 // connections closed for repeated violations so far
	RedisRSS   int64

	Problems []string // what could not be read, and why
}

var metricsClient = &http.Client{Timeout: 5 * time.Second}

// readServer reads what it can; problems are noted, not fatal (a soak line with one "-" is
// still worth printing), except that the caller treats a vanished server process as the end.
func readServer(ctx context.Context, cfg Config) serverState {
	st := serverState{RSS: -1, FDs: -1, Goroutines: -1, Channels: -1, Conns: -1, Sent: -1,
		SlowCuts: -1, HeapInuse: -1, Errors: -1, ViolCloses: -1, RedisRSS: -1}
	note := func(format string, a ...any) { st.Problems = append(st.Problems, fmt.Sprintf(format, a...)) }
	if cfg.ServerPID > 0 {
		if v, err := load.ReadRSS(cfg.ServerPID); err == nil {
			st.RSS = v
		} else {
			note("server RSS: %v", err)
		}
		if v, err := countFDs(cfg.ServerPID); err == nil {
			st.FDs = v
		} else {
			note("server descriptors: %v", err)
		}
	}
	if cfg.RedisPID > 0 {
		if v, err := load.ReadRSS(cfg.RedisPID); err == nil {
			st.RedisRSS = v
		} else {
			note("redis RSS: %v", err)
		}
	}
	if cfg.MetricsURL != "" {
		m, err := scrapeMetrics(ctx, cfg.MetricsURL)
		if err != nil {
			note("metrics: %v", err)
			return st
		}
		get := func(name string) int64 {
			if v, ok := m[name]; ok {
				return int64(v)
			}
			return -1
		}
		st.Goroutines, st.Channels, st.Conns = get(mGoroutines), get(mChannels), get(mConns)
		st.Sent, st.SlowCuts, st.HeapInuse = get(mSent), get(mSlow), get(mHeapInuse)
		st.Errors, st.ViolCloses = get(mErrors), get(mViolCloses)
	}
	return st
}

// countFDs counts the open descriptors of process pid (the entries of /proc/<pid>/fd).
func countFDs(pid int) (int64, error) {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/fd")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var n int64
	for {
		names, err := f.Readdirnames(1024)
		n += int64(len(names))
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}

// processAlive tells whether pid still runs (and is no zombie).
func processAlive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && i+2 < len(s) && s[i+2] != 'Z'
}

func scrapeMetrics(ctx context.Context, url string) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := metricsClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: HTTP %d", url, resp.StatusCode)
	}
	return parseMetrics(resp.Body)
}

// parseMetrics reads the Prometheus text format into series → value. Each labelled series is
// kept under its full name as the server writes it (name{label="value"}), and its value is also
// added to the bare name, so that "arqonbus_errors_total" is the total over every code. A bare
// name that the server also writes unlabelled keeps the unlabelled value.
func parseMetrics(r io.Reader) (map[string]float64, error) {
	out := make(map[string]float64)
	bare := make(map[string]bool) // names seen without labels
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		// The value follows the series; label values may hold spaces, so split after the '}'.
		series, rest := line, ""
		if i := strings.LastIndexByte(line, '}'); i >= 0 {
			series, rest = line[:i+1], line[i+1:]
		} else if i := strings.IndexByte(line, ' '); i >= 0 {
			series, rest = line[:i], line[i:]
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			return nil, fmt.Errorf("metrics line without a value: %.80q", line)
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			return nil, fmt.Errorf("metrics line %.80q: %w", line, err)
		}
		out[series] = v
		name, _, labelled := strings.Cut(series, "{")
		if !labelled {
			bare[name] = true
			continue
		}
		if !bare[name] {
			out[name] += v
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return out, nil
}

// load1 is the machine's 1-minute load average (0 when unknown).
func load1() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v
}
