package redistest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/rueidis"
)

// clusterWait bounds every wait for cluster_state:ok. A fresh cluster is ok
// within a second or two; a restarted master waits out Redis's 2 s
// "writable delay" before it turns ok.
const clusterWait = 15 * time.Second

// Cluster is a Redis Cluster of masters only, one Server per shard, each on
// its own loopback port and temp dir. Kill and Start take every shard down
// and up together; a single shard can be killed through Nodes.
type Cluster struct {
	t     testing.TB
	nodes []*Server
}

// RunCluster starts shards redis-server processes in cluster mode, joins
// them with `redis-cli --cluster create` (no replicas, the slots split
// evenly) and waits until every node reports cluster_state:ok. extra are
// redis-server arguments given to every shard. Without redis-server or
// redis-cli the test is skipped, or fails under CI=true.
func RunCluster(t testing.TB, shards int, extra ...string) *Cluster {
	t.Helper()
	if shards < 1 {
		t.Fatalf("RunCluster: %d shards", shards)
	}
	cli := lookCLI(t)
	c := &Cluster{t: t}
	for range shards {
		s := New(t, extra...)
		s.extra = append(s.extra,
			"--cluster-enabled", "yes",
			// Relative to --dir, so each shard keeps its own; Start after
			// Kill reads it back and the node rejoins with its slots.
			"--cluster-config-file", fmt.Sprintf("nodes-%d.conf", s.Port),
			"--cluster-node-timeout", "2000",
			// The bus port defaults to port+10000, which may be taken or
			// beyond 65535 for a port from the ephemeral range: take a free one.
			"--cluster-port", strconv.Itoa(freePort(t)),
		)
		s.Start()
		c.nodes = append(c.nodes, s)
	}

	args := []string{"--cluster", "create"}
	args = append(args, c.Addrs()...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, cli, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	c.WaitOK(clusterWait)
	return c
}

// lookCLI finds redis-cli, skipping (or failing under CI=true) without it.
func lookCLI(t testing.TB) string {
	t.Helper()
	bin, err := exec.LookPath("redis-cli")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("redis-cli not found: run scripts/install-test-deps.sh")
		}
		t.Skip("redis-cli not found (scripts/install-test-deps.sh installs it)")
	}
	return bin
}

// Nodes are the shards, in the order of Addrs.
func (c *Cluster) Nodes() []*Server { return c.nodes }

// Addrs are the shards' host:port addresses.
func (c *Cluster) Addrs() []string {
	a := make([]string, len(c.nodes))
	for i, s := range c.nodes {
		a[i] = s.Addr()
	}
	return a
}

// URL is the redis:// URL of the first shard; a cluster client discovers
// the others from it.
func (c *Cluster) URL() string { return c.nodes[0].URL() }

// Kill SIGKILLs every shard and waits for each to exit. Their data is gone
// (no persistence), their cluster config files stay.
func (c *Cluster) Kill() {
	for _, s := range c.nodes {
		s.Kill()
	}
}

// Start starts every shard that is not running, on the same ports and
// config files, and waits until the cluster is ok again.
func (c *Cluster) Start() {
	c.t.Helper()
	for _, s := range c.nodes {
		if s.cmd == nil {
			s.Start()
		}
	}
	c.WaitOK(clusterWait)
}

// WaitOK waits up to d until every shard answers CLUSTER INFO with
// cluster_state:ok, and fails the test otherwise (with the last answers
// and each shard's log).
func (c *Cluster) WaitOK(d time.Duration) {
	c.t.Helper()
	deadline := time.Now().Add(d)
	for {
		var bad []string
		for _, s := range c.nodes {
			if st, err := s.clusterState(); st != "ok" {
				bad = append(bad, fmt.Sprintf("%s: state %q, err %v", s.Addr(), st, err))
			}
		}
		if len(bad) == 0 {
			return
		}
		if time.Now().After(deadline) {
			var logs strings.Builder
			for _, s := range c.nodes {
				b, _ := os.ReadFile(filepath.Join(s.dir, "redis.log"))
				fmt.Fprintf(&logs, "--- %s redis.log:\n%s\n", s.Addr(), b)
			}
			c.t.Fatalf("redis cluster not ok within %v:\n%s\n%s", d, strings.Join(bad, "\n"), logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Client returns a rueidis cluster client on every shard, closed at cleanup.
func (c *Cluster) Client() rueidis.Client {
	c.t.Helper()
	rc, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: c.Addrs(), DisableCache: true})
	if err != nil {
		c.t.Fatalf("redis cluster test client: %v", err)
	}
	c.t.Cleanup(rc.Close)
	return rc
}

// clusterState is the cluster_state field of the server's CLUSTER INFO.
func (s *Server) clusterState() (string, error) {
	info, err := s.command("CLUSTER INFO")
	if err != nil {
		return "", err
	}
	for line := range strings.SplitSeq(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "cluster_state:"); ok {
			return v, nil
		}
	}
	return "", errors.New("no cluster_state in CLUSTER INFO")
}

// command sends one inline command and returns a status, integer or bulk
// string reply as text (an error reply as an error), all within one second.
func (s *Server) command(cmd string) (string, error) {
	c, err := net.DialTimeout("tcp", s.Addr(), 200*time.Millisecond)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte(cmd + "\r\n")); err != nil {
		return "", err
	}
	r := bufio.NewReader(c)
	line, err := r.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimRight(line, "\r\n")
	switch {
	case strings.HasPrefix(line, "+"), strings.HasPrefix(line, ":"):
		return line[1:], nil
	case strings.HasPrefix(line, "-"):
		return "", errors.New(line[1:])
	case strings.HasPrefix(line, "$"):
		n, err := strconv.Atoi(line[1:])
		if err != nil || n < 0 || n > 1<<20 {
			return "", fmt.Errorf("bad bulk length %q", line)
		}
		b := make([]byte, n+2) // payload and CRLF
		if _, err := io.ReadFull(r, b); err != nil {
			return "", err
		}
		return string(b[:n]), nil
	}
	return "", fmt.Errorf("unexpected reply %q", line)
}
