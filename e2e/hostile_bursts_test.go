package e2e

// A healthy reader that asks for a lot is not cut (issue 9, item 3): a
// join_channel since that replays megabytes and history answers of 16 KiB
// events flow or page under a small outbound bound, while a client that never
// reads is still cut as a slow consumer.

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/arqonbus/arqonbus/client"
)

// histPage is a history answer with its paging fields.
type histPage struct {
	histResult
	More      bool   `json:"more"`
	NextSince string `json:"next_since"`
	NextUntil string `json:"next_until"`
}

func historyPage(t *testing.T, c *client.Conn, room, channel string, params map[string]any) histPage {
	t.Helper()
	ctx := testCtx(t, 10*time.Second)
	env, err := c.Command(ctx, room, channel, "history", params)
	if err != nil {
		t.Fatalf("history %v: %v (%s)", params, err, env.Raw)
	}
	var p struct {
		Result histPage `json:"result"`
	}
	if err := json.Unmarshal(env.Payload, &p); err != nil {
		t.Fatalf("history result: %v", err)
	}
	if p.Result.Count != len(p.Result.Entries) {
		t.Errorf("history count %d, %d entries", p.Result.Count, len(p.Result.Entries))
	}
	return p.Result
}

// seqs is payload.n of each history entry.
func seqs(t *testing.T, es []histEntry) []int {
	out := make([]int, len(es))
	for i, e := range es {
		var env client.Envelope
		if err := json.Unmarshal(e.Envelope, &env); err != nil {
			t.Fatalf("history entry: %v", err)
		}
		out[i] = seqOf(env)
	}
	return out
}

// checkRun checks that got is exactly from..to-1.
func checkRun(t *testing.T, what string, got []int, from, to int) {
	t.Helper()
	ok := len(got) == to-from
	for i := 0; ok && i < len(got); i++ {
		ok = got[i] == from+i
	}
	if !ok {
		head := got[:min(len(got), 20)]
		t.Errorf("%s: got %d events %v..., want each of %d..%d once, in order", what, len(got), head, from, to-1)
	}
}

// paddedEvent is event n with a 16 KiB payload and an ack asked for.
func paddedEvent(room, channel string, n int) client.Envelope {
	p, _ := json.Marshal(map[string]any{"n": n, "pad": strings.Repeat("x", 16<<10)})
	return client.Envelope{ID: client.NewID("msg"), Type: "event", Room: room, Channel: channel, Payload: p,
		Metadata: json.RawMessage(`{"ack":true}`)}
}

// publishPadded publishes events from..to-1, one every interval (0: at once), and returns their
// positions, from the acks.
func publishPadded(t *testing.T, pub *client.Conn, room, channel string, from, to int, interval time.Duration) []string {
	t.Helper()
	ctx := testCtx(t, 60*time.Second)
	ids := map[string]int{}
	start := time.Now()
	for n := from; n < to; n++ {
		if d := time.Until(start.Add(time.Duration(n-from) * interval)); d > 0 {
			time.Sleep(d)
		}
		e := paddedEvent(room, channel, n)
		ids[e.ID] = n
		if err := pub.Send(e); err != nil {
			t.Fatal(err)
		}
	}
	pos := make([]string, to-from)
	for got := 0; got < to-from; {
		env, err := pub.Next(ctx)
		if err != nil {
			t.Fatalf("publisher: %v after %d acks", err, got)
		}
		n, ok := ids[env.RequestID()]
		if !ok {
			continue
		}
		a, e := parseAck(env)
		if e != nil {
			t.Fatalf("event %d: %s", n, env.Raw)
		}
		pos[n-from] = a.Position
		got++
	}
	return pos
}

func TestBurstsToAHealthyReader(t *testing.T) {
	s := startServer(t, "ARQONBUS_MAX_OUTBOUND_BYTES=262144", "ARQONBUS_MAX_MESSAGE_SIZE=65536", "ARQONBUS_HISTORY_SIZE=1200",
		"ARQONBUS_HISTORY_CHANNEL_BYTES=33554432") // 1,100 events of 16 KiB: all kept
	ctx := testCtx(t, 120*time.Second)
	room, ch := "bursts", uniqueName("ch")
	pub := dial(t, s, client.WithClientID(uniqueName("pub")))
	if err := pub.Join(ctx, room, ch); err != nil {
		t.Fatal(err)
	}
	const total = 1100
	start := time.Now()
	pos := publishPadded(t, pub, room, ch, 0, total, 0)
	t.Logf("%v: %d events published", time.Since(start).Round(time.Millisecond), total)

	// join_channel since: the events after 971, about 2 MiB, eight times the outbound bound.
	const since = total - 129
	reader := dial(t, s, client.WithClientID(uniqueName("reader")))
	env, err := reader.Command(ctx, room, ch, "join_channel", map[string]any{"since": pos[since]})
	if err != nil {
		t.Fatalf("join since: %v (%s); closed with %v", err, env.Raw, closeCodeOf(reader))
	}
	var join struct {
		Result struct {
			Replay struct {
				Replayed     int    `json:"replayed"`
				Last         string `json:"last_position"`
				Complete     bool   `json:"complete"`
				OmittedUntil string `json:"omitted_until"`
			} `json:"replay"`
		} `json:"result"`
	}
	_ = json.Unmarshal(env.Payload, &join)
	rp := join.Result.Replay
	t.Logf("replay since event %d: %+v", since, rp)
	var replayed []int
	for len(replayed) < rp.Replayed {
		e, err := nextReal(ctx, reader)
		if err != nil {
			t.Fatalf("replay: %v after %d events", err, len(replayed))
		}
		replayed = append(replayed, seqOf(e))
	}
	// What the replay left out for its size: history since (the join's) until omitted_until, paged.
	var older []int
	if rp.OmittedUntil != "" {
		after := pos[since]
		for pages := 0; ; pages++ {
			pg := historyPage(t, reader, room, ch, map[string]any{"since": after, "until": rp.OmittedUntil, "limit": 1000})
			older = append(older, seqs(t, pg.Entries)...)
			if !pg.More {
				break
			}
			if pages > 1000 || pg.NextSince == "" {
				t.Fatalf("history since..until does not end: %+v", pg)
			}
			after = pg.NextSince
		}
	}
	checkRun(t, "replay (history for what it left out, then the replay)", append(older, replayed...), since+1, total)
	t.Logf("%v: replay and what it left out read", time.Since(start).Round(time.Millisecond))
	if rp.Last != pos[total-1] {
		t.Errorf("replay last_position %s, want %s", rp.Last, pos[total-1])
	}

	// history limit 1000 of 16 KiB events (16 MiB): paged by bytes, newest first, back to the oldest.
	var back [][]int
	until := ""
	answers := 0
	for {
		params := map[string]any{"limit": 1000}
		if until != "" {
			params["until"] = until
		}
		pg := historyPage(t, reader, room, ch, params)
		answers++
		back = append([][]int{seqs(t, pg.Entries)}, back...)
		if !pg.More {
			break
		}
		if answers > 2000 || pg.NextUntil == "" {
			t.Fatalf("history paging back does not end: more without next_until, or too many pages")
		}
		until = pg.NextUntil
	}
	var all []int
	for _, b := range back {
		all = append(all, b...)
	}
	t.Logf("history back to the oldest: %d answers", answers)
	checkRun(t, "history paged back", all, 0, total)
	t.Logf("%v: history paged", time.Since(start).Round(time.Millisecond))

	// A member that never reads is still cut once live traffic piles up behind it (past what the
	// kernel's socket buffers hold: its receive buffer is made small); the reader, which keeps up, is
	// not.
	idlerID := uniqueName("idler")
	idler := rawDial(t, s, idlerID, nil)
	if tc, ok := idler.nc.(*net.TCPConn); ok {
		_ = tc.SetReadBuffer(8 << 10)
	}
	joinID := client.NewID("cmd")
	idler.write(textFrame([]byte(`{"version":"1.0","id":"` + joinID + `","type":"command","room":"` + room + `","channel":"` + ch +
		`","from":"` + idlerID + `","timestamp":"2025-01-01T12:00:00.000Z","payload":{"command":"join_channel","parameters":{}}}`)))
	waitMembers(t, pub, room, ch, 3)
	const liveEvents = 300 // 16 KiB at 40/s (a pace a race-built reader keeps on a loaded machine): 7.5 s, 4.8 MiB
	live := make(chan []int, 1)
	go func() {
		var got []int
		for len(got) < liveEvents {
			e, err := nextReal(ctx, reader)
			if err != nil {
				break
			}
			if e.Type == "event" {
				got = append(got, seqOf(e))
			}
		}
		live <- got
	}()
	publishPadded(t, pub, room, ch, total, total+liveEvents, 25*time.Millisecond)
	checkRun(t, "live events to the reader", <-live, total, total+liveEvents)
	t.Logf("%v: live events read", time.Since(start).Round(time.Millisecond))
	if n := slowConsumers(t, pub); n != 1 {
		t.Errorf("%d slow consumers closed, want 1 (the member that never reads)", n)
	}
	waitMembers(t, pub, room, ch, 2) // the idler is gone; the publisher and the reader stay
	if err := reader.Err(); err != nil {
		t.Errorf("the reader was disconnected: %v", err)
	}
	busServes(t, s, nil)
	t.Logf("%v: done", time.Since(start).Round(time.Millisecond))
}

func closeCodeOf(c *client.Conn) string {
	code, text := c.CloseCode()
	return fmt.Sprintf("%d %q", code, text)
}

// slowConsumers is status.messages.slow_consumers_closed.
func slowConsumers(t *testing.T, c *client.Conn) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	env, err := c.Command(ctx, "science", "general", "status", nil)
	if err != nil {
		t.Fatalf("status: %v", err)
	}
	var p struct {
		Result struct {
			Messages struct {
				Slow uint64 `json:"slow_consumers_closed"`
			} `json:"messages"`
		} `json:"result"`
	}
	_ = json.Unmarshal(env.Payload, &p)
	return p.Result.Messages.Slow
}

// waitMembers waits until channel_info counts n members.
func waitMembers(t *testing.T, c *client.Conn, room, channel string, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if m, _ := cmdOK(t, c, room, channel, "channel_info", nil).num("member_count"); int(m) == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s:%s never had %d members", room, channel, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
