package load

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"time"
)

// CPU accounting: on two shared cores, latency alone cannot say whether a change made the server
// cheaper or just got more of the machine. Every run therefore reads the CPU time its servers
// (and the generator itself, and Redis when there is one) spent during the measured window, from
// /proc/<pid>/stat at the window's start and end, and reports the servers' CPU per delivery.

// ProcCPU is the CPU time one process spent in the measured window.
type ProcCPU struct {
	PID  int     `json:"pid"`
	CPUS float64 `json:"cpu_s"` // user + system seconds in the window (0 when missing)
	// Missing says why the process's CPU could not be read (it exited, no /proc, ...); empty
	// when it was read at both ends of the window.
	Missing string `json:"missing,omitempty"`
}

// atClkTck is AT_CLKTCK in the ELF auxiliary vector: what sysconf(_SC_CLK_TCK) returns.
const atClkTck = 17

// defaultClockTicks is USER_HZ on every Linux architecture Go runs on.
const defaultClockTicks = 100

var clockTicks = sync.OnceValue(func() int64 {
	b, err := os.ReadFile("/proc/self/auxv")
	if err != nil {
		return defaultClockTicks
	}
	if hz, ok := parseAuxv(b, strconv.IntSize/8, atClkTck); ok && hz > 0 {
		return int64(hz)
	}
	return defaultClockTicks
})

// parseAuxv returns the value of entry typ in an auxiliary vector: pairs of native-endian words
// of wordSize bytes (type, value), ended by type 0.
func parseAuxv(b []byte, wordSize int, typ uint64) (uint64, bool) {
	word := func(p []byte) uint64 {
		if wordSize == 4 {
			return uint64(binary.NativeEndian.Uint32(p))
		}
		return binary.NativeEndian.Uint64(p)
	}
	for len(b) >= 2*wordSize {
		t, v := word(b), word(b[wordSize:])
		if t == 0 {
			break
		}
		if t == typ {
			return v, true
		}
		b = b[2*wordSize:]
	}
	return 0, false
}

// ReadProcCPUTicks returns utime+stime of process pid in clock ticks, from /proc/<pid>/stat.
func ReadProcCPUTicks(pid int) (uint64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	return parseProcStatCPU(b)
}

// parseProcStatCPU reads utime and stime (fields 14 and 15, proc(5)) from a /proc/<pid>/stat
// line. The command name (field 2) is in parentheses and may itself hold spaces and parentheses,
// so fields are counted from the last ')'.
func parseProcStatCPU(stat []byte) (uint64, error) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("unexpected /proc stat line %.60q", stat)
	}
	f := bytes.Fields(stat[i+1:])
	// f[0] is field 3 (state), so field n is f[n-3].
	if len(f) < 13 {
		return 0, fmt.Errorf("short /proc stat line %.60q", stat)
	}
	utime, err1 := strconv.ParseUint(string(f[14-3]), 10, 64)
	stime, err2 := strconv.ParseUint(string(f[15-3]), 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("bad utime/stime in /proc stat line: %w", err)
	}
	return utime + stime, nil
}

func ticksToSeconds(t uint64) float64 { return float64(t) / float64(clockTicks()) }

// cpuSample is one reading of every watched process.
type cpuSample struct {
	at    time.Time
	ticks []uint64 // per pid (servers, then Redis when watched)
	errs  []error
	self  time.Duration // the generator's own user + system time
	selfK bool
}

func takeCPUSample(pids []int) cpuSample {
	s := cpuSample{ticks: make([]uint64, len(pids)), errs: make([]error, len(pids))}
	for i, pid := range pids {
		s.ticks[i], s.errs[i] = ReadProcCPUTicks(pid)
	}
	s.self, s.selfK = selfCPU()
	s.at = time.Now()
	return s
}

// cpuWatch reads the CPU of the servers, Redis and the generator at the start and at the end of
// the measured window.
type cpuWatch struct {
	servers  []int
	redis    int // 0: none
	done     chan struct{}
	from, to cpuSample
	ok       bool // both samples taken
}

// startCPUWatch samples at from and at to (both in the future or now) on its own goroutine.
func startCPUWatch(ctx context.Context, servers []int, redis int, from, to time.Time) *cpuWatch {
	w := &cpuWatch{servers: servers, redis: redis, done: make(chan struct{})}
	pids := servers
	if redis > 0 {
		pids = append(append([]int(nil), servers...), redis)
	}
	go func() {
		defer close(w.done)
		if !sleepUntil(ctx, from) {
			return
		}
		w.from = takeCPUSample(pids)
		if !sleepUntil(ctx, to) {
			return
		}
		w.to = takeCPUSample(pids)
		w.ok = true
	}()
	return w
}

func sleepUntil(ctx context.Context, t time.Time) bool {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err() == nil
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// finish waits for the second sample and fills res's CPU fields. deliveries and messages are
// what the window carried (Result.Delivered and Result.Sent); zero leaves the per-delivery
// (per-message) figure at zero.
func (w *cpuWatch) finish(res *Result, deliveries, messages int64) {
	<-w.done
	if !w.ok {
		return
	}
	res.CPUWindowS = w.to.at.Sub(w.from.at).Seconds()
	if w.from.selfK && w.to.selfK {
		res.GenCPUS = (w.to.self - w.from.self).Seconds()
	}
	read := func(i, pid int) ProcCPU {
		p := ProcCPU{PID: pid}
		switch err := errors.Join(w.from.errs[i], w.to.errs[i]); {
		case err != nil:
			p.Missing = err.Error()
		case w.to.ticks[i] < w.from.ticks[i]:
			p.Missing = "CPU time went backwards (pid reused?)"
		default:
			p.CPUS = ticksToSeconds(w.to.ticks[i] - w.from.ticks[i])
		}
		return p
	}
	complete := true
	for i, pid := range w.servers {
		p := read(i, pid)
		res.ServerCPU = append(res.ServerCPU, p)
		res.ServerCPUS += p.CPUS
		if p.Missing != "" {
			complete = false
			res.noteCPUMissing(fmt.Sprintf("server pid %d: %s", pid, p.Missing))
		}
	}
	if w.redis > 0 {
		p := read(len(w.servers), w.redis)
		res.RedisPID = w.redis
		res.RedisCPUS = p.CPUS
		if p.Missing != "" {
			res.noteCPUMissing(fmt.Sprintf("redis pid %d: %s", w.redis, p.Missing))
		}
	}
	// A partial sum would understate the cost: no per-delivery figure then.
	if complete && len(w.servers) > 0 {
		if deliveries > 0 {
			res.ServerCPUUsPerDelivery = res.ServerCPUS * 1e6 / float64(deliveries)
		}
		if messages > 0 {
			res.ServerCPUUsPerMsg = res.ServerCPUS * 1e6 / float64(messages)
		}
	}
}

func (r *Result) noteCPUMissing(s string) {
	if r.CPUMissing == "" {
		r.CPUMissing = s
	}
}
