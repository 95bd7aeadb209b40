package redistest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/redis/rueidis"
)

// TestRunCluster: a 3-shard cluster serves keys in every shard's slots, and
// a Kill/Start of all shards brings cluster_state:ok (and the slots) back.
func TestRunCluster(t *testing.T) {
	c := RunCluster(t, 3)
	if len(c.Nodes()) != 3 {
		t.Fatalf("%d nodes, want 3", len(c.Nodes()))
	}
	rc := c.Client()
	if m := rc.Mode(); m != rueidis.ClientModeCluster {
		t.Fatalf("client mode %v, want cluster", m)
	}

	// 30 keys land in slots of all three shards: check that each shard
	// holds some, straight from the node that owns them.
	write := func(round int) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		for i := range 30 {
			k, v := fmt.Sprintf("key-%d", i), fmt.Sprintf("v%d-%d", round, i)
			if err := rc.Do(ctx, rc.B().Set().Key(k).Value(v).Build()).Error(); err != nil {
				t.Fatalf("round %d: SET %s: %v", round, k, err)
			}
			if got, err := rc.Do(ctx, rc.B().Get().Key(k).Build()).ToString(); err != nil || got != v {
				t.Fatalf("round %d: GET %s = %q, %v; want %q", round, k, got, err, v)
			}
		}
		for _, s := range c.Nodes() {
			n, err := s.command("DBSIZE")
			if err != nil {
				t.Fatalf("DBSIZE on %s: %v", s.Addr(), err)
			}
			if n == "0" {
				t.Errorf("round %d: shard %s holds no key: the keys did not spread", round, s.Addr())
			}
		}
	}
	write(1)

	start := time.Now()
	c.Kill()
	for _, s := range c.Nodes() {
		if s.AnswersPing() {
			t.Fatalf("%s still answers after Kill", s.Addr())
		}
	}
	c.Start()
	t.Logf("cluster ok again %v after Kill", time.Since(start).Round(time.Millisecond))
	// The same client works again: rueidis reconnects by itself.
	write(2)
}
