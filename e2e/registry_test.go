package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/arqonbus/arqonbus/client"
	"github.com/arqonbus/arqonbus/internal/redistest"
)

// The channel registry (create_channel's channels, restored at start) is
// written in the order the commands ran: a channel created and at once
// deleted stays deleted, in Redis and after a restart. Each registry write
// used to run on a goroutine of its own, so a delete could reach Redis
// before the create it followed: the channel came back after a restart.
func TestChannelRegistryWritesInOrder(t *testing.T) {
	r := redistest.Run(t)
	env := redisEnv(r, "ARQONBUS_ADMIN_TOKEN=sesame", "ARQONBUS_CLUSTER=false", "ARQONBUS_COMMAND_RATE=0")
	s := startServer(t, env...)
	admin := dial(t, s, client.WithClientID("registry_admin"), client.WithParam("admin_token", "sesame"))
	ctx := testCtx(t, 2*time.Minute)

	const pairs, kept = 400, 20
	prefix := uniqueName("reg")
	var ids []string
	send := func(name, channel string) {
		payload, _ := json.Marshal(map[string]any{"command": name, "parameters": map[string]any{}})
		id := client.NewID("cmd")
		if err := admin.Send(client.Envelope{ID: id, Type: "command", Room: prefix, Channel: channel, Payload: payload}); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	// Pipelined, without waiting for answers: each create is at once
	// followed by its delete.
	for i := range pairs {
		ch := fmt.Sprintf("c%d", i)
		send("create_channel", ch)
		if i >= kept {
			send("delete_channel", ch)
		}
	}
	for _, id := range ids {
		env, err := admin.Expect(ctx, func(e client.Envelope) bool { return e.RequestID() == id })
		if err != nil {
			t.Fatalf("waiting for %s: %v", id, err)
		}
		if e := client.AsError(env); e != nil {
			t.Fatalf("command %s: %v", id, e)
		}
	}

	registry := func() map[string]string {
		c := r.Client()
		m, err := c.Do(ctx, c.B().Hgetall().Key("arqonbus:{channels}").Build()).AsStrMap()
		if err != nil {
			t.Fatalf("HGETALL: %v", err)
		}
		for k := range m {
			if !strings.HasPrefix(k, prefix+":") {
				delete(m, k)
			}
		}
		return m
	}
	// Writes are asynchronous: wait until the registry settles.
	var got map[string]string
	deadline := time.Now().Add(10 * time.Second)
	for {
		got = registry()
		if len(got) == kept || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond) // a late write would land meanwhile
	got = registry()
	var wrong []string
	for name := range got {
		var i int
		if _, err := fmt.Sscanf(name, prefix+":c%d", &i); err != nil || i >= kept {
			wrong = append(wrong, name)
		}
	}
	if len(wrong) > 0 || len(got) != kept {
		t.Fatalf("registry holds %d channels, want the %d kept; deleted ones still there: %d (e.g. %v)",
			len(got), kept, len(wrong), wrong[:min(len(wrong), 5)])
	}

	// After a restart, the kept channels are back and the deleted ones are not.
	s.stop()
	s2 := startServer(t, env...)
	c := dial(t, s2)
	env2, err := c.Command(ctx, prefix, "c0", "list_channels", map[string]any{"room": prefix})
	if err != nil {
		t.Fatal(err)
	}
	var list struct {
		Result struct {
			Channels []struct {
				Channel string `json:"channel"`
			} `json:"channels"`
		} `json:"result"`
	}
	_ = json.Unmarshal(env2.Payload, &list)
	if n := len(list.Result.Channels); n != kept {
		t.Fatalf("after a restart %s has %d channels, want %d", prefix, n, kept)
	}
	_ = context.Background
}

// In a cluster, delete_channel deletes the channel's stream and registry
// entry (the node that ran it does), and the other node forgets the channel
// too. The stream used to stay, left to trimming.
func TestClusterDeleteChannelDeletesStream(t *testing.T) {
	r := redistest.Run(t)
	nodes := startNodes(t, r.URL(), 2, "ARQONBUS_ADMIN_TOKEN=sesame")
	admin := dial(t, nodes[0], client.WithClientID("cluster_deleter"), client.WithParam("admin_token", "sesame"))
	writer := dial(t, nodes[1])
	ctx := testCtx(t, time.Minute)
	room := uniqueName("cdel")
	if _, err := admin.Command(ctx, room, "doomed", "create_channel", nil); err != nil {
		t.Fatal(err)
	}
	if err := writer.Join(ctx, room, "doomed"); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		env := seqEvent(room, "doomed", "w", i, map[string]any{"ack": true})
		if err := writer.Send(env); err != nil {
			t.Fatal(err)
		}
		if _, err := writer.Expect(ctx, func(e client.Envelope) bool { return e.RequestID() == env.ID }); err != nil {
			t.Fatal(err)
		}
	}
	key := streamKey(room, "doomed")
	if n := len(xrange(t, r, key)); n != 5 {
		t.Fatalf("stream holds %d entries before the delete, want 5", n)
	}
	if err := writer.Leave(ctx, room, "doomed"); err != nil {
		t.Fatal(err)
	}
	// The member count crosses nodes asynchronously: retry while it says members.
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := admin.Command(ctx, room, "doomed", "delete_channel", nil)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("delete_channel: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	c := r.Client()
	deadline = time.Now().Add(5 * time.Second)
	for {
		exists, err := c.Do(ctx, c.B().Exists().Key(key).Build()).AsInt64()
		if err != nil {
			t.Fatal(err)
		}
		saved, err := c.Do(ctx, c.B().Hexists().Key("arqonbus:{channels}").Field(room+":doomed").Build()).AsBool()
		if err != nil {
			t.Fatal(err)
		}
		if exists == 0 && !saved {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after delete_channel: stream exists %d, registry entry %v", exists, saved)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for i, s := range nodes {
		c := dial(t, s)
		env, err := c.Command(ctx, room, "doomed", "history", nil)
		if err != nil {
			t.Fatalf("history on node %d: %v", i, err)
		}
		var h struct {
			Result struct {
				Count int `json:"count"`
			} `json:"result"`
		}
		_ = json.Unmarshal(env.Payload, &h)
		if h.Result.Count != 0 {
			t.Errorf("node %d still has %d entries of the deleted channel", i, h.Result.Count)
		}
	}
}
