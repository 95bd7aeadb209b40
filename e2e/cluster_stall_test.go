package e2e

// A Redis that stalls (SIGSTOP, as a loaded machine or a long fork would
// make it) under a bus on Redis storage: found by the soak, where members got
// events twice after Redis answered again and rejoining members found holes
// in the history.

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/arqonbus/arqonbus/client"
	"github.com/arqonbus/arqonbus/internal/redistest"
)

// TestClusterRedisStall: a publisher publishes 200 events/s on node0 while
// members follow the channel (on node0, and on node1 when there are two
// nodes); Redis is stopped for 3 s (long enough for the heartbeat to find it
// unreachable) and continued. node0's members get every event exactly once, in
// order, at increasing positions; node1's members miss only what could not
// cross during the outage, and never get one twice or out of order. A member
// that joins node0 afterwards with since is replayed every later event exactly
// once, and one joining node1 never one twice or out of order.
func TestClusterRedisStall(t *testing.T) {
	for _, n := range []int{1, 2} {
		t.Run(fmt.Sprintf("%d nodes", n), func(t *testing.T) { redisStall(t, n) })
	}
}

// follower records the events one member receives.
type follower struct {
	name      string
	mu        sync.Mutex
	seqs      []int
	positions []string
}

func (f *follower) last() (int, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.seqs) == 0 {
		return 0, -1
	}
	return len(f.seqs), f.seqs[len(f.seqs)-1]
}

func (f *follower) follow(ctx context.Context, c *client.Conn) {
	for {
		env, err := nextReal(ctx, c)
		if err != nil {
			return
		}
		if env.Type != "event" {
			continue
		}
		f.mu.Lock()
		f.seqs = append(f.seqs, seqOf(env))
		f.positions = append(f.positions, metaOf(env).Position)
		f.mu.Unlock()
	}
}

// check counts f's duplicates, disorder and missing events against 0..total-1
// (from first on), and positions that do not increase.
func (f *follower) check(first, total int) (dups, missing, disorder, badPos int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	seen := map[int]int{}
	for i, n := range f.seqs {
		seen[n]++
		if seen[n] == 2 {
			dups++
		}
		if i > 0 && n <= f.seqs[i-1] {
			disorder++
		}
		if i > 0 && !posLess(f.positions[i-1], f.positions[i]) {
			badPos++
		}
	}
	for n := first; n < total; n++ {
		if seen[n] == 0 {
			missing++
		}
	}
	return dups, missing, disorder, badPos
}

func redisStall(t *testing.T, nodeCount int) {
	r := redistest.Run(t)
	nodes := startNodes(t, r.URL(), nodeCount, "ARQONBUS_HISTORY_SIZE=5000")
	ctx := testCtx(t, 90*time.Second)
	room, ch := "science", uniqueName("stall")
	const total, rate = 1200, 200.0

	pub := dial(t, nodes[0], client.WithClientID(uniqueName("pub")))
	if err := pub.Join(ctx, room, ch); err != nil {
		t.Fatal(err)
	}
	var members []*follower
	for i := range 3 * nodeCount {
		node := i % nodeCount
		c := dial(t, nodes[node], client.WithClientID(uniqueName(fmt.Sprintf("m%d_", node))))
		if err := c.Join(ctx, room, ch); err != nil {
			t.Fatal(err)
		}
		f := &follower{name: fmt.Sprintf("member %d on node%d", i, node)}
		members = append(members, f)
		go f.follow(ctx, c)
	}

	pubDone := make(chan struct{})
	go func() { publishSeq(t, pub, room, ch, total, rate); close(pubDone) }()
	time.Sleep(1500 * time.Millisecond)
	pid := r.PID()
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	continued := false
	t.Cleanup(func() {
		if !continued {
			_ = syscall.Kill(pid, syscall.SIGCONT)
		}
	})
	time.Sleep(3 * time.Second)
	_ = syscall.Kill(pid, syscall.SIGCONT)
	continued = true
	<-pubDone

	// node0's members get everything; node1's get the last event once
	// events cross again.
	deadline := time.Now().Add(15 * time.Second)
	for _, f := range members {
		for {
			_, last := f.last()
			if last == total-1 || time.Now().After(deadline) {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	time.Sleep(time.Second) // anything delivered twice arrives meanwhile

	st := clusterStatusOf(t, pub)
	if st.Cluster == nil || !st.Cluster.Reachable {
		t.Fatalf("node0 after the stall: %+v", st.Cluster)
	}
	t.Logf("node0 routed %d events locally only, %d uncertain", st.Cluster.LocalOnly, st.Cluster.Uncertain)
	if st.Cluster.LocalOnly == 0 {
		t.Errorf("the stall was not seen as an outage (no event routed locally only): the test proves nothing")
	}
	var sample *follower
	for i, f := range members {
		dups, missing, disorder, badPos := f.check(0, total)
		count, last := f.last()
		t.Logf("%s: %d events (last %d): %d duplicates, %d missing, %d out of order, %d positions not increasing",
			f.name, count, last, dups, missing, disorder, badPos)
		onNode0 := i%nodeCount == 0
		if dups != 0 || disorder != 0 || badPos != 0 || onNode0 && missing != 0 || last != total-1 {
			t.Errorf("%s: %d duplicates, %d out of order, %d positions not increasing, %d missing, last %d",
				f.name, dups, disorder, badPos, missing, last)
		}
		if onNode0 && sample == nil {
			sample = f
		}
	}

	// Members joining since a position from before the stall, on each node,
	// are replayed every later event once, in order.
	const from = 250 // before the stall, and what follows fits one replay (at most 1000)
	sample.mu.Lock()
	since := ""
	for i, n := range sample.seqs {
		if n == from {
			since = sample.positions[i]
		}
	}
	sample.mu.Unlock()
	if since == "" {
		t.Fatalf("%s never got event %d", sample.name, from)
	}
	for i, s := range nodes {
		late := dial(t, s, client.WithClientID(uniqueName("late")))
		jr := cmdOK(t, late, room, ch, "join_channel", map[string]any{"since": since})
		rp := jr.obj("replay")
		replayed, _ := rp.num("replayed")
		complete, _ := rp.boolean("complete")
		f := &follower{name: fmt.Sprintf("member joining node%d since event %d", i, from)}
		for range int(replayed) {
			rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			env, err := nextReal(rctx, late)
			cancel()
			if err != nil {
				t.Fatalf("%s: replay: %v", f.name, err)
			}
			if env.Type == "event" {
				f.seqs = append(f.seqs, seqOf(env))
				f.positions = append(f.positions, metaOf(env).Position)
			}
		}
		// The history (read from the stream) holds every event once, in order.
		h := follower{name: fmt.Sprintf("history on node%d since event %d", i, from)}
		for _, e := range history(t, late, room, ch, map[string]any{"since": since, "limit": 1000}).Entries {
			var env client.Envelope
			if json.Unmarshal(e.Envelope, &env) == nil {
				h.seqs = append(h.seqs, seqOf(env))
				h.positions = append(h.positions, e.Position)
			}
		}
		hd, hm, ho, hp := h.check(from+1, total)
		t.Logf("%s: %d entries: %d duplicates, %d missing, %d out of order, %d positions not increasing", h.name, len(h.seqs), hd, hm, ho, hp)
		if hd != 0 || hm != 0 || ho != 0 || hp != 0 {
			t.Errorf("%s: %d entries: %d duplicates, %d missing, %d out of order, %d positions not increasing", h.name, len(h.seqs), hd, hm, ho, hp)
		}

		dups, missing, disorder, badPos := f.check(from+1, total)
		t.Logf("%s: replayed %v (complete %v): %d duplicates, %d missing, %d out of order, %d positions not increasing",
			f.name, replayed, complete, dups, missing, disorder, badPos)
		// node1's memory ring never saw what node0 routed on its own during the outage (written to the
		// stream when Redis came back, after node1 had caught up): README "Several nodes" documents
		// that loss for node1's members; its replay misses the same events.
		if i > 0 {
			missing = 0
		}
		if !complete || dups != 0 || missing != 0 || disorder != 0 || badPos != 0 || i == 0 && len(f.seqs) != total-from-1 {
			t.Errorf("%s: replayed %d events (complete %v), want %d: %d duplicates, %d missing, %d out of order, %d positions not increasing",
				f.name, len(f.seqs), complete, total-from-1, dups, missing, disorder, badPos)
		}
	}
}
