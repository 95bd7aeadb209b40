// Package load drives an ArqonBus server over real WebSocket connections and measures what a
// user would see: achieved send rate, delivered rate, end-to-end latency, loss, duplicates and
// ordering, and (for idle connections) the server's resident memory per connection.
//
// The generator shares the machine's two cores with the server it measures, so every hot path is
// kept cheap: frames are built by hand, events are recognised with a tiny byte scanner instead of
// a JSON decoder, and latencies go through a small per-subscriber buffer into shared histograms.
package load

import (
	"errors"
	"fmt"
	"net"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Scenario names accepted by Config.Scenario.
const (
	ScenarioFanout   = "fanout"
	ScenarioChannels = "channels"
	ScenarioIdle     = "idle"
	ScenarioCommand  = "command"
)

// EchoCommand is the service command the command scenario's handlers serve.
const EchoCommand = "bench_echo"

// MaxConnsPerProcess is the most connections one generator process opens. The machine allows
// 20,000 open files per process; the rest is headroom for the runtime, stdio and listeners.
// Beyond it, run several processes (each with its own -src-ips).
const MaxConnsPerProcess = 19500

// portsPerSourceIP is roughly how many ephemeral ports one source address offers here. Only
// matters once connections are bound to explicit source addresses.
const portsPerSourceIP = 20000

// Config describes one run. Zero values mean "the scenario's default" (see Normalize).
type Config struct {
	Addr     string // host:port of the server's client WebSocket
	Scenario string // fanout, channels, command or idle

	// SubAddrs are the addresses subscribers (and idle connections) connect to, round robin:
	// subscriber i goes to SubAddrs[i%len(SubAddrs)]; command handlers go to those after the
	// first. Publishers and requesters always use Addr. Empty means just Addr. With several nodes
	// forming one bus, this spreads the subscribers over the nodes while every event enters at one.
	SubAddrs []string

	Subs     int     // fanout: subscribers on the channel; channels: subscribers per channel (K)
	Pubs     int     // fanout: publishers; channels: publishers per channel
	Channels int     // channels: number of channels; idle: channels the connections spread over
	Rate     float64 // total messages (command: requests) per second over all publishers
	Conns    int     // idle: connections

	Handlers   int // command: clients serving bench_echo on the channel (default 1)
	Requesters int // command: clients sending bench_echo commands (default 10)

	Warmup   time.Duration // publishing before the measured window; its messages are not counted
	Duration time.Duration // the measured window
	Drain    time.Duration // longest wait after publishing stops for the last deliveries
	Hold     time.Duration // idle: how long connections are held (RSS is read at its end)

	// ServerPIDs are the server processes whose CPU time (/proc/<pid>/stat) is read at the start
	// and end of the measured window; idle runs also read their resident memory (VmRSS, summed).
	// ServerPID, when set, counts as one of them (Normalize puts it first).
	ServerPIDs []int
	ServerPID  int // one server pid (the older flag); 0: none
	// RedisPID is the Redis server's pid: its CPU in the window is reported on its own, not in
	// the servers' sum (0: none).
	RedisPID int

	// SrcIPs are the local addresses connections are bound to, round robin. Empty lets the
	// kernel choose, which is best on one address: connect() then shares ephemeral ports
	// across destinations instead of reserving one per bind.
	SrcIPs []net.IP

	// ReadLoops is how many event loops read the subscribers' sockets (0: half the CPUs, at
	// least one; see reactor).
	ReadLoops int
	// Pacers is how many goroutines send the publishers' schedules (0: half the CPUs, at least
	// one; see pace).
	Pacers int

	ConnectConcurrency int           // connections being set up at once
	ConnectTimeout     time.Duration // per connection: dial, upgrade, welcome and join

	Room string // room for all channels (default "perf")

	// MetricsURL, when set, is the server's Prometheus endpoint: the run then reads the storage
	// counters (writes, errors, persistence queue depth) around and during the window.
	MetricsURL string

	// Logf receives progress lines (nil: silent). It is called from the run's goroutine only.
	Logf func(format string, args ...any)
}

// Normalize fills defaults and checks the configuration, returning a copy.
func (c Config) Normalize() (Config, error) {
	if c.Addr == "" {
		c.Addr = "127.0.0.1:9100"
	}
	if c.Room == "" {
		c.Room = "perf"
	}
	if len(c.SubAddrs) == 0 {
		c.SubAddrs = []string{c.Addr}
	} else {
		c.SubAddrs = slices.Clone(c.SubAddrs)
	}
	for _, a := range c.SubAddrs {
		if _, _, err := net.SplitHostPort(a); err != nil {
			return c, fmt.Errorf("bad subscriber address %q: want host:port", a)
		}
	}
	if c.ServerPID < 0 || c.RedisPID < 0 || slices.ContainsFunc(c.ServerPIDs, func(p int) bool { return p < 0 }) {
		return c, errors.New("pids must not be negative")
	}
	pids := make([]int, 0, len(c.ServerPIDs)+1)
	for _, p := range append([]int{c.ServerPID}, c.ServerPIDs...) {
		if p > 0 && !slices.Contains(pids, p) {
			pids = append(pids, p)
		}
	}
	c.ServerPIDs = pids
	if c.Warmup < 0 || c.Duration < 0 || c.Drain < 0 || c.Hold < 0 {
		return c, errors.New("durations must not be negative")
	}
	if c.Duration == 0 {
		c.Duration = 10 * time.Second
	}
	if c.Warmup == 0 {
		c.Warmup = 2 * time.Second
	}
	if c.Drain == 0 {
		c.Drain = 2 * time.Second
	}
	if c.Hold == 0 {
		c.Hold = 3 * time.Second
	}
	if c.ConnectConcurrency <= 0 {
		c.ConnectConcurrency = 200
	}
	if c.ConnectTimeout <= 0 {
		c.ConnectTimeout = 10 * time.Second
	}
	switch c.Scenario {
	case ScenarioFanout:
		c.Subs = orDefault(c.Subs, 100)
		c.Pubs = orDefault(c.Pubs, 10)
		c.Channels = 1
		if c.Rate == 0 {
			c.Rate = 10000
		}
	case ScenarioChannels:
		c.Channels = orDefault(c.Channels, 1000)
		c.Subs = orDefault(c.Subs, 1)
		c.Pubs = orDefault(c.Pubs, 1)
		if c.Rate == 0 {
			c.Rate = 10000
		}
	case ScenarioIdle:
		c.Conns = orDefault(c.Conns, 10000)
		// Spread over channels of about 100 members: one huge channel would measure the
		// membership structure of a single channel rather than per-connection cost.
		c.Channels = orDefault(c.Channels, (c.Conns+99)/100)
		if c.Channels > c.Conns {
			c.Channels = c.Conns
		}
	case ScenarioCommand:
		c.Handlers = orDefault(c.Handlers, 1)
		c.Requesters = orDefault(c.Requesters, 10)
		c.Channels = 1
		if c.Rate == 0 {
			c.Rate = 1000
		}
	case "":
		return c, errors.New("no scenario: use fanout, channels, command or idle")
	default:
		return c, fmt.Errorf("unknown scenario %q: use fanout, channels, command or idle", c.Scenario)
	}
	if c.Subs < 0 || c.Pubs < 0 || c.Channels < 0 || c.Conns < 0 || c.Handlers < 0 || c.Requesters < 0 {
		return c, errors.New("counts must not be negative")
	}
	if c.Scenario == ScenarioCommand {
		if c.Rate <= 0 {
			return c, errors.New("-rate must be positive")
		}
		if c.Handlers == 0 || c.Requesters == 0 {
			return c, errors.New("-handlers and -requesters must be at least 1")
		}
	} else if c.Scenario != ScenarioIdle {
		if c.Rate < 0 {
			return c, errors.New("-rate must be positive")
		}
		if c.Subs == 0 || c.Pubs == 0 {
			return c, errors.New("-subs and -pubs must be at least 1")
		}
	}
	total := c.TotalConns()
	if total > MaxConnsPerProcess {
		return c, fmt.Errorf("%d connections asked of one process, but one process may open at most %d "+
			"(20,000 file descriptors per process on this machine): split the load over several "+
			"arqonbus-load processes, each with its own -src-ips", total, MaxConnsPerProcess)
	}
	if limit, ok := fdLimit(); ok && uint64(total)+100 > limit {
		return c, fmt.Errorf("%d connections need more file descriptors than this process may open (%d)",
			total, limit)
	}
	if c.SrcIPs == nil && total > portsPerSourceIP {
		// Unreachable while MaxConnsPerProcess is lower, but keeps "auto" meaning what it says.
		c.SrcIPs = AutoSrcIPs(total)
	}
	return c, nil
}

// TotalConns is the number of connections the run opens.
func (c Config) TotalConns() int {
	switch c.Scenario {
	case ScenarioIdle:
		return c.Conns
	case ScenarioFanout:
		return c.Subs + c.Pubs
	case ScenarioCommand:
		return c.Handlers + c.Requesters
	default:
		return c.Channels * (c.Subs + c.Pubs)
	}
}

// Params is a short description of the run's shape, used as its label in tables.
func (c Config) Params() string {
	switch c.Scenario {
	case ScenarioFanout:
		return fmt.Sprintf("subs=%d pubs=%d rate=%g", c.Subs, c.Pubs, c.Rate)
	case ScenarioChannels:
		return fmt.Sprintf("channels=%d pubs=%d k=%d rate=%g", c.Channels, c.Pubs, c.Subs, c.Rate)
	case ScenarioCommand:
		return fmt.Sprintf("handlers=%d requesters=%d rate=%g", c.Handlers, c.Requesters, c.Rate)
	default:
		return fmt.Sprintf("conns=%d channels=%d", c.Conns, c.Channels)
	}
}

// AutoSrcIPs returns 127.0.0.1..127.0.0.N with enough addresses for total connections.
func AutoSrcIPs(total int) []net.IP {
	n := (total + portsPerSourceIP - 1) / portsPerSourceIP
	n = max(n, 1)
	ips := make([]net.IP, n)
	for i := range ips {
		ips[i] = net.IPv4(127, 0, 0, byte(i+1))
	}
	return ips
}

// ParseSrcIPs parses a comma-separated list of IPv4 loopback addresses. "" and "auto" give nil
// (let the kernel choose, or AutoSrcIPs when one address is not enough).
func ParseSrcIPs(s string) ([]net.IP, error) {
	s = strings.TrimSpace(s)
	if s == "" || s == "auto" {
		return nil, nil
	}
	var ips []net.IP
	for _, part := range strings.Split(s, ",") {
		ip := net.ParseIP(strings.TrimSpace(part))
		if ip == nil || ip.To4() == nil {
			return nil, fmt.Errorf("bad source address %q: want IPv4 like 127.0.0.2", part)
		}
		if !ip.IsLoopback() {
			return nil, fmt.Errorf("source address %s is not a loopback address (127.0.0.x)", ip)
		}
		ips = append(ips, ip.To4())
	}
	return ips, nil
}

// ParseAddrs parses a comma-separated list of host:port addresses ("" gives nil).
func ParseAddrs(s string) ([]string, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, nil
	}
	var addrs []string
	for _, part := range strings.Split(s, ",") {
		a := strings.TrimSpace(part)
		if _, port, err := net.SplitHostPort(a); err != nil || port == "" {
			return nil, fmt.Errorf("bad address %q: want host:port", part)
		}
		addrs = append(addrs, a)
	}
	return addrs, nil
}

// ParsePIDs parses a comma-separated list of process ids ("" gives nil).
func ParsePIDs(s string) ([]int, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, nil
	}
	var pids []int
	for _, part := range strings.Split(s, ",") {
		p, err := strconv.Atoi(strings.TrimSpace(part))
		if err != nil || p <= 0 {
			return nil, fmt.Errorf("bad pid %q: want a positive number", part)
		}
		pids = append(pids, p)
	}
	return pids, nil
}

// handlerAddr is the address command handler i connects to: with several subscriber addresses, one of
// those after the first (in a cluster, off the requesters' node, so that commands cross nodes).
func (c Config) handlerAddr(i int) string {
	if len(c.SubAddrs) < 2 {
		return c.subAddr(i)
	}
	return c.SubAddrs[1+i%(len(c.SubAddrs)-1)]
}

// subAddr is the address subscriber i connects to.
func (c Config) subAddr(i int) string {
	if len(c.SubAddrs) == 0 {
		return c.Addr
	}
	return c.SubAddrs[i%len(c.SubAddrs)]
}

func orDefault(v, def int) int {
	if v == 0 {
		return def
	}
	return v
}

// halfCPUs is the default count of reactor loops and of pacers: half the CPUs, at least one, so
// that reading and sending leave the server the rest of the machine.
func halfCPUs() int { return max(1, runtime.NumCPU()/2) }
