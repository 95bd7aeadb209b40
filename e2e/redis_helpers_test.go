package e2e

// Helpers for the history and persistence tests (issue 4): a redis-server of
// the test's own, raw stream reads, and small wrappers around the history,
// status and ack protocol.

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/arqonbus/arqonbus/client"
	"github.com/arqonbus/arqonbus/internal/redistest"
)

// streamEntry is one stream entry as Redis holds it.
type streamEntry struct {
	ID  string          // stream id = history position
	E   json.RawMessage // field "e": the routed envelope
	Env client.Envelope // E decoded
}

// streamKey is the Redis key of room:channel's history stream.
func streamKey(room, channel string) string {
	return "arqonbus:{" + room + ":" + channel + "}:stream"
}

// xrange reads a whole stream straight from Redis.
func xrange(t testing.TB, r *redistest.Server, key string) []streamEntry {
	t.Helper()
	c := r.Client()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	raw, err := c.Do(ctx, c.B().Xrange().Key(key).Start("-").End("+").Build()).AsXRange()
	if err != nil {
		t.Fatalf("XRANGE %s: %v", key, err)
	}
	out := make([]streamEntry, len(raw))
	for i, x := range raw {
		out[i] = streamEntry{ID: x.ID, E: json.RawMessage(x.FieldValues["e"])}
		if len(x.FieldValues) != 1 || out[i].E == nil {
			t.Errorf("stream %s entry %s: want exactly field e, got %v", key, x.ID, x.FieldValues)
		}
		if err := json.Unmarshal(out[i].E, &out[i].Env); err != nil {
			t.Errorf("stream %s entry %s: field e is not an envelope: %v: %s", key, x.ID, err, out[i].E)
		}
	}
	return out
}

// redisEnv is the server environment for redis storage on r.
func redisEnv(r *redistest.Server, extra ...string) []string {
	return append([]string{"ARQONBUS_STORAGE=redis", "ARQONBUS_REDIS_URL=" + r.URL()}, extra...)
}

// position is a parsed history position "<ms>-<seq>".
type position struct{ ms, seq uint64 }

func parsePosition(s string) (position, bool) {
	a, b, ok := strings.Cut(s, "-")
	if !ok {
		return position{}, false
	}
	ms, err1 := strconv.ParseUint(a, 10, 64)
	seq, err2 := strconv.ParseUint(b, 10, 64)
	return position{ms, seq}, err1 == nil && err2 == nil
}

func (p position) less(q position) bool { return p.ms < q.ms || (p.ms == q.ms && p.seq < q.seq) }

// posLess compares two position strings; unparsable ones compare false.
func posLess(a, b string) bool {
	pa, ok1 := parsePosition(a)
	pb, ok2 := parsePosition(b)
	return ok1 && ok2 && pa.less(pb)
}

// routedMeta is what the server adds under a routed envelope's metadata,
// plus the test's own keys.
type routedMeta struct {
	Position   string `json:"position"`
	ReceivedAt string `json:"received_at"`
	Ack        bool   `json:"ack"`
	N          *int   `json:"n"`
}

func metaOf(env client.Envelope) routedMeta {
	var m routedMeta
	_ = json.Unmarshal(env.Metadata, &m)
	return m
}

// seqOf is payload.n of a test event, -1 if absent.
func seqOf(env client.Envelope) int {
	n := -1
	if !env.PayloadField("n", &n) {
		return -1
	}
	return n
}

// seqEvent builds an event for room:channel with payload {"n":n, "pub":pub}
// and the given metadata (nil for none).
func seqEvent(room, channel string, pub string, n int, meta map[string]any) client.Envelope {
	p, _ := json.Marshal(map[string]any{"n": n, "pub": pub})
	env := client.Envelope{ID: client.NewID("msg"), Type: "event", Room: room, Channel: channel, Payload: p}
	if meta != nil {
		env.Metadata, _ = json.Marshal(meta)
	}
	return env
}

// histEntry is one entry of a history result.
type histEntry struct {
	Position string          `json:"position"`
	Envelope json.RawMessage `json:"envelope"`
}

type histResult struct {
	Room    string      `json:"room"`
	Channel string      `json:"channel"`
	Count   int         `json:"count"`
	Entries []histEntry `json:"entries"`
}

// history runs the history command, which must succeed.
func history(t *testing.T, c *client.Conn, room, channel string, params map[string]any) histResult {
	t.Helper()
	r := cmdOK(t, c, room, channel, "history", params)
	raw, _ := json.Marshal(r)
	var h histResult
	if err := json.Unmarshal(raw, &h); err != nil {
		t.Fatalf("history result: %v: %s", err, raw)
	}
	if h.Room != room || h.Channel != channel || h.Count != len(h.Entries) {
		t.Errorf("history %v: room/channel/count wrong: %s", params, raw)
	}
	for i, e := range h.Entries {
		var env client.Envelope
		if err := json.Unmarshal(e.Envelope, &env); err != nil {
			t.Errorf("history %v: entry %d envelope: %v", params, i, err)
			continue
		}
		if m := metaOf(env); m.Position != e.Position {
			t.Errorf("history %v: entry %d position %q but its envelope's metadata.position is %q", params, i, e.Position, m.Position)
		}
	}
	return h
}

// storageStatus is status.result.storage.
type storageStatus struct {
	Mode    string `json:"mode"`
	Health  string `json:"health"`
	Backlog int    `json:"backlog"`
	Dropped uint64 `json:"dropped"`
	Written uint64 `json:"written"`
}

// getStorage asks status for the storage state. It returns false (without
// failing the test) when no answer came in time.
func getStorage(c *client.Conn, d time.Duration) (storageStatus, bool) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	env, err := c.Command(ctx, "science", "general", "status", nil)
	if err != nil {
		return storageStatus{}, false
	}
	var p struct {
		Result struct {
			Storage storageStatus `json:"storage"`
		} `json:"result"`
	}
	if json.Unmarshal(env.Payload, &p) != nil {
		return storageStatus{}, false
	}
	return p.Result.Storage, true
}

// waitStorage polls status until cond holds; it returns the last state seen.
func waitStorage(t *testing.T, c *client.Conn, timeout time.Duration, what string, cond func(storageStatus) bool) storageStatus {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last storageStatus
	for {
		st, ok := getStorage(c, 2*time.Second)
		if ok {
			last = st
			if cond(st) {
				return st
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for storage %s; last status.storage %+v", timeout, what, last)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// ackResult is the result of an event's ack.
type ackResult struct {
	Routed    bool   `json:"routed"`
	Delivered int    `json:"delivered"`
	Position  string `json:"position"`
	Persisted bool   `json:"persisted"`
}

// parseAck decodes an ack command_response (ok) or an error answer.
func parseAck(env client.Envelope) (ackResult, *client.Error) {
	if e := client.AsError(env); e != nil {
		return ackResult{}, e
	}
	var p struct {
		Status string    `json:"status"`
		Result ackResult `json:"result"`
	}
	_ = json.Unmarshal(env.Payload, &p)
	return p.Result, nil
}
