package e2e

import (
	"encoding/json"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/arqonbus/arqonbus/client"
)

const testAdminToken = "adm_secret_issue3"

// TestBuiltinCommands runs each built-in command's success and error paths
// against one server (admin through ARQONBUS_ADMIN_TOKEN).
func TestBuiltinCommands(t *testing.T) {
	s := startServer(t, "ARQONBUS_ADMIN_TOKEN="+testAdminToken)
	ctx := testCtx(t, 30*time.Second)
	admin := dial(t, s, client.WithClientID("cmd_admin"), client.WithParam("admin_token", testAdminToken))
	user := dial(t, s, client.WithClientID("cmd_user"))

	t.Run("ping", func(t *testing.T) {
		before := time.Now().Add(-time.Minute)
		r := cmdOK(t, user, "science", "general", "ping", nil)
		if pong, ok := r.boolean("pong"); !ok || !pong {
			t.Errorf("ping: result.pong is not true: %v", r)
		}
		ts, err := time.Parse(time.RFC3339Nano, r.str("server_time"))
		if err != nil || ts.Before(before) || ts.After(time.Now().Add(time.Minute)) {
			t.Errorf("ping: server_time %s is not a current RFC 3339 time", r["server_time"])
		}
		// The answer echoes any room:channel, member or not.
		cmdOK(t, user, "anywhere", "at-all", "ping", nil)
	})

	t.Run("status", func(t *testing.T) {
		types := []string{"human", "ai-agent", "dashboard", "service"}
		conns := map[string]*client.Conn{}
		for _, ty := range types {
			conns[ty] = dial(t, s, client.WithClientID("st_"+strings.ReplaceAll(ty, "-", "_")), client.WithParam("client_type", ty))
		}
		for _, ty := range []string{"human", "service"} {
			if err := conns[ty].Join(ctx, "stat", "room1"); err != nil {
				t.Fatal(err)
			}
		}
		id, _ := conns["human"].Publish("stat", "room1", map[string]any{"message": "count me"})
		if _, err := conns["service"].Expect(ctx, func(e client.Envelope) bool { return e.ID == id }); err != nil {
			t.Fatal(err)
		}
		r := cmdOK(t, conns["dashboard"], "stat", "room1", "status", nil)
		requireKeys(t, "status", r, "node_id", "version", "uptime_seconds", "clients", "clients_total",
			"rooms", "channels_total", "channels", "messages", "storage")
		if r.str("node_id") == "" || r.str("version") == "" {
			t.Errorf("status: empty node_id or version: node_id=%s version=%s", r["node_id"], r["version"])
		}
		if up, ok := r.num("uptime_seconds"); !ok || up < 0 {
			t.Errorf("status: uptime_seconds %s", r["uptime_seconds"])
		}
		var byType map[string]int
		if err := json.Unmarshal(r["clients"], &byType); err != nil {
			t.Errorf("status: clients is not a map of counts: %s", r["clients"])
		}
		sum := 0
		for _, ty := range types {
			if byType[ty] < 1 {
				t.Errorf("status: clients[%q] = %d, want >= 1 (clients %s)", ty, byType[ty], r["clients"])
			}
		}
		for _, n := range byType {
			sum += n
		}
		if total, _ := r.num("clients_total"); int(total) != sum || sum < 6 {
			t.Errorf("status: clients_total %s, clients by type %s (sum %d, want >= 6 and equal)", r["clients_total"], r["clients"], sum)
		}
		chans := r.list("channels")
		if total, _ := r.num("channels_total"); int(total) < len(chans) || len(chans) == 0 {
			t.Errorf("status: channels_total %s for %d channels listed", r["channels_total"], len(chans))
		}
		var mine, general result
		for _, c := range chans {
			switch c.str("room") + ":" + c.str("channel") {
			case "stat:room1":
				mine = c
			case "science:general":
				general = c
			}
		}
		if mine == nil {
			t.Errorf("status: channels lacks stat:room1: %s", r["channels"])
		} else {
			requireKeys(t, "status channel", mine, "room", "channel", "members", "published", "bootstrap")
			if n, _ := mine.num("members"); n != 2 {
				t.Errorf("status: stat:room1 members %s, want 2", mine["members"])
			}
			if n, _ := mine.num("published"); n != 1 {
				t.Errorf("status: stat:room1 published %s, want 1", mine["published"])
			}
			if b, ok := mine.boolean("bootstrap"); !ok || b {
				t.Errorf("status: stat:room1 bootstrap %s, want false", mine["bootstrap"])
			}
		}
		if general == nil {
			t.Errorf("status: channels lacks bootstrap science:general: %s", r["channels"])
		} else if b, _ := general.boolean("bootstrap"); !b {
			t.Errorf("status: science:general bootstrap %s, want true", general["bootstrap"])
		}
		m := r.obj("messages")
		requireKeys(t, "status messages", m, "received", "sent", "received_per_second", "sent_per_second", "by_type")
		if n, _ := m.num("received"); n < 1 {
			t.Errorf("status: messages.received %s", m["received"])
		}
		if n, _ := m.num("sent"); n < 1 {
			t.Errorf("status: messages.sent %s", m["sent"])
		}
		if m.obj("by_type") == nil {
			t.Errorf("status: messages.by_type is not an object: %s", m["by_type"])
		}
		st := r.obj("storage")
		if st.str("mode") != "memory" || len(st["health"]) == 0 || string(st["health"]) == "null" {
			t.Errorf("status: storage %s, want mode memory and a health", r["storage"])
		}
	})

	t.Run("list_channels", func(t *testing.T) {
		a := dial(t, s, client.WithClientID("lc_a"))
		b := dial(t, s, client.WithClientID("lc_b"))
		for _, c := range []*client.Conn{a, b} {
			if err := c.Join(ctx, "lc", "alpha"); err != nil {
				t.Fatal(err)
			}
		}
		if err := a.Join(ctx, "lc", "beta"); err != nil {
			t.Fatal(err)
		}
		check := func(r result, how string) {
			t.Helper()
			if r.str("room") != "lc" {
				t.Errorf("list_channels %s: room %s, want lc", how, r["room"])
			}
			got := map[string]result{}
			for _, c := range r.list("channels") {
				requireKeys(t, "list_channels entry", c, "channel", "members", "created", "last_activity")
				got[c.str("channel")] = c
			}
			if len(got) != 2 {
				t.Errorf("list_channels %s: %s, want alpha and beta only", how, r["channels"])
			}
			for ch, n := range map[string]float64{"alpha": 2, "beta": 1} {
				if m, _ := got[ch].num("members"); m != n {
					t.Errorf("list_channels %s: %s members %v, want %v", how, ch, m, n)
				}
			}
		}
		check(cmdOK(t, a, "lc", "alpha", "list_channels", nil), "from the envelope")
		// parameters.room overrides the envelope's room.
		check(cmdOK(t, user, "science", "general", "list_channels", map[string]any{"room": "lc"}), "with parameters.room")
		// The science room lists its bootstrap channels.
		r := cmdOK(t, user, "science", "general", "list_channels", nil)
		if len(r.list("channels")) < 7 {
			t.Errorf("list_channels science: %s, want the 7 bootstrap channels", r["channels"])
		}
		cmdErr(t, user, "science", "general", "list_channels", map[string]any{"room": "Not A Room"}, "VALIDATION_ERROR", "")
	})

	t.Run("channel_info", func(t *testing.T) {
		h := dial(t, s, client.WithClientID("ci_handler"), client.WithParam("client_type", "service"))
		m := dial(t, s, client.WithClientID("ci_member"), client.WithParam("client_type", "human"))
		cmdOK(t, h, "ci", "main", "join_channel", map[string]any{"handles": []string{"status", "reindex"}})
		cmdOK(t, m, "ci", "main", "join_channel", nil)
		for i := 0; i < 2; i++ {
			if _, err := m.Publish("ci", "main", map[string]any{"message": "x"}); err != nil {
				t.Fatal(err)
			}
		}
		for i := 0; i < 2; i++ { // both events routed, so counted
			if _, err := h.Expect(ctx, func(e client.Envelope) bool { return e.Type == "event" && e.Room == "ci" }); err != nil {
				t.Fatal(err)
			}
		}

		// "room:channel" in parameters.room, asked from another channel.
		r := cmdOK(t, user, "science", "general", "channel_info", map[string]any{"room": "ci:main"})
		requireKeys(t, "channel_info", r, "room", "channel", "member_count", "members", "created",
			"last_activity", "published", "bootstrap", "handlers")
		if r.str("room") != "ci" || r.str("channel") != "main" {
			t.Errorf("channel_info: %s:%s, want ci:main", r["room"], r["channel"])
		}
		if n, _ := r.num("member_count"); n != 2 {
			t.Errorf("channel_info: member_count %s, want 2", r["member_count"])
		}
		types := map[string]string{}
		for _, mem := range r.list("members") {
			types[mem.str("client_id")] = mem.str("client_type")
		}
		if types["ci_handler"] != "service" || types["ci_member"] != "human" || len(types) != 2 {
			t.Errorf("channel_info: members %s, want ci_handler (service) and ci_member (human)", r["members"])
		}
		if n, _ := r.num("published"); n != 2 {
			t.Errorf("channel_info: published %s, want 2", r["published"])
		}
		if b, ok := r.boolean("bootstrap"); !ok || b {
			t.Errorf("channel_info: bootstrap %s, want false", r["bootstrap"])
		}
		var handlers map[string]int
		_ = json.Unmarshal(r["handlers"], &handlers)
		if handlers["status"] != 1 || handlers["reindex"] != 1 {
			t.Errorf("channel_info: handlers %s, want status:1 reindex:1", r["handlers"])
		}
		// parameters.room + parameters.channel.
		r = cmdOK(t, user, "science", "general", "channel_info", map[string]any{"room": "science", "channel": "explore"})
		if r.str("channel") != "explore" {
			t.Errorf("channel_info with room+channel parameters: %s:%s", r["room"], r["channel"])
		}
		if b, _ := r.boolean("bootstrap"); !b {
			t.Errorf("channel_info science:explore: bootstrap %s, want true", r["bootstrap"])
		}
		cmdErr(t, user, "science", "general", "channel_info", map[string]any{"room": "ci:missing"}, "NOT_FOUND", "")
		cmdErr(t, user, "nowhere", "nothing", "channel_info", nil, "NOT_FOUND", "")
	})

	t.Run("create_channel", func(t *testing.T) {
		r := cmdOK(t, admin, "science", "general", "create_channel", map[string]any{"room": "adm:fresh"})
		if r.str("room") != "adm" || r.str("channel") != "fresh" {
			t.Errorf("create_channel: %v, want adm:fresh", r)
		}
		if c, _ := r.boolean("created"); !c {
			t.Errorf("create_channel: created %s", r["created"])
		}
		info := cmdOK(t, user, "adm", "fresh", "channel_info", nil)
		if n, _ := info.num("member_count"); n != 0 {
			t.Errorf("created channel has %v members, want 0", n)
		}
		cmdErr(t, admin, "adm", "fresh", "create_channel", nil, "CONFLICT", "")
		cmdErr(t, admin, "science", "general", "create_channel", nil, "CONFLICT", "")
		cmdErr(t, user, "adm", "user-made", "create_channel", nil, "FORBIDDEN", "")
		cmdErr(t, user, "adm", "user-made", "channel_info", nil, "NOT_FOUND", "")
		cmdErr(t, admin, "science", "general", "create_channel", map[string]any{"room": "adm", "channel": "Bad Name"}, "VALIDATION_ERROR", "")
	})

	t.Run("delete_channel", func(t *testing.T) {
		cmdOK(t, admin, "del", "empty", "create_channel", nil)
		cmdErr(t, user, "del", "empty", "delete_channel", nil, "FORBIDDEN", "")
		r := cmdOK(t, admin, "science", "general", "delete_channel", map[string]any{"room": "del:empty"})
		if r.str("room") != "del" || r.str("channel") != "empty" {
			t.Errorf("delete_channel: %v, want del:empty", r)
		}
		if d, _ := r.boolean("deleted"); !d {
			t.Errorf("delete_channel: deleted %s", r["deleted"])
		}
		cmdErr(t, user, "del", "empty", "channel_info", nil, "NOT_FOUND", "")
		cmdErr(t, admin, "del", "empty", "delete_channel", nil, "NOT_FOUND", "")
		cmdErr(t, admin, "science", "general", "delete_channel", nil, "CONFLICT", "")
		cmdErr(t, admin, "integriguard", "telemetry-stream", "delete_channel", nil, "CONFLICT", "")
		m := dial(t, s, client.WithClientID("del_member"))
		if err := m.Join(ctx, "del", "busy"); err != nil {
			t.Fatal(err)
		}
		cmdErr(t, admin, "del", "busy", "delete_channel", nil, "CONFLICT", "")
		if err := m.Leave(ctx, "del", "busy"); err != nil {
			t.Fatal(err)
		}
		cmdOK(t, admin, "del", "busy", "delete_channel", nil)
	})

	t.Run("join_channel", func(t *testing.T) {
		a := dial(t, s, client.WithClientID("jc_a"))
		b := dial(t, s, client.WithClientID("jc_b"))
		r := cmdOK(t, a, "jc", "one", "join_channel", nil)
		if r.str("room") != "jc" || r.str("channel") != "one" {
			t.Errorf("join_channel: %v", r)
		}
		if j, _ := r.boolean("joined"); !j {
			t.Errorf("join_channel: joined %s", r["joined"])
		}
		if n, _ := r.num("members"); n != 1 {
			t.Errorf("join_channel: members %s, want 1", r["members"])
		}
		// "room:channel" in parameters.room, sent on another channel.
		r = cmdOK(t, b, "science", "general", "join_channel", map[string]any{"room": "jc:one"})
		if n, _ := r.num("members"); n != 2 || r.str("channel") != "one" {
			t.Errorf("join_channel via room:channel: %v, want jc:one with 2 members", r)
		}
		// b is a member of jc:one now: its event reaches a.
		id, _ := b.Publish("jc", "one", map[string]any{"message": "joined"})
		if _, err := a.Expect(ctx, func(e client.Envelope) bool { return e.ID == id }); err != nil {
			t.Errorf("event after join via parameters: %v", err)
		}
		cmdErr(t, a, "jc", "one", "join_channel", map[string]any{"channel": "UPPER"}, "VALIDATION_ERROR", "")
	})

	t.Run("leave_channel", func(t *testing.T) {
		a := dial(t, s, client.WithClientID("lv_a"))
		b := dial(t, s, client.WithClientID("lv_b"))
		for _, c := range []*client.Conn{a, b} {
			if err := c.Join(ctx, "lv", "one"); err != nil {
				t.Fatal(err)
			}
		}
		r := cmdOK(t, a, "science", "general", "leave_channel", map[string]any{"room": "lv", "channel": "one"})
		if l, _ := r.boolean("left"); !l || r.str("room") != "lv" || r.str("channel") != "one" {
			t.Errorf("leave_channel: %v", r)
		}
		if n, _ := r.num("members"); n != 1 {
			t.Errorf("leave_channel: members %s, want 1", r["members"])
		}
		id, _ := b.Publish("lv", "one", map[string]any{"message": "gone?"})
		_ = id
		expectNothing(t, a, 200*time.Millisecond, "client after leave_channel")
		cmdErr(t, a, "lv", "one", "leave_channel", nil, "NOT_FOUND", "")
		cmdErr(t, a, "lv", "never", "leave_channel", nil, "NOT_FOUND", "")
	})

	t.Run("history", func(t *testing.T) {
		a := dial(t, s, client.WithClientID("hi_a"))
		if err := a.Join(ctx, "hist", "log"); err != nil {
			t.Fatal(err)
		}
		var ids []string
		sent := map[string][]byte{}
		for i := 0; i < 5; i++ {
			p, _ := json.Marshal(map[string]any{"message": "entry", "n": i})
			id := client.NewID("msg")
			raw, _ := json.Marshal(client.Envelope{Version: "1.0", ID: id, Type: "event", Room: "hist", Channel: "log",
				From: "hi_a", Timestamp: client.Now(), Payload: p})
			if err := a.SendRaw(raw); err != nil {
				t.Fatal(err)
			}
			ids = append(ids, id)
			sent[id] = raw
		}
		// history is a command on the same connection: it is answered after
		// the five events were taken in.
		r := cmdOK(t, a, "hist", "log", "history", nil)
		if r.str("room") != "hist" || r.str("channel") != "log" {
			t.Errorf("history: %s:%s", r["room"], r["channel"])
		}
		entries := r.list("entries")
		var got []string
		positions := map[string]bool{}
		for _, e := range entries {
			requireKeys(t, "history entry", e, "position", "envelope")
			// A position may be a number or a string (a store's id).
			pos := string(e["position"])
			if pos == "" || pos == `""` || pos == "null" || positions[pos] {
				t.Errorf("history: missing or repeated position %s: %s", pos, r["entries"])
			}
			positions[pos] = true
			env := e.obj("envelope")
			id := env.str("id")
			got = append(got, id)
			if raw, ok := sent[id]; ok && !jsonEqualIgnoringMetadata(e["envelope"], raw) {
				t.Errorf("history: entry is not the original envelope:\nsent %s\ngot  %s", raw, e["envelope"])
			}
		}
		if strings.Join(got, ",") != strings.Join(ids, ",") {
			t.Errorf("history: ids %v, want %v (oldest first)", got, ids)
		}
		// limit: fewer entries, still oldest first, all from the log.
		r = cmdOK(t, a, "science", "general", "history", map[string]any{"room": "hist:log", "limit": 2})
		entries = r.list("entries")
		if len(entries) != 2 {
			t.Errorf("history limit 2: %d entries: %s", len(entries), r["entries"])
		} else {
			i0, i1 := entries[0].obj("envelope").str("id"), entries[1].obj("envelope").str("id")
			if sent[i0] == nil || sent[i1] == nil || slices.Index(ids, i0) >= slices.Index(ids, i1) {
				t.Errorf("history limit 2: want two of the log's entries, oldest first: %s", r["entries"])
			}
			if i1 != ids[4] {
				t.Logf("note: history limit 2 returned %s,%s (not the latest two)", i0, i1)
			}
		}
		cmdErr(t, a, "hist", "log", "history", map[string]any{"limit": "many"}, "VALIDATION_ERROR", "")
	})

	t.Run("help", func(t *testing.T) {
		r := cmdOK(t, user, "science", "general", "help", nil)
		var names []string
		for _, c := range r.list("commands") {
			requireKeys(t, "help entry", c, "name", "description", "parameters")
			if c.str("description") == "" {
				t.Errorf("help: %s has no description", c["name"])
			}
			names = append(names, c.str("name"))
		}
		sort.Strings(names)
		want := []string{"channel_info", "create_channel", "delete_channel", "help", "history", "join_channel",
			"leave_channel", "list_channels", "ping", "status"}
		have := map[string]bool{}
		for _, n := range names {
			have[n] = true
		}
		for _, w := range want {
			if !have[w] {
				t.Errorf("help: %s missing from %v", w, names)
			}
		}
	})

	t.Run("unknown command", func(t *testing.T) {
		cmdErr(t, user, "science", "general", "teleport", nil, "COMMAND_NOT_FOUND", "payload.command")
	})

	t.Run("command without name", func(t *testing.T) {
		id := client.NewID("cmd")
		if err := user.Send(client.Envelope{ID: id, Type: "command", Room: "science", Channel: "general",
			Payload: json.RawMessage(`{"parameters":{}}`)}); err != nil {
			t.Fatal(err)
		}
		expectErrorFor(t, user, 5*time.Second, id, "VALIDATION_ERROR", "payload.command")
	})

	t.Run("parameters not an object", func(t *testing.T) {
		id := client.NewID("cmd")
		if err := user.Send(client.Envelope{ID: id, Type: "command", Room: "science", Channel: "general",
			Payload: json.RawMessage(`{"command":"ping","parameters":"please"}`)}); err != nil {
			t.Fatal(err)
		}
		expectErrorFor(t, user, 5*time.Second, id, "VALIDATION_ERROR", "payload.parameters")
	})

	busServes(t, s, nil)
}
