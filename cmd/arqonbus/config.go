package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/arqonbus/arqonbus/engine"
	"github.com/arqonbus/arqonbus/ops"
)

// option is one setting, given as a flag, an ARQONBUS_* variable, or left at
// its default, in that order of precedence.
type option struct {
	name  string // flag name; the variable is ARQONBUS_ + upper(name with - as _)
	def   string
	usage string
	parse func(string) error
}

func (o option) env() string {
	return "ARQONBUS_" + strings.ToUpper(strings.ReplaceAll(o.name, "-", "_"))
}

// config is the parsed configuration of the binary.
type config struct {
	Host              string
	Port              int
	TelemetryPort     int
	HTTPPort          int
	NodeID            string
	Loops             int
	MaxConnections    int
	MaxMessageSize    int
	MaxOutboundBytes  int
	MaxRequestedBytes int
	MaxLoopInboxBytes int
	WriteCoalesce     time.Duration
	MaxViolations     int
	HandshakeTimeout  time.Duration
	PingInterval      time.Duration
	IdleTimeout       time.Duration
	FrameTimeout      time.Duration
	ShutdownTimeout   time.Duration
	ReplaceDuplicate  bool
	AutoCreate        bool
	AutoJoin          string
	BootstrapChannels string
	Storage           string
	HistorySize       int
	HistoryChanBytes  int
	HistoryMaxBytes   int
	MaxChannels       int
	ChannelIdleTTL    time.Duration
	RedisURL          string
	Persist           string
	PersistBuffer     int
	RedisKeyPrefix    string
	Cluster           string
	DrainGrace        time.Duration
	ClusterHeartbeat  time.Duration
	ClusterNodeTTL    time.Duration
	JWTSecret         string
	ResumeSecret      string
	AdminToken        string
	AllowedOrigins    string
	RateLimit         float64
	RateBurst         float64
	CommandRate       float64
	CommandBurst      float64
	MaxSubscriptions  int
	MaxPending        int
	CommandTimeout    time.Duration

	TelemetryMaxConnections int
	TelemetrySnapshotEvery  time.Duration
	LogLevel                string
	LogFormat               string

	// Derived from the process's file limit, for the start-up log.
	FileLimit           int // RLIMIT_NOFILE
	MaxConnectionsAsked int // a --max-connections the file limit could not hold (0: none)
}

func (c *config) options() []option {
	return []option{
		{"host", "127.0.0.1", "address the client WebSocket listens on", str(&c.Host)},
		{"port", "9100", "client WebSocket port", port(&c.Port)},
		{"telemetry-port", "9101", "telemetry WebSocket port", port(&c.TelemetryPort)},
		{"http-port", "8080", "HTTP port (health, metrics, dashboard)", port(&c.HTTPPort)},
		{"node-id", "", "this node's id (default: host name and a random suffix)", str(&c.NodeID)},
		{"loops", "0", "event loops (0: one per CPU but one, at least one)", intRange(&c.Loops, 0, 1024)},
		{"max-connections", "0", "client connections at once (0, or more than the file limit holds: the file limit less what the node needs besides)", intRange(&c.MaxConnections, 0, 1<<24)},
		{"max-message-size", "1048576", "largest message in bytes (close 1009 beyond)", intRange(&c.MaxMessageSize, 256, 64<<20)},
		{"max-outbound-bytes", "4194304", "unsent bytes per connection before a slow consumer is closed", intRange(&c.MaxOutboundBytes, 64<<10, 1<<30)},
		{"max-requested-bytes", "0", "unsent bytes of replays and history answers a client asked for, allowed on top of --max-outbound-bytes while it reads them (0: four times --max-outbound-bytes)", intRange(&c.MaxRequestedBytes, 0, 1<<32)},
		{"max-loop-inbox-bytes", "67108864", "frames queued for one event loop before new ones are dropped (their recipients are closed with 1013 and resume with since)", intRange(&c.MaxLoopInboxBytes, 1<<20, 1<<36)},
		{"max-violations", "10", "protocol violations allowed per minute before close 1008", intRange(&c.MaxViolations, 1, 1<<20)},
		{"handshake-timeout", "10s", "time to complete the WebSocket upgrade", duration(&c.HandshakeTimeout)},
		{"ping-interval", "25s", "silence after which the server pings a client", duration(&c.PingInterval)},
		{"idle-timeout", "60s", "silence after which a client is disconnected", duration(&c.IdleTimeout)},
		{"write-coalesce", "1ms", "how long after a write a connection's next fan-out frames may wait, to leave in one system call (three times that for a connection getting two frames or more per span; 0: write at once); a connection quiet for a span is written at once", nonNegativeDuration(&c.WriteCoalesce)},
		{"frame-timeout", "30s", "time from a frame's (or fragmented message's) first byte to its last before close 1008", duration(&c.FrameTimeout)},
		{"shutdown-timeout", "10s", "deadline for a graceful shutdown", duration(&c.ShutdownTimeout)},
		{"replace-duplicate", "false", "a new connection with a live client id replaces the old one", boolean(&c.ReplaceDuplicate)},
		{"auto-create", "true", "join_channel creates missing channels", boolean(&c.AutoCreate)},
		{"auto-join", "", "room:channel list every new connection joins", str(&c.AutoJoin)},
		{"bootstrap-channels", defaultBootstrap, "room:channel list created at start, never deletable", str(&c.BootstrapChannels)},
		{"storage", "memory", "history store: memory or redis", oneOf(&c.Storage, "memory", "redis")},
		{"history-size", "500", "messages kept per channel", intRange(&c.HistorySize, 1, 1<<20)},
		{"history-channel-bytes", "4194304", "bytes of history kept in memory per channel (0: no bound; the newest message is kept whatever its size)", intRange(&c.HistoryChanBytes, 0, 1<<40)},
		{"history-max-bytes", "268435456", "bytes of history kept in memory for all channels together; beyond, the channels written least recently lose their oldest messages first (0: no bound)", intRange(&c.HistoryMaxBytes, 0, 1<<40)},
		{"max-channels", "10000", "channels at once; joins and create_channel of a new channel beyond are refused with RATE_LIMITED (0: no bound)", intRange(&c.MaxChannels, 0, 1<<30)},
		{"channel-idle-ttl", "10m", "a channel made by a join, with no members and no messages for this long, is removed with its in-memory history (0s: never)", nonNegativeDuration(&c.ChannelIdleTTL)},
		{"redis-url", "redis://127.0.0.1:6379", "Redis for storage=redis", redisURL(&c.RedisURL)},
		{"persist", "async", "async: acks once routed; sync: an ack waits until Redis has the event", oneOf(&c.Persist, "async", "sync")},
		{"redis-key-prefix", "arqonbus", "prefix of every Redis key (nodes sharing one Redis without clustering need their own)", keyPrefix(&c.RedisKeyPrefix)},
		{"cluster", "auto", "form one bus with the other nodes on the same Redis and key prefix: auto (with storage=redis), true or false", oneOf(&c.Cluster, "auto", "true", "false")},
		{"cluster-heartbeat", "500ms", "how often a node tells the others (through Redis) that it is alive", duration(&c.ClusterHeartbeat)},
		{"cluster-node-ttl", "2s", "a node silent this long is dead: its client ids are free, commands waiting on it fail", duration(&c.ClusterNodeTTL)},
		{"drain-grace", "0s", "on SIGTERM, how long /ready says 503 while the node keeps serving, before it closes its clients (give a load balancer time to notice)", nonNegativeDuration(&c.DrainGrace)},
		{"persist-buffer", "100000", "writes kept in memory while Redis is unreachable (oldest dropped beyond)", intRange(&c.PersistBuffer, 1, 1<<26)},
		{"jwt-secret", "", "HS256 secret: when set, every connection needs a valid JWT (token= or Authorization: Bearer)", str(&c.JWTSecret)},
		{"resume-secret", "", "keys the resume tokens that let a reconnecting client take over its own id (default: derived from jwt-secret, or one random key shared through Redis in a cluster, else random per process)", str(&c.ResumeSecret)},
		{"admin-token", "", "without JWT, connecting with admin_token=<this> grants admin", str(&c.AdminToken)},
		{"allowed-origins", "", "comma-separated browser origins allowed to connect (empty: any)", str(&c.AllowedOrigins)},
		{"rate-limit", "2000", "messages per second per client (0: unlimited)", float(&c.RateLimit)},
		{"rate-burst", "0", "message burst per client (0: twice the rate)", float(&c.RateBurst)},
		{"command-rate", "100", "commands per second per client (0: unlimited)", float(&c.CommandRate)},
		{"command-burst", "0", "command burst per client (0: twice the rate)", float(&c.CommandBurst)},
		{"max-subscriptions", "200", "channels one client may join", intRange(&c.MaxSubscriptions, 1, 1<<20)},
		{"max-pending-commands", "100", "commands one client may have in flight to service handlers", intRange(&c.MaxPending, 1, 1<<20)},
		{"command-timeout", "5s", "time a service handler has to answer a command", duration(&c.CommandTimeout)},
		{"telemetry-max-connections", "100", "telemetry WebSocket clients at once (more are closed with 1013)", intRange(&c.TelemetryMaxConnections, 1, 1<<16)},
		{"telemetry-snapshot-interval", "5s", "period of the metrics_snapshot telemetry event", duration(&c.TelemetrySnapshotEvery)},
		{"log-level", "info", "debug, info, warn or error", oneOf(&c.LogLevel, "debug", "info", "warn", "error")},
		{"log-format", "text", "text or json", oneOf(&c.LogFormat, "text", "json")},
	}
}

// errHelp is returned when --help was asked for.
var errHelp = flag.ErrHelp

// parseConfig reads flags, then the environment, then defaults. An error
// names the option and the value that was refused.
func parseConfig(args []string, getenv func(string) string, out io.Writer) (*config, error) {
	c := &config{}
	opts := c.options()
	fs := flag.NewFlagSet("arqonbus", flag.ContinueOnError)
	fs.SetOutput(out)
	values := make(map[string]*string, len(opts))
	for _, o := range opts {
		values[o.name] = fs.String(o.name, o.def, fmt.Sprintf("%s (env %s)", o.usage, o.env()))
	}
	fs.Usage = func() {
		fmt.Fprintf(out, "arqonbus: a WebSocket message bus.\n\nUsage: arqonbus [flags]\n\nEvery flag can also be set with its ARQONBUS_* variable; flags win.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q (see --help)", fs.Arg(0))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	source := map[string]string{} // option -> where its value came from, for errors
	for _, o := range opts {
		v, src := *values[o.name], "--"+o.name
		if !set[o.name] {
			if ev, ok := lookup(getenv, o.env()); ok {
				v, src = ev, o.env()
			}
		}
		source[o.name] = fmt.Sprintf("%s=%q", src, v)
		if err := o.parse(v); err != nil {
			return nil, fmt.Errorf("invalid %s: %v", source[o.name], err)
		}
	}
	if c.ClusterNodeTTL < 2*c.ClusterHeartbeat {
		return nil, fmt.Errorf("invalid %s: must be at least twice the heartbeat (%s)", source["cluster-node-ttl"], source["cluster-heartbeat"])
	}
	if c.Cluster == "true" && c.Storage != "redis" {
		return nil, fmt.Errorf("invalid %s: nodes form one bus through Redis, and storage is %s (set it to redis)", source["cluster"], c.Storage)
	}
	if c.MaxMessageSize > c.MaxOutboundBytes {
		// A message the bus accepts must fit a recipient's backlog, or relaying
		// it would cut every recipient as a slow consumer.
		return nil, fmt.Errorf("invalid %s: must not exceed %s", source["max-message-size"], source["max-outbound-bytes"])
	}
	if c.MaxRequestedBytes == 0 {
		c.MaxRequestedBytes = 4 * c.MaxOutboundBytes
	}
	c.FileLimit = fileLimit()
	fit, err := connectionBudget(c.FileLimit, c.Loops, c.TelemetryMaxConnections)
	if err != nil {
		return nil, err
	}
	switch {
	case c.MaxConnections == 0:
		c.MaxConnections = fit
	case c.MaxConnections > fit:
		c.MaxConnectionsAsked, c.MaxConnections = c.MaxConnections, fit
	}
	if c.RateBurst == 0 {
		c.RateBurst = 2 * c.RateLimit
	}
	if c.CommandBurst == 0 {
		c.CommandBurst = 2 * c.CommandRate
	}
	return c, nil
}

func lookup(getenv func(string) string, name string) (string, bool) {
	v := getenv(name)
	return v, v != ""
}

// The descriptors a node needs besides its client connections (see
// connectionBudget).
const (
	// fdMisc: standard streams, the runtime's poller and pipes, the three
	// listeners, the Redis connections, /proc and static files.
	fdMisc = 64
	// fdAcceptBurst: connections accepted and not yet refused. Each event
	// loop accepts one and refuses it over the cap before the next (see
	// engine.Server.Run), and a refused one is closed at once.
	fdAcceptBurst = 16
	// fdPerLoop: each event loop's epoll and eventfd.
	fdPerLoop = 2
)

// fileLimit is the process's file limit (the Go runtime raised the soft
// limit to the hard one at start).
func fileLimit() int {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil || rl.Cur > 1<<30 {
		return 1 << 30
	}
	return int(rl.Cur)
}

// connectionBudget is how many client connections fit under a file limit of
// limit descriptors. The cap must hold below the limit: when accept runs out
// of descriptors, gnet stops the whole engine (every client is dropped and
// the node exits), and nothing in gnet lets it survive that. So the cap leaves
// room for the telemetry port's connections (its cap and the 64 it refuses
// with 1013), the HTTP server's (ops.MaxConnections), the event loops, a
// storm's accept burst and the rest.
func connectionBudget(limit, loops, telemetryMax int) (int, error) {
	if loops <= 0 {
		loops = engine.DefaultLoops()
	}
	reserve := fdMisc + fdAcceptBurst + fdPerLoop*(loops+1+2) + ops.MaxConnections + telemetryMax + 64
	if fit := limit - reserve; fit >= 16 {
		return fit, nil
	}
	return 0, fmt.Errorf("the file limit (%d descriptors) leaves no room for client connections: this configuration needs %d for itself "+
		"(raise the limit, e.g. ulimit -n, or lower --telemetry-max-connections or --loops)", limit, reserve)
}

func str(p *string) func(string) error {
	return func(v string) error { *p = v; return nil }
}

func port(p *int) func(string) error { return intRange(p, 1, 65535) }

func intRange(p *int, lo, hi int) func(string) error {
	return func(v string) error {
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil {
			return errors.New("not an integer")
		}
		if n < lo || n > hi {
			return fmt.Errorf("must be between %d and %d", lo, hi)
		}
		*p = n
		return nil
	}
}

func redisURL(p *string) func(string) error {
	return func(v string) error {
		u, err := url.Parse(v)
		if err != nil || (u.Scheme != "redis" && u.Scheme != "rediss") || u.Host == "" {
			return errors.New("not a redis:// or rediss:// URL with a host")
		}
		*p = v
		return nil
	}
}

func keyPrefix(p *string) func(string) error {
	return func(v string) error {
		if v == "" || len(v) > 64 || strings.ContainsAny(v, "{} \t\r\n") {
			return errors.New("must be 1 to 64 characters without braces or spaces")
		}
		*p = v
		return nil
	}
}

func float(p *float64) func(string) error {
	return func(v string) error {
		f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err != nil || f < 0 || f > 1e9 {
			return errors.New("not a number between 0 and 1e9")
		}
		*p = f
		return nil
	}
}

// splitList splits a comma-separated list, dropping blanks.
func splitList(s string) []string {
	var out []string
	for _, item := range strings.Split(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}

func duration(p *time.Duration) func(string) error {
	return func(v string) error {
		d, err := time.ParseDuration(strings.TrimSpace(v))
		if err != nil || d <= 0 {
			return errors.New("not a positive duration such as 500ms or 10s")
		}
		*p = d
		return nil
	}
}

func nonNegativeDuration(p *time.Duration) func(string) error {
	return func(v string) error {
		d, err := time.ParseDuration(strings.TrimSpace(v))
		if err != nil || d < 0 {
			return errors.New("not a duration such as 0s, 500ms or 10s")
		}
		*p = d
		return nil
	}
}

func boolean(p *bool) func(string) error {
	return func(v string) error {
		b, err := strconv.ParseBool(strings.TrimSpace(v))
		if err != nil {
			return errors.New("not true or false")
		}
		*p = b
		return nil
	}
}

func oneOf(p *string, allowed ...string) func(string) error {
	return func(v string) error {
		for _, a := range allowed {
			if v == a {
				*p = v
				return nil
			}
		}
		return fmt.Errorf("must be one of %s", strings.Join(allowed, ", "))
	}
}

func hostname() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		return "arqonbus"
	}
	return h
}

// clustered reports whether this node forms one bus with the others on its Redis.
func (c *config) clustered() bool {
	return c.Cluster == "true" || (c.Cluster == "auto" && c.Storage == "redis")
}
