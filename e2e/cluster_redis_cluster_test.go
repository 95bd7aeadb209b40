package e2e

import (
	"fmt"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/arqonbus/arqonbus/client"
	"github.com/arqonbus/arqonbus/internal/redistest"
)

// TestClusterOnRedisCluster: the same bus on a 3-shard Redis Cluster
// (ARQONBUS_REDIS_URL naming one of its nodes): the chat over three nodes,
// private messages and command/response across nodes, and a node started
// afterwards loads the history of channels on every shard (its replays see
// what was published before it started).
func TestClusterOnRedisCluster(t *testing.T) {
	rc := redistest.RunCluster(t, 3)
	nodes := startNodes(t, rc.URL(), 3)
	t.Run("chat", func(t *testing.T) { clusterChat(t, nodes) })
	t.Run("private and services", func(t *testing.T) { clusterPrivateAndServices(t, nodes) })

	// Channels whose streams land on different shards (each channel is its own hash tag).
	ctx := testCtx(t, 30*time.Second)
	room := "shards"
	pub := dial(t, nodes[0], client.WithClientID(uniqueName("pub")))
	var channels []string
	for i := 0; i < 8; i++ {
		ch := uniqueName(fmt.Sprintf("c%d", i))
		channels = append(channels, ch)
		if err := pub.Join(ctx, room, ch); err != nil {
			t.Fatal(err)
		}
		for n := 0; n < 5; n++ {
			if err := pub.Send(seqEvent(room, ch, "p", n, map[string]any{"ack": true})); err != nil {
				t.Fatal(err)
			}
			if env, err := nextReal(ctx, pub); err != nil || env.Type != "command_response" {
				t.Fatalf("ack: %s (%v)", env.Raw, err)
			}
		}
	}
	late := startServer(t, clusterEnv(rc.URL(), "node3")...)
	waitNodes(t, late, 4)
	// Its start-up load found the streams of every shard.
	if m := regexp.MustCompile(`loaded history.*channels=(\d+)`).FindStringSubmatch(late.Output()); m == nil {
		t.Errorf("the late node loaded no history at start:\n%s", late.Output())
	} else if n, _ := strconv.Atoi(m[1]); n < len(channels) {
		t.Errorf("the late node loaded %d channels' history at start, want at least %d", n, len(channels))
	}
	for _, ch := range channels {
		c := dial(t, late, client.WithClientID(uniqueName("late")))
		r := cmdOK(t, c, room, ch, "join_channel", map[string]any{"since": "0"})
		if n, _ := r.obj("replay").num("replayed"); n != 5 {
			t.Errorf("%s: a node started later replayed %v events, want 5: %v", ch, n, r)
		}
		for n := 0; n < 5; n++ {
			env, err := nextReal(ctx, c)
			if err != nil || seqOf(env) != n {
				t.Fatalf("%s replay %d: %s (%v)", ch, n, env.Raw, err)
			}
		}
	}
}
