package e2e

// Several nodes as one bus (issue 8): Scenario 5's settings (nodes sharing
// one Redis, ARQONBUS_STORAGE=redis) make one bus, with members, handlers and
// clients spread over the nodes.

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/arqonbus/arqonbus/client"
	"github.com/arqonbus/arqonbus/internal/redistest"
)

// TestClusterChat: Scenario 1's chat with six members on three nodes, all
// publishing at once. Every member gets every other member's message exactly
// once, never its own, and all members see them in one order (the history
// positions'), which is also the order of the history any node reads.
func TestClusterChat(t *testing.T) {
	r := redistest.Run(t)
	nodes := startNodes(t, r.URL(), 3)
	clusterChat(t, nodes)
}

func clusterChat(t *testing.T, nodes []*server) {
	ctx := testCtx(t, 30*time.Second)
	room, ch := "science", uniqueName("chat")
	const members, each = 6, 20
	conns := make([]*client.Conn, members)
	for i := range conns {
		conns[i] = dial(t, nodes[i%len(nodes)], client.WithClientID(fmt.Sprintf("web_client_%d_%s", i, ch)))
		if err := conns[i].Join(ctx, room, ch); err != nil {
			t.Fatalf("member %d join: %v", i, err)
		}
		if node := welcomeNode(t, conns[i]); node != fmt.Sprintf("node%d", i%len(nodes)) {
			t.Fatalf("member %d welcomed by %q", i, node)
		}
	}
	var wg sync.WaitGroup
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := 0; k < each; k++ {
				if err := c.Send(seqEvent(room, ch, fmt.Sprintf("m%d", i), k, nil)); err != nil {
					t.Errorf("member %d publish: %v", i, err)
					return
				}
			}
		}()
	}
	type got struct {
		pub string
		n   int
		pos string
	}
	received := make([][]got, members)
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for len(received[i]) < (members-1)*each {
				env, err := nextReal(ctx, c)
				if err != nil {
					t.Errorf("member %d: %v after %d events", i, err, len(received[i]))
					return
				}
				if env.Type != "event" {
					t.Errorf("member %d: unexpected %s", i, env.Raw)
					continue
				}
				var p struct {
					Pub string `json:"pub"`
				}
				_ = json.Unmarshal(env.Payload, &p)
				received[i] = append(received[i], got{p.Pub, seqOf(env), metaOf(env).Position})
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	posOf := map[string]string{} // pub/n -> position: the same everywhere
	for i, evs := range received {
		seen := map[string]bool{}
		next := map[string]int{}
		for j, e := range evs {
			key := fmt.Sprintf("%s/%d", e.pub, e.n)
			switch {
			case e.pub == fmt.Sprintf("m%d", i):
				t.Errorf("member %d got its own event %s", i, key)
			case seen[key]:
				t.Errorf("member %d got %s twice", i, key)
			case e.n != next[e.pub]:
				t.Errorf("member %d got %s after %s/%d", i, key, e.pub, next[e.pub]-1)
			}
			seen[key] = true
			next[e.pub] = e.n + 1
			if j > 0 && !posLess(evs[j-1].pos, e.pos) {
				t.Errorf("member %d: position %s after %s: not the one order", i, e.pos, evs[j-1].pos)
			}
			if p, ok := posOf[key]; ok && p != e.pos {
				t.Errorf("%s at position %s on one member, %s on another", key, p, e.pos)
			}
			posOf[key] = e.pos
		}
	}
	// The history, read on each node, is the same sequence.
	for i, s := range nodes {
		reader := dial(t, s, client.WithClientID(uniqueName("reader")))
		h := history(t, reader, room, ch, map[string]any{"limit": 1000})
		if len(h.Entries) != members*each {
			t.Errorf("history on node%d: %d entries, want %d", i, len(h.Entries), members*each)
		}
		for j := 1; j < len(h.Entries); j++ {
			if !posLess(h.Entries[j-1].Position, h.Entries[j].Position) {
				t.Errorf("history on node%d: %s after %s", i, h.Entries[j].Position, h.Entries[j-1].Position)
				break
			}
		}
	}
}

// TestClusterPrivateAndServices: a private message and Scenario 4's
// command/response, as the quickstart writes them, between clients on
// different nodes; handlers on two nodes share commands round robin; no
// answer gives TIMEOUT and a handler that leaves gives UNAVAILABLE, across
// nodes as on one.
func TestClusterPrivateAndServices(t *testing.T) {
	r := redistest.Run(t)
	nodes := startNodes(t, r.URL(), 2)
	clusterPrivateAndServices(t, nodes)
}

func clusterPrivateAndServices(t *testing.T, nodes []*server) {
	ctx := testCtx(t, 30*time.Second)
	sfx := uniqueName("")
	alice := dial(t, nodes[0], client.WithClientID("alice"+sfx))
	bob := dial(t, nodes[1], client.WithClientID("bob"+sfx))

	// Private, both ways, as sent.
	for _, pair := range [][2]*client.Conn{{alice, bob}, {bob, alice}} {
		from, to := pair[0], pair[1]
		pm := client.Envelope{ID: client.NewID("pm"), Type: "private", Room: "science", Channel: "pm",
			Payload: json.RawMessage(`{"target":"` + to.ClientID() + `","message":"psst"}`)}
		if err := from.Send(pm); err != nil {
			t.Fatal(err)
		}
		env, err := nextReal(ctx, to)
		if err != nil || env.Type != "private" || env.ID != pm.ID || env.From != from.ClientID() || !jsonEqual(env.Payload, pm.Payload) {
			t.Fatalf("%s got %s (%v), want the private message %s as sent", to.ClientID(), env.Raw, err, pm.ID)
		}
	}
	pm := client.Envelope{ID: client.NewID("pm"), Type: "private", Room: "science", Channel: "pm",
		Payload: json.RawMessage(`{"target":"nobody` + sfx + `","message":"?"}`)}
	_ = alice.Send(pm)
	expectErrorFor(t, alice, 5*time.Second, pm.ID, "TARGET_NOT_FOUND", "payload.target")

	// Scenario 4: db_service (node 1) serves status on services:database; api_service (node 0) asks.
	room, ch := "services", uniqueName("database")
	db := dial(t, nodes[1], client.WithClientID("db_service"+sfx), client.WithParam("client_type", "service"))
	api := dial(t, nodes[0], client.WithClientID("api_service"+sfx), client.WithParam("client_type", "service"))
	cmdOK(t, db, room, ch, "join_channel", map[string]any{"handles": []string{"status"}})
	waitHandlers(t, api, room, ch, "status", 1)
	cmd := `{"version":"1.0","id":"arq_cmd_001","type":"command","room":"` + room + `","channel":"` + ch + `","from":"api_service` + sfx +
		`","timestamp":"2025-01-01T12:00:00.000Z","payload":{"command":"status","parameters":{"check":"connection_pool"}}}`
	if err := api.SendRaw([]byte(cmd)); err != nil {
		t.Fatal(err)
	}
	got, err := nextReal(ctx, db)
	if err != nil || !jsonEqual(got.Raw, []byte(cmd)) {
		t.Fatalf("handler got %s (%v), want the command as sent", got.Raw, err)
	}
	resp := `{"version":"1.0","id":"arq_resp_001","type":"command_response","room":"` + room + `","channel":"` + ch + `","from":"db_service` + sfx +
		`","timestamp":"2025-01-01T12:00:00.025Z","payload":{"request_id":"arq_cmd_001","status":"success","result":{"active_connections":15,"max_connections":100,"avg_response_time_ms":2.3}}}`
	if err := db.SendRaw([]byte(resp)); err != nil {
		t.Fatal(err)
	}
	got, err = nextReal(ctx, api)
	if err != nil || !jsonEqual(got.Raw, []byte(resp)) {
		t.Fatalf("requester got %s (%v), want the response as sent", got.Raw, err)
	}

	// A second handler on node 0: commands alternate between the two.
	db2 := dial(t, nodes[0], client.WithClientID("db_service_2"+sfx), client.WithParam("client_type", "service"))
	cmdOK(t, db2, room, ch, "join_channel", map[string]any{"handles": []string{"status"}})
	waitHandlers(t, api, room, ch, "status", 2)
	served := map[string]int{}
	type handed struct {
		h   *client.Conn
		env client.Envelope
	}
	rrCtx, stopReaders := context.WithCancel(ctx)
	arrivals := make(chan handed)
	var readers sync.WaitGroup
	for _, h := range []*client.Conn{db, db2} {
		readers.Add(1)
		go func() {
			defer readers.Done()
			for {
				env, err := nextReal(rrCtx, h)
				if err != nil {
					return
				}
				select {
				case arrivals <- handed{h, env}:
				case <-rrCtx.Done():
					return
				}
			}
		}()
	}
	for i := 0; i < 4; i++ {
		id := client.NewID("cmd")
		_ = api.Send(client.Envelope{ID: id, Type: "command", Room: room, Channel: ch, Payload: json.RawMessage(`{"command":"status"}`)})
		var a handed
		select {
		case a = <-arrivals:
		case <-ctx.Done():
			t.Fatal("no handler got the command")
		}
		if a.env.ID != id {
			t.Fatalf("handler got %s", a.env.Raw)
		}
		served[a.h.ClientID()]++
		_ = a.h.Send(client.Envelope{ID: client.NewID("resp"), Type: "command_response", Room: room, Channel: ch,
			Payload: json.RawMessage(`{"request_id":"` + id + `","status":"success","result":{}}`)})
		if env, err := nextReal(ctx, api); err != nil || env.RequestID() != id {
			t.Fatalf("requester: %s (%v)", env.Raw, err)
		}
	}
	stopReaders()
	readers.Wait()
	if served[db.ClientID()] != 2 || served[db2.ClientID()] != 2 {
		t.Errorf("round robin over two handlers on two nodes: %v", served)
	}

	// No answer: TIMEOUT (command timeout 2s). A handler that leaves mid-command: UNAVAILABLE.
	db2.Close()
	waitHandlers(t, api, room, ch, "status", 1)
	id := client.NewID("cmd")
	_ = api.Send(client.Envelope{ID: id, Type: "command", Room: room, Channel: ch, Payload: json.RawMessage(`{"command":"status"}`)})
	if env, err := nextReal(ctx, db); err != nil || env.ID != id {
		t.Fatalf("handler: %s (%v)", env.Raw, err)
	}
	start := time.Now()
	expectErrorFor(t, api, 5*time.Second, id, "TIMEOUT", "")
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("TIMEOUT after %v", d)
	}
	id = client.NewID("cmd")
	_ = api.Send(client.Envelope{ID: id, Type: "command", Room: room, Channel: ch, Payload: json.RawMessage(`{"command":"status"}`)})
	if env, err := nextReal(ctx, db); err != nil || env.ID != id {
		t.Fatalf("handler: %s (%v)", env.Raw, err)
	}
	db.Close()
	start = time.Now()
	expectErrorFor(t, api, 3*time.Second, id, "UNAVAILABLE", "")
	t.Logf("UNAVAILABLE %v after the handler on the other node left", time.Since(start))
}

// waitHandlers waits until channel_info (asked through c) counts n handlers of name.
func waitHandlers(t *testing.T, c *client.Conn, room, channel, name string, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		info := cmdOK(t, c, room, channel, "channel_info", nil)
		if h, _ := info.obj("handlers").num(name); int(h) == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("channel_info never counted %d handlers of %s: %v", n, name, info)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestClusterWideAnswers: status counts the cluster's clients and lists its
// nodes; channel_info and list_channels count members on every node;
// create_channel and delete_channel apply everywhere, and a channel with
// members on another node is not deleted.
func TestClusterWideAnswers(t *testing.T) {
	r := redistest.Run(t)
	nodes := startNodes(t, r.URL(), 3, "ARQONBUS_ADMIN_TOKEN=sesame")
	ctx := testCtx(t, 30*time.Second)
	room, ch := "science", uniqueName("wide")
	var conns []*client.Conn
	for i := 0; i < 6; i++ {
		c := dial(t, nodes[i%3], client.WithClientID(uniqueName("m")), client.WithParam("client_type", []string{"human", "ai-agent"}[i%2]))
		if err := c.Join(ctx, room, ch); err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		st := clusterStatusOf(t, conns[0])
		sum := 0
		for _, n := range st.Nodes {
			sum += n.Clients
		}
		if len(st.Nodes) == 3 && st.ClientsTotal == 6 && sum == 6 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("status: %d nodes, clients_total %d (%+v), want 3 nodes and 6 clients", len(st.Nodes), st.ClientsTotal, st.Nodes)
		}
		time.Sleep(100 * time.Millisecond)
	}
	info := cmdOK(t, conns[1], room, ch, "channel_info", nil)
	if n, _ := info.num("member_count"); n != 6 || len(info.list("members")) != 6 {
		t.Errorf("channel_info: %v", info)
	}
	perNode := map[string]int{}
	for _, m := range info.list("members") {
		perNode[m.str("node")]++
	}
	if perNode["node0"] != 2 || perNode["node1"] != 2 || perNode["node2"] != 2 {
		t.Errorf("channel_info members by node: %v", perNode)
	}
	list := cmdOK(t, conns[2], room, ch, "list_channels", nil)
	found := false
	for _, c := range list.list("channels") {
		if c.str("channel") == ch {
			found = true
			if n, _ := c.num("members"); n != 6 {
				t.Errorf("list_channels counts %v members of %s, want 6", n, ch)
			}
		}
	}
	if !found {
		t.Errorf("list_channels lacks %s: %v", ch, list)
	}

	// create on node 0 is seen on node 1; delete refused while node 2 has a member.
	admin := dial(t, nodes[0], client.WithClientID(uniqueName("admin")), client.WithParam("admin_token", "sesame"))
	fresh := uniqueName("made")
	cmdOK(t, admin, room, fresh, "create_channel", nil)
	other := dial(t, nodes[1], client.WithClientID(uniqueName("o")))
	waitListed(t, other, room, fresh, true)
	cmdErr(t, other, room, fresh, "create_channel", nil, "FORBIDDEN", "")
	member := dial(t, nodes[2], client.WithClientID(uniqueName("mm")))
	if err := member.Join(ctx, room, fresh); err != nil {
		t.Fatal(err)
	}
	cmdErr(t, admin, room, fresh, "delete_channel", nil, "CONFLICT", "")
	if err := member.Leave(ctx, room, fresh); err != nil {
		t.Fatal(err)
	}
	cmdOK(t, admin, room, fresh, "delete_channel", nil)
	waitListed(t, other, room, fresh, false)
}

// waitListed waits until list_channels (through c) lists channel, or not.
func waitListed(t *testing.T, c *client.Conn, room, channel string, want bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		has := false
		for _, ch := range cmdOK(t, c, room, "general", "list_channels", nil).list("channels") {
			has = has || ch.str("channel") == channel
		}
		if has == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("list_channels on another node: %s listed %v, want %v", channel, has, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestClusterIdentity: one client id, one connection in the whole cluster:
// a second connection with it on another node gets CONFLICT; with
// ARQONBUS_REPLACE_DUPLICATE=true it replaces the first, wherever that is.
func TestClusterIdentity(t *testing.T) {
	r := redistest.Run(t)
	nodes := startNodes(t, r.URL(), 2)
	id := uniqueName("alice")
	first := dial(t, nodes[0], client.WithClientID(id))
	ctx := testCtx(t, 10*time.Second)
	c, err := client.Dial(ctx, nodes[1].URL, client.WithClientID(id))
	if err == nil {
		c.Close()
		t.Fatal("a second connection with a live client id was welcomed on another node")
	}
	if !strings.Contains(err.Error(), "CONFLICT") {
		t.Errorf("second connection: %v, want CONFLICT", err)
	}
	// A first-envelope claim of a taken id: CONFLICT too.
	anon := dial(t, nodes[1])
	_ = anon.Send(client.Envelope{ID: client.NewID("msg"), Type: "command", Room: "science", Channel: "general", From: id,
		Payload: json.RawMessage(`{"command":"ping"}`)})
	if env, err := nextReal(ctx, anon); err != nil || client.AsError(env) == nil || client.AsError(env).Code != "CONFLICT" {
		t.Errorf("claim of a taken id: %s (%v), want CONFLICT", env.Raw, err)
	}
	if _, err := first.Command(ctx, "science", "general", "ping", nil); err != nil {
		t.Errorf("the first connection was disturbed: %v", err)
	}

	r2 := redistest.Run(t)
	nodes = startNodes(t, r2.URL(), 2, "ARQONBUS_REPLACE_DUPLICATE=true")
	old := dial(t, nodes[0], client.WithClientID(id))
	dial(t, nodes[1], client.WithClientID(id))
	select {
	case <-old.Done():
		if code, _ := old.CloseCode(); code != 1008 {
			t.Errorf("replaced connection closed with %d, want 1008", code)
		}
	case <-time.After(5 * time.Second):
		t.Error("the older connection on the other node was not closed")
	}
}

// TestClusterStandaloneRefused: a node with ARQONBUS_CLUSTER=false next to a
// running bus on the same Redis and key prefix refuses to start, with one
// line, instead of splitting the bus and colliding in Redis.
func TestClusterStandaloneRefused(t *testing.T) {
	r := redistest.Run(t)
	startNodes(t, r.URL(), 1)
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	cmd := exec.Command(binPath, "--port", fmt.Sprint(freePort(t)), "--http-port", fmt.Sprint(freePort(t)),
		"--telemetry-port", fmt.Sprint(freePort(t)))
	cmd.Env = append(clusterEnv(r.URL(), "loner"), "ARQONBUS_CLUSTER=false")
	done := make(chan struct{})
	var out []byte
	var err error
	go func() { out, err = cmd.CombinedOutput(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatal("the standalone node started next to a cluster")
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	last := lines[len(lines)-1]
	if err == nil || !strings.Contains(last, "--cluster") || !strings.Contains(last, "node0") {
		t.Errorf("exit %v; last line %q, want a refusal naming the running node and --cluster", err, last)
	}
}
