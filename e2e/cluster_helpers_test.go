package e2e

// Helpers for the tests of several nodes as one bus (issue 8): nodes sharing
// a Redis, cluster-wide status, and a subscriber that follows a channel
// across dropped connections the way the SDKs do (reconnect, claim the same
// id, join with since = the last position seen).

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/arqonbus/arqonbus/client"
)

// clusterEnv is the environment of a node of the bus on Redis at url.
func clusterEnv(url, nodeID string, extra ...string) []string {
	return append([]string{"ARQONBUS_STORAGE=redis", "ARQONBUS_REDIS_URL=" + url, "ARQONBUS_NODE_ID=" + nodeID,
		"ARQONBUS_COMMAND_TIMEOUT=2s"}, extra...)
}

// startNodes starts n nodes on Redis at url (the quickstart's Scenario 5
// settings, with nothing said about clustering) and waits until every node
// sees all n.
func startNodes(t *testing.T, url string, n int, extra ...string) []*server {
	t.Helper()
	nodes := make([]*server, n)
	for i := range nodes {
		nodes[i] = startServer(t, clusterEnv(url, "node"+strconv.Itoa(i), extra...)...)
	}
	for _, s := range nodes {
		waitNodes(t, s, n)
	}
	return nodes
}

// clusterStatus is what status says about the cluster.
type clusterStatus struct {
	NodeID       string `json:"node_id"`
	ClientsTotal int    `json:"clients_total"`
	Nodes        []struct {
		NodeID  string `json:"node_id"`
		Clients int    `json:"clients"`
		Self    bool   `json:"self"`
	} `json:"nodes"`
	Cluster *struct {
		Reachable       bool   `json:"reachable"`
		EventsPublished uint64 `json:"events_published"`
		EventsReceived  uint64 `json:"events_received"`
		LocalOnly       uint64 `json:"events_local_only"`
		Uncertain       uint64 `json:"events_uncertain"`
	} `json:"cluster"`
}

func clusterStatusOf(t testing.TB, c *client.Conn) clusterStatus {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	env, err := c.Command(ctx, "science", "general", "status", nil)
	if err != nil {
		t.Fatalf("status: %v", err)
	}
	var p struct {
		Result clusterStatus `json:"result"`
	}
	if err := json.Unmarshal(env.Payload, &p); err != nil {
		t.Fatalf("status result: %v: %s", err, env.Payload)
	}
	return p.Result
}

// waitNodes waits until s's status lists n live nodes and events cross nodes.
func waitNodes(t *testing.T, s *server, n int) {
	t.Helper()
	probe := dial(t, s, client.WithClientID(uniqueName("probe")))
	defer probe.Close()
	deadline := time.Now().Add(15 * time.Second)
	for {
		st := clusterStatusOf(t, probe)
		if len(st.Nodes) == n && st.Cluster != nil && st.Cluster.Reachable {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("node on port %d sees %d nodes (cluster %+v), want %d", s.Port, len(st.Nodes), st.Cluster, n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// resumer follows room:channel as client id across dropped connections: it
// reconnects to url (retrying while the id is still held by a dead node),
// joins with since = the last position it saw, and records every event's
// payload.n in arrival order.
type resumer struct {
	url, id, room, channel string

	mu         sync.Mutex
	seqs       []int
	positions  []string
	last       string
	nodes      []string // the node of each connection, in order
	conn       *client.Conn
	joined     chan struct{} // closed once the first join succeeded
	joinedOnce sync.Once
	problems   []string
}

func newResumer(url, id, room, channel string) *resumer {
	return &resumer{url: url, id: id, room: room, channel: channel, joined: make(chan struct{})}
}

func (r *resumer) note(format string, args ...any) {
	r.mu.Lock()
	r.problems = append(r.problems, fmt.Sprintf(format, args...))
	r.mu.Unlock()
}

// run follows the channel until want events arrived or ctx ends.
func (r *resumer) run(ctx context.Context, want int) {
	for ctx.Err() == nil && r.count() < want {
		dctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		c, err := client.Dial(dctx, r.url, client.WithClientID(r.id))
		cancel()
		if err != nil {
			time.Sleep(100 * time.Millisecond) // the node holding the id may be dead and not yet seen as such
			continue
		}
		var node string
		c.Welcome().PayloadField("node_id", &node)
		params := map[string]any{}
		r.mu.Lock()
		if r.last != "" {
			params["since"] = r.last
		}
		r.conn = c
		r.nodes = append(r.nodes, node)
		r.mu.Unlock()
		jctx, jcancel := context.WithTimeout(ctx, 5*time.Second)
		env, err := c.Command(jctx, r.room, r.channel, "join_channel", params)
		jcancel()
		if err != nil {
			c.Abort()
			time.Sleep(100 * time.Millisecond)
			continue
		}
		var res struct {
			Result struct {
				Replay *struct {
					Complete bool `json:"complete"`
				} `json:"replay"`
			} `json:"result"`
		}
		_ = json.Unmarshal(env.Payload, &res)
		if rp := res.Result.Replay; rp != nil && !rp.Complete {
			r.note("join since %v on %s: replay incomplete", params["since"], node)
		}
		r.joinedOnce.Do(func() { close(r.joined) })
		for r.count() < want {
			ev, err := nextReal(ctx, c)
			if err != nil {
				break // dropped: reconnect
			}
			if ev.Type != "event" {
				continue
			}
			m := metaOf(ev)
			r.mu.Lock()
			if r.last != "" && !posLess(r.last, m.Position) {
				r.problems = append(r.problems, fmt.Sprintf("position %s after %s", m.Position, r.last))
			}
			r.seqs = append(r.seqs, seqOf(ev))
			r.positions = append(r.positions, m.Position)
			r.last = m.Position
			r.mu.Unlock()
		}
		c.Abort()
	}
}

func (r *resumer) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.seqs)
}

// check reports gaps, duplicates and disorder against 0..want-1.
func (r *resumer) check(t *testing.T, want int) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	gaps, dups := 0, 0
	seen := map[int]int{}
	for i, n := range r.seqs {
		seen[n]++
		if i > 0 && n != r.seqs[i-1]+1 {
			if n <= r.seqs[i-1] {
				dups++
			} else {
				gaps += n - r.seqs[i-1] - 1
			}
		}
	}
	if len(r.seqs) > 0 && r.seqs[0] != 0 {
		gaps += r.seqs[0]
	}
	t.Logf("%s: %d events over connections to %v: %d gaps, %d duplicates", r.id, len(r.seqs), r.nodes, gaps, dups)
	if len(r.seqs) != want || gaps != 0 || dups != 0 {
		t.Errorf("%s: got %d events, want %d; %d missing, %d duplicated (connections to %v)", r.id, len(r.seqs), want, gaps, dups, r.nodes)
	}
	for _, p := range r.problems {
		t.Errorf("%s: %s", r.id, p)
	}
}

// drop closes the resumer's current connection abruptly (it reconnects).
func (r *resumer) drop() {
	r.mu.Lock()
	c := r.conn
	r.mu.Unlock()
	if c != nil {
		c.Abort()
	}
}

// publishSeq publishes events n = 0..total-1 on room:channel from c at rate
// per second, and returns when done (or on error).
func publishSeq(t *testing.T, c *client.Conn, room, channel string, total int, rate float64) {
	t.Helper()
	start := time.Now()
	interval := time.Duration(float64(time.Second) / rate)
	for i := 0; i < total; i++ {
		if d := time.Until(start.Add(time.Duration(i) * interval)); d > 0 {
			time.Sleep(d)
		}
		if err := c.Send(seqEvent(room, channel, "p", i, nil)); err != nil {
			t.Errorf("publish %d: %v", i, err)
			return
		}
	}
}
