package load

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// The storage side of a run is invisible to clients with asynchronous persistence: routing goes on
// whether Redis keeps up or not. With Config.MetricsURL the run reads the server's own counters, so
// that "sustained" can mean "stored as fast as published, with a bounded queue".

// Metric names read from the server's /metrics (unlabelled series only).
const (
	metricStorageWrites = "arqonbus_storage_writes_total"
	metricStorageErrors = "arqonbus_storage_errors_total"
	metricPersistDepth  = "arqonbus_persist_queue_depth"
	metricDegraded      = "arqonbus_storage_degraded"
	// In a cluster an event is stored by the same Lua call that publishes it (XADD and PUBLISH),
	// not by the persistence queue: those count as storage writes too. Absent on a standalone
	// node (and on older servers), so optional.
	metricClusterPublished = `arqonbus_cluster_events_total{way="published"}`
)

// optionalMetrics may be missing from /metrics; they then read as 0.
var optionalMetrics = map[string]bool{metricClusterPublished: true}

// storedCount is every event written to storage so far, by the persistence queue or by a
// cluster's publish script.
func storedCount(m map[string]float64) float64 {
	return m[metricStorageWrites] + m[metricClusterPublished]
}

// storeSettle bounds the wait for the persistence queue to empty after the drain.
const storeSettle = 2 * time.Second

// metricsSampleEvery is how often the persistence queue depth is sampled during the run.
const metricsSampleEvery = 250 * time.Millisecond

var metricsClient = &http.Client{Timeout: 2 * time.Second}

// scrape reads the unlabelled series named in want from a Prometheus text endpoint.
func scrape(ctx context.Context, url string, want ...string) (map[string]float64, error) {
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
		io.Copy(io.Discard, resp.Body)
		return nil, fmt.Errorf("%s: HTTP %d", url, resp.StatusCode)
	}
	return parseMetrics(resp.Body, want...)
}

// parseMetrics reads "name value" lines of the Prometheus text format for the series in want: a
// name, or a name with its labels exactly as the server writes them (name{label="value"}).
// Every series in want must be there, except optionalMetrics.
func parseMetrics(r io.Reader, want ...string) (map[string]float64, error) {
	out := make(map[string]float64, len(want))
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if len(line) == 0 || line[0] == '#' {
			continue
		}
		name, rest, ok := bytes.Cut(line, []byte(" "))
		if !ok {
			continue
		}
		for _, w := range want {
			if string(name) == w {
				f := bytes.Fields(rest)
				if len(f) == 0 {
					break
				}
				v, err := strconv.ParseFloat(string(f[0]), 64)
				if err != nil {
					return nil, fmt.Errorf("metric %s: %w", w, err)
				}
				out[w] = v
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	for _, w := range want {
		if _, ok := out[w]; !ok && !optionalMetrics[w] {
			return nil, fmt.Errorf("no %s in the server's metrics", w)
		}
	}
	return out, nil
}

// storageWatch follows the server's storage counters through one run.
type storageWatch struct {
	url string

	mu        sync.Mutex
	err       error   // the first failed scrape
	before    float64 // writes before publishing started
	winStart  float64 // writes at the window's start
	winStartT time.Time
	winEnd    float64 // writes at the window's end
	winEndT   time.Time
	errs0     float64
	depthMax  float64
	degraded  float64 // highest storage_degraded seen
	stop      chan struct{}
	done      chan struct{}
}

var storageMetrics = []string{metricStorageWrites, metricStorageErrors, metricPersistDepth, metricDegraded, metricClusterPublished}

// startStorageWatch reads the counters now and then samples until the window ends. Nil url: nil.
func startStorageWatch(ctx context.Context, url string, windowStart, end time.Time) *storageWatch {
	if url == "" {
		return nil
	}
	w := &storageWatch{url: url, stop: make(chan struct{}), done: make(chan struct{})}
	m, err := scrape(ctx, url, storageMetrics...)
	if err != nil {
		w.err = err
		close(w.done)
		return w
	}
	w.before, w.errs0 = storedCount(m), m[metricStorageErrors]
	go w.sample(ctx, windowStart, end)
	return w
}

func (w *storageWatch) sample(ctx context.Context, windowStart, end time.Time) {
	defer close(w.done)
	tick := time.NewTicker(metricsSampleEvery)
	defer tick.Stop()
	started := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.stop:
			return
		case <-tick.C:
		}
		now := time.Now()
		m, err := scrape(ctx, w.url, storageMetrics...)
		w.mu.Lock()
		if err != nil {
			if w.err == nil {
				w.err = err
			}
			w.mu.Unlock()
			continue
		}
		w.depthMax = max(w.depthMax, m[metricPersistDepth])
		w.degraded = max(w.degraded, m[metricDegraded])
		if !started && !now.Before(windowStart) {
			started = true
			w.winStart, w.winStartT = storedCount(m), now
		}
		if started && !now.After(end) {
			w.winEnd, w.winEndT = storedCount(m), now
		}
		w.mu.Unlock()
		if now.After(end) {
			return
		}
	}
}

// finish stops sampling, reads the counters once more (after the drain) and fills res.
// sentAll is every message published in the run, warm-up included.
func (w *storageWatch) finish(ctx context.Context, res *Result, sentAll int64) {
	if w == nil {
		return
	}
	select {
	case <-w.done:
	default:
		close(w.stop)
		<-w.done
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err == nil {
		// Deliveries may all be in while the last batches are still on their way to the store:
		// give the queue a moment to empty, so that "stored" counts what the store kept up with.
		var m map[string]float64
		var err error
		for deadline := time.Now().Add(storeSettle); ; time.Sleep(50 * time.Millisecond) {
			m, err = scrape(ctx, w.url, storageMetrics...)
			if err != nil || m[metricPersistDepth] == 0 || time.Now().After(deadline) {
				break
			}
		}
		if err != nil {
			w.err = err
		} else {
			res.Stored = int64(storedCount(m) - w.before)
			res.StorageErrors = int64(m[metricStorageErrors] - w.errs0)
			res.PersistQueueEnd = int64(m[metricPersistDepth])
			w.degraded = max(w.degraded, m[metricDegraded])
		}
	}
	if w.err != nil {
		res.noteFirst("metrics: " + w.err.Error())
		return
	}
	res.Scraped = 1
	res.SentAll = sentAll
	res.PersistQueueMax = int64(w.depthMax)
	res.StorageDegraded = int64(w.degraded)
	if d := w.winEndT.Sub(w.winStartT).Seconds(); d > 0 {
		res.StoredPerSec = (w.winEnd - w.winStart) / d
	}
}
