package load

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"reflect"
	"slices"
	"strconv"
	"text/tabwriter"
)

// Result is what one run measured. Rates are over the measured window only; latencies are
// receive time minus the publisher's send time, over deliveries sent inside the window.
type Result struct {
	Label    string `json:"label,omitempty"` // set by the caller (bench.sh: base/head, memory/redis)
	Scenario string `json:"scenario"`
	Params   string `json:"params"`
	Runs     int    `json:"runs"` // runs this result summarises (medians when more than 1)

	Subs       int     `json:"subs,omitempty"`
	Pubs       int     `json:"pubs,omitempty"`
	Handlers   int     `json:"handlers,omitempty"`   // command: clients serving bench_echo
	Requesters int     `json:"requesters,omitempty"` // command: clients sending it
	Channels   int     `json:"channels,omitempty"`
	Conns      int     `json:"conns"`
	Rate       float64 `json:"rate,omitempty"` // target messages/s over all publishers
	WarmupS    float64 `json:"warmup_s,omitempty"`
	DurationS  float64 `json:"duration_s,omitempty"`

	Sent       int64   `json:"sent"` // messages sent in the window
	SentPerSec float64 `json:"sent_per_s"`
	Expected   int64   `json:"expected"`  // deliveries due: each message times the subscribers of its channel
	Delivered  int64   `json:"delivered"` // unique deliveries of window messages
	// BytesPerDelivery is the wire size of a delivered event (frame header included), averaged over
	// the window's deliveries: what the server writes, and the kernel copies, per delivery.
	BytesPerDelivery float64 `json:"bytes_per_delivery,omitempty"`
	DeliveredPerSec  float64 `json:"delivered_per_s"`
	P50Ms            float64 `json:"p50_ms"`
	P99Ms            float64 `json:"p99_ms"`
	P999Ms           float64 `json:"p999_ms"`
	MaxMs            float64 `json:"max_ms"`
	SendLagMaxMs     float64 `json:"send_lag_max_ms"` // worst publisher lateness against its schedule

	// For the command scenario, sent counts requests, expected is the requests sent in the
	// window, delivered their success answers, and lost those with no answer at all (neither
	// success nor error) by the end of the drain.
	Lost          int64  `json:"lost"`
	Timeouts      int64  `json:"timeouts,omitempty"`     // command: window requests answered TIMEOUT
	RateLimited   int64  `json:"rate_limited,omitempty"` // RATE_LIMITED errors received
	Dup           int64  `json:"dup"`
	OutOfOrder    int64  `json:"out_of_order"`
	Unplanned     int64  `json:"unplanned"` // events not from the subscriber's publishers
	Errors        int64  `json:"errors"`    // error envelopes received
	Disconnects   int64  `json:"disconnects"`
	PublishErrors int64  `json:"publish_errors"`
	FirstError    string `json:"first_error,omitempty"`

	ConnectS        float64 `json:"connect_s"`
	ConnectPerSec   float64 `json:"connect_per_s"` // connections dialled, upgraded and joined per second
	RSSBeforeBytes  int64   `json:"rss_before_bytes,omitempty"`
	RSSAfterBytes   int64   `json:"rss_after_bytes,omitempty"`
	RSSPerConnBytes float64 `json:"rss_per_conn_bytes,omitempty"`

	// CPU time spent in the measured window (idle: while the connections were held), read from
	// /proc/<pid>/stat at the window's start and end (and getrusage for the generator).
	// CPUWindowS is the time between the two readings; 0 means CPU was not measured.
	CPUWindowS float64   `json:"cpu_window_s,omitempty"`
	ServerCPU  []ProcCPU `json:"server_cpu,omitempty"`   // per server pid, in the order given
	ServerCPUS float64   `json:"server_cpu_s,omitempty"` // summed over the servers (Redis not included)
	// Summed server CPU divided by the window's deliveries (command: answered requests) and by
	// its messages sent (command: requests), in microseconds; 0 when a server could not be read.
	ServerCPUUsPerDelivery float64 `json:"server_cpu_us_per_delivery,omitempty"`
	ServerCPUUsPerMsg      float64 `json:"server_cpu_us_per_msg,omitempty"`
	GenCPUS                float64 `json:"gen_cpu_s,omitempty"` // the load generator's own CPU
	RedisPID               int     `json:"redis_pid,omitempty"`
	RedisCPUS              float64 `json:"redis_cpu_s,omitempty"`
	CPUMissing             string  `json:"cpu_missing,omitempty"` // the first process whose CPU could not be read, and why

	// From the server's /metrics when Config.MetricsURL is set (Scraped 1 when read).
	Scraped         int64   `json:"scraped,omitempty"`
	SentAll         int64   `json:"sent_all,omitempty"`          // messages published, warm-up included
	Stored          int64   `json:"stored,omitempty"`            // storage writes (cluster: publishes, which store) from start to end of drain
	StoredPerSec    float64 `json:"stored_per_s,omitempty"`      // storage writes/s during the window
	StorageErrors   int64   `json:"storage_errors,omitempty"`    // failed (or dropped) storage writes
	PersistQueueMax int64   `json:"persist_queue_max,omitempty"` // deepest persistence queue sampled
	PersistQueueEnd int64   `json:"persist_queue_end,omitempty"` // queue depth after the drain
	StorageDegraded int64   `json:"storage_degraded,omitempty"`  // 1 if storage was degraded at any sample
}

func (r *Result) addStats(s *connStats) {
	r.Errors += s.errors
	if s.firstError != "" {
		r.noteFirst(s.firstError)
	}
	if s.disconnected {
		r.Disconnects++
		if s.readErr != nil {
			r.noteFirst("disconnected: " + s.readErr.Error())
		}
	}
}

func (r *Result) noteFirst(s string) {
	if r.FirstError == "" {
		r.FirstError = s
	}
}

// ReadRSS returns the resident set size of process pid in bytes, from /proc/<pid>/status.
func ReadRSS(pid int) (int64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, fmt.Errorf("reading the server's RSS: %w", err)
	}
	return parseVmRSS(b)
}

func parseVmRSS(status []byte) (int64, error) {
	sc := bufio.NewScanner(bytes.NewReader(status))
	for sc.Scan() {
		line := sc.Bytes()
		rest, ok := bytes.CutPrefix(line, []byte("VmRSS:"))
		if !ok {
			continue
		}
		f := bytes.Fields(rest)
		if len(f) != 2 || string(f[1]) != "kB" {
			return 0, fmt.Errorf("unexpected VmRSS line %q", line)
		}
		kb, err := strconv.ParseInt(string(f[0]), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("unexpected VmRSS line %q", line)
		}
		return kb * 1024, nil
	}
	return 0, errNoRSS
}

// WriteTable prints results as an aligned table, one row each. Columns that do not apply to a
// scenario show "-".
//
// A label column comes first when any result has a label; the command scenario's timeouts
// column, the storage columns (stored/s in the window, stored/published by the end of the
// drain, deepest persistence queue, storage errors) and the CPU columns appear only when some
// result has them. CPU columns: the servers' CPU seconds in the window (summed), each server's
// when there are several ("per node s", in the order of the pids), the summed server CPU per
// delivery and per message sent in microseconds, the generator's own CPU seconds, and Redis's
// when its pid was given.
func WriteTable(w io.Writer, results []Result) error {
	var labels, commands, storage, cpu, perNode, redis bool
	for _, r := range results {
		labels = labels || r.Label != ""
		commands = commands || r.Scenario == ScenarioCommand
		storage = storage || r.Scraped > 0
		cpu = cpu || r.CPUWindowS > 0
		perNode = perNode || len(r.ServerCPU) > 1
		redis = redis || r.RedisPID > 0
	}
	perNode = perNode && cpu
	redis = redis && cpu
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	if labels {
		fmt.Fprint(tw, "label\t")
	}
	fmt.Fprint(tw, "scenario\tparams\truns\tsent/s\tdeliv/s\tB/deliv\tp50 ms\tp99 ms\tp99.9 ms\tmax ms\tlost\tdup\tooo\terrors\tdisc\tconn/s\tRSS B/conn\t")
	if commands {
		fmt.Fprint(tw, "timeouts\t")
	}
	if storage {
		fmt.Fprint(tw, "stored/s\tstored %\tqueue max\tstore err\t")
	}
	if cpu {
		fmt.Fprint(tw, "srv CPU s\t")
		if perNode {
			fmt.Fprint(tw, "per node s\t")
		}
		fmt.Fprint(tw, "srv µs/deliv\tsrv µs/msg\tgen CPU s\t")
		if redis {
			fmt.Fprint(tw, "redis CPU s\t")
		}
	}
	fmt.Fprintln(tw)
	for _, r := range results {
		traffic := r.Scenario != ScenarioIdle
		rss := "-"
		if r.RSSAfterBytes > 0 {
			rss = fmt.Sprintf("%.0f", r.RSSPerConnBytes)
		}
		if labels {
			fmt.Fprintf(tw, "%s\t", r.Label)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\t%.0f\t%s\t",
			r.Scenario, r.Params, r.Runs,
			num(traffic, "%.0f", r.SentPerSec), num(traffic, "%.0f", r.DeliveredPerSec), num(r.BytesPerDelivery > 0, "%.0f", r.BytesPerDelivery),
			num(traffic, "%.2f", r.P50Ms), num(traffic, "%.2f", r.P99Ms), num(traffic, "%.2f", r.P999Ms), num(traffic, "%.2f", r.MaxMs),
			num(traffic, "%.0f", float64(r.Lost)), num(traffic, "%.0f", float64(r.Dup)), num(traffic, "%.0f", float64(r.OutOfOrder)),
			r.Errors, r.Disconnects+r.PublishErrors, r.ConnectPerSec, rss)
		if commands {
			fmt.Fprintf(tw, "%s\t", num(r.Scenario == ScenarioCommand, "%.0f", float64(r.Timeouts)))
		}
		if storage {
			has := r.Scraped > 0
			storesEvents := r.Scenario != ScenarioCommand // commands are not kept in history
			pct := 0.0
			if r.SentAll > 0 {
				pct = 100 * float64(r.Stored) / float64(r.SentAll)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t", num(has, "%.0f", r.StoredPerSec), num(has && storesEvents && r.SentAll > 0, "%.1f", pct),
				num(has, "%.0f", float64(r.PersistQueueMax)), num(has, "%.0f", float64(r.StorageErrors)))
		}
		if cpu {
			has := r.CPUWindowS > 0
			srv := num(has && len(r.ServerCPU) > 0, "%.2f", r.ServerCPUS)
			if has && len(r.ServerCPU) > 0 && !allRead(r.ServerCPU) {
				srv += "?" // a partial sum
			}
			fmt.Fprintf(tw, "%s\t", srv)
			if perNode {
				fmt.Fprintf(tw, "%s\t", perNodeCPU(has, r.ServerCPU))
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t", num(has && r.ServerCPUUsPerDelivery > 0, "%.2f", r.ServerCPUUsPerDelivery),
				num(has && r.ServerCPUUsPerMsg > 0, "%.2f", r.ServerCPUUsPerMsg), num(has && r.GenCPUS > 0, "%.2f", r.GenCPUS))
			if redis {
				fmt.Fprintf(tw, "%s\t", num(has && r.RedisPID > 0, "%.2f", r.RedisCPUS))
			}
		}
		fmt.Fprintln(tw)
	}
	return tw.Flush()
}

func allRead(ps []ProcCPU) bool {
	for _, p := range ps {
		if p.Missing != "" {
			return false
		}
	}
	return true
}

// perNodeCPU shows each server's CPU seconds, in pid order, as 0.81/0.40/0.41 ("?" for one that
// could not be read).
func perNodeCPU(has bool, ps []ProcCPU) string {
	if !has || len(ps) == 0 {
		return "-"
	}
	var b []byte
	for i, p := range ps {
		if i > 0 {
			b = append(b, '/')
		}
		if p.Missing != "" {
			b = append(b, '?')
		} else {
			b = strconv.AppendFloat(b, p.CPUS, 'f', 2, 64)
		}
	}
	return string(b)
}

func num(show bool, format string, v float64) string {
	if !show {
		return "-"
	}
	return fmt.Sprintf(format, v)
}

// ReadResults reads results written one JSON object per line (blank lines are skipped).
func ReadResults(r io.Reader) ([]Result, error) {
	var out []Result
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		var res Result
		if err := json.Unmarshal(line, &res); err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		out = append(out, res)
	}
	return out, sc.Err()
}

// Summarize groups results by label, scenario and params (in order of first appearance) and gives, for
// each group, the median of every numeric column taken separately: a median run is robust to one
// run disturbed by the other work on this shared machine. Runs says how many were combined.
func Summarize(results []Result) []Result {
	type key struct{ label, scenario, params string }
	var order []key
	groups := map[key][]Result{}
	for _, r := range results {
		k := key{r.Label, r.Scenario, r.Params}
		if _, ok := groups[k]; !ok {
			order = append(order, k)
		}
		groups[k] = append(groups[k], r)
	}
	out := make([]Result, 0, len(order))
	for _, k := range order {
		out = append(out, median(groups[k]))
	}
	return out
}

func median(rs []Result) Result {
	m := rs[0]
	mv := reflect.ValueOf(&m).Elem()
	for f := range mv.NumField() {
		field := mv.Field(f)
		switch field.Kind() {
		case reflect.Float64:
			vals := make([]float64, len(rs))
			for i := range rs {
				vals[i] = reflect.ValueOf(rs[i]).Field(f).Float()
			}
			slices.Sort(vals)
			n := len(vals)
			field.SetFloat((vals[(n-1)/2] + vals[n/2]) / 2)
		case reflect.Int, reflect.Int64:
			vals := make([]int64, len(rs))
			for i := range rs {
				vals[i] = reflect.ValueOf(rs[i]).Field(f).Int()
			}
			slices.Sort(vals)
			n := len(vals)
			field.SetInt((vals[(n-1)/2] + vals[n/2]) / 2)
		}
	}
	m.Runs = len(rs)
	for _, r := range rs {
		if r.FirstError != "" {
			m.FirstError = r.FirstError
			break
		}
	}
	for _, r := range rs {
		if r.CPUMissing != "" {
			m.CPUMissing = r.CPUMissing
			break
		}
	}
	m.ServerCPU = medianProcCPU(rs)
	if len(rs) > 1 {
		// A median of pids means nothing: keep only whether Redis was watched.
		m.RedisPID = 0
		if slices.ContainsFunc(rs, func(r Result) bool { return r.RedisPID > 0 }) {
			m.RedisPID = 1
		}
	}
	return m
}

// medianProcCPU gives, for each server position (node 0, 1, 2, ...), the median CPU over the
// runs that read it. Pids differ from run to run (fresh servers), so a summary of several runs
// keeps none. Runs that watched a different number of servers are left out.
func medianProcCPU(rs []Result) []ProcCPU {
	n := len(rs[0].ServerCPU)
	if n == 0 {
		return nil
	}
	if len(rs) == 1 {
		return slices.Clone(rs[0].ServerCPU)
	}
	out := make([]ProcCPU, n)
	for i := range out {
		var vals []float64
		for _, r := range rs {
			if len(r.ServerCPU) == n && r.ServerCPU[i].Missing == "" && r.CPUWindowS > 0 {
				vals = append(vals, r.ServerCPU[i].CPUS)
			}
		}
		if len(vals) == 0 {
			out[i].Missing = "not read in any run"
			continue
		}
		slices.Sort(vals)
		out[i].CPUS = (vals[(len(vals)-1)/2] + vals[len(vals)/2]) / 2
	}
	return out
}
