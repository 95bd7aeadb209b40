package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/arqonbus/arqonbus/client"
	"github.com/arqonbus/arqonbus/internal/redistest"
)

// resumeTokenOf is the resume_token of c's welcome.
func resumeTokenOf(t *testing.T, c *client.Conn) string {
	t.Helper()
	var tok string
	if !c.Welcome().PayloadField("resume_token", &tok) || tok == "" {
		t.Fatalf("welcome has no resume_token: %s", c.Welcome().Raw)
	}
	return tok
}

// expectConflict dials id (with opts) and wants CONFLICT instead of a welcome.
func expectConflict(t *testing.T, s *server, id string, opts ...client.Option) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, s.URL, append([]client.Option{client.WithClientID(id)}, opts...)...)
	if err == nil {
		c.Close()
		t.Fatalf("a second connection as %s was welcomed, want CONFLICT", id)
	}
	var e *client.Error
	if !errors.As(err, &e) || e.Code != "CONFLICT" {
		t.Fatalf("a second connection as %s: %v, want CONFLICT", id, err)
	}
}

// expectReplaced waits for old to be closed by the server with 1008.
func expectReplaced(t *testing.T, old *client.Conn) {
	t.Helper()
	select {
	case <-old.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the old connection is still open after its id was taken over")
	}
	if code, _ := old.CloseCode(); code != 1008 {
		t.Errorf("the old connection closed with %d, want 1008", code)
	}
}

// TestResumeToken: a connection presenting the resume token of its id takes the id over from a live
// connection at once; without it, or with another id's token, CONFLICT as before.
func TestResumeToken(t *testing.T) {
	s := startServer(t)
	ctx := testCtx(t, 20*time.Second)
	id, other := uniqueName("resumer"), uniqueName("other")
	old := dial(t, s, client.WithClientID(id))
	tok := resumeTokenOf(t, old)
	if err := old.Join(ctx, "science", "general"); err != nil {
		t.Fatal(err)
	}
	otherConn := dial(t, s, client.WithClientID(other))
	otherTok := resumeTokenOf(t, otherConn)
	if otherTok == tok {
		t.Fatal("two ids got the same resume token")
	}

	expectConflict(t, s, id)
	expectConflict(t, s, id, client.WithParam("resume_token", otherTok))
	expectConflict(t, s, id, client.WithParam("resume_token", tok[:len(tok)-1]+"x"))
	select {
	case <-old.Done():
		t.Fatal("a refused claim closed the live connection")
	default:
	}

	fresh := dial(t, s, client.WithClientID(id), client.WithParam("resume_token", tok))
	expectReplaced(t, old)
	if fresh.ClientID() != id {
		t.Fatalf("the resumed connection is %q, want %q", fresh.ClientID(), id)
	}
	if again := resumeTokenOf(t, fresh); again != tok {
		t.Errorf("the token changed across connections of one id: %q, then %q", tok, again)
	}
	// The old connection's memberships go with it. The server forgets a session when its socket
	// closes, which for a closed peer that lingers can be up to 2 s after the close frame the client
	// already saw (the engine's close linger): wait that long, no longer.
	deadline := time.Now().Add(4 * time.Second)
	for {
		info := cmdOK(t, fresh, "science", "general", "channel_info", nil)
		member := false
		for _, m := range info.list("members") {
			member = member || m.str("client_id") == id
		}
		if !member {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the replaced connection is still a member 4 s after the takeover")
		}
		time.Sleep(50 * time.Millisecond)
	}
	// And the new connection is fully the client: private messages reach it.
	if err := otherConn.Send(client.Envelope{ID: client.NewID("pm"), Type: "private", Room: "science", Channel: "general",
		Payload: json.RawMessage(`{"target":"` + id + `","message":"hi"}`)}); err != nil {
		t.Fatal(err)
	}
	if _, err := fresh.Expect(ctx, func(e client.Envelope) bool { return e.Type == "private" }); err != nil {
		t.Fatalf("the resumed connection did not get a private message: %v", err)
	}
}

// TestResumeTokenAcrossNodes: a token a node handed out takes the id over on another node of the
// cluster (the key is shared through Redis); without it, CONFLICT.
func TestResumeTokenAcrossNodes(t *testing.T) {
	r := redistest.Run(t)
	nodes := startNodes(t, r.URL(), 2)
	id := uniqueName("roamer")
	old := dial(t, nodes[0], client.WithClientID(id))
	tok := resumeTokenOf(t, old)
	expectConflict(t, nodes[1], id)
	fresh := dial(t, nodes[1], client.WithClientID(id), client.WithParam("resume_token", tok))
	expectReplaced(t, old)
	if again := resumeTokenOf(t, fresh); again != tok {
		t.Errorf("the nodes hand out different tokens for one id: %q and %q", tok, again)
	}
}

// TestJoinPosition: join_channel answers the channel's newest position, so that a member that has seen
// no event can resume exactly from the join.
func TestJoinPosition(t *testing.T) {
	s := startServer(t)
	ctx := testCtx(t, 20*time.Second)
	room, ch := "pos", uniqueName("ch")
	pub := dial(t, s, client.WithClientID(uniqueName("pub")))
	res := cmdOK(t, pub, room, ch, "join_channel", nil)
	if got := res.str("position"); got != "0-0" {
		t.Fatalf("a new channel's join position is %q, want 0-0: %v", got, res)
	}
	var last string
	for i := 0; i < 3; i++ {
		e := seqEvent(room, ch, "p", i, map[string]any{"ack": true})
		if err := pub.Send(e); err != nil {
			t.Fatal(err)
		}
		env, err := pub.Expect(ctx, func(x client.Envelope) bool { return x.RequestID() == e.ID })
		if err != nil {
			t.Fatal(err)
		}
		a, ae := parseAck(env)
		if ae != nil {
			t.Fatalf("ack: %s", env.Raw)
		}
		last = a.Position
	}
	sub := dial(t, s, client.WithClientID(uniqueName("sub")))
	res = cmdOK(t, sub, room, ch, "join_channel", nil)
	at := res.str("position")
	if at != last {
		t.Fatalf("join position %q, want the newest event's %q", at, last)
	}
	// Gone, then back with since = the join's position: exactly what was published meanwhile.
	sub.Close()
	for i := 3; i < 5; i++ {
		if err := pub.Send(seqEvent(room, ch, "p", i, nil)); err != nil {
			t.Fatal(err)
		}
	}
	cmdOK(t, pub, room, ch, "ping", nil) // the events are routed once this is answered
	back := dial(t, s, client.WithClientID(uniqueName("sub2")))
	got, answer := joinReplay(t, ctx, back, room, ch, map[string]any{"since": at})
	var p struct {
		Result struct {
			Position string `json:"position"`
			Replay   struct {
				Replayed int  `json:"replayed"`
				Complete bool `json:"complete"`
			} `json:"replay"`
		} `json:"result"`
	}
	_ = json.Unmarshal(answer.Payload, &p)
	if p.Result.Replay.Replayed != 2 || !p.Result.Replay.Complete || !posLess(at, p.Result.Position) {
		t.Errorf("resumed join: %s", answer.Payload)
	}
	if len(got) != 2 || got[0] != 3 || got[1] != 4 {
		t.Errorf("replayed %v before the join's answer, want [3 4]", got)
	}
}

// TestVersionIsStamped: /version names the commit the binary was built from and when, as the Makefile
// stamps it (scripts/ldflags.sh; TestMain builds the same way).
func TestVersionIsStamped(t *testing.T) {
	s := startServer(t)
	resp, err := http.Get(s.HTTPURL + "/version")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var v struct {
		Commit    string `json:"commit"`
		BuildDate string `json:"build_date"`
	}
	if err := json.Unmarshal(body, &v); err != nil {
		t.Fatalf("/version: %v: %s", err, body)
	}
	built, err := time.Parse(time.RFC3339, v.BuildDate)
	if err != nil || time.Since(built) > time.Hour || time.Until(built) > time.Minute {
		t.Errorf("/version build_date %q is not this build's time", v.BuildDate)
	}
	if builtHead == "" {
		t.Logf("not a git checkout: commit %q not compared", v.Commit)
		return
	}
	if want := builtHead; strings.TrimSuffix(v.Commit, "-dirty") != want {
		t.Errorf("/version commit %q, want %q (git HEAD)", v.Commit, want)
	}
}

// TestReplayIsWhatLiveWouldHaveSent: a since replay applies the member's filter and leaves out the
// member's own events, as live delivery does, so a resumed subscriber sees each event once and only
// those it subscribed to.
func TestReplayIsWhatLiveWouldHaveSent(t *testing.T) {
	s := startServer(t)
	ctx := testCtx(t, 20*time.Second)
	room, ch := "replayf", uniqueName("ch")
	id := uniqueName("me")
	pub := dial(t, s, client.WithClientID(uniqueName("pub")))
	me := dial(t, s, client.WithClientID(id))
	filter := map[string]any{"filter": map[string]any{"kind": "x"}}
	at := cmdOK(t, me, room, ch, "join_channel", filter).str("position")
	cmdOK(t, pub, room, ch, "join_channel", nil)
	// Published while "me" is a member, and while it is away, in the order 0..5: "me" must get
	// exactly pub's x events.
	send := func(c *client.Conn, n int, kind string) {
		t.Helper()
		if err := c.Send(seqEvent(room, ch, "p", n, map[string]any{"kind": kind})); err != nil {
			t.Fatal(err)
		}
	}
	send(pub, 0, "x")
	send(me, 1, "x")  // its own
	send(pub, 2, "y") // filtered out
	cmdOK(t, pub, room, ch, "ping", nil)
	cmdOK(t, me, room, ch, "ping", nil)
	me.Close()
	send(pub, 3, "x")
	send(pub, 4, "y")
	cmdOK(t, pub, room, ch, "ping", nil)
	back := dial(t, s, client.WithClientID(id))
	params := map[string]any{"since": at, "filter": map[string]any{"kind": "x"}}
	got, answer := joinReplay(t, ctx, back, room, ch, params)
	if !strings.Contains(string(answer.Payload), `"replayed":2`) {
		t.Errorf("join answer: %s", answer.Payload)
	}
	if len(got) != 2 || got[0] != 0 || got[1] != 3 {
		t.Errorf("replayed %v, want [0 3] (pub's x events: not its own, not y)", got)
	}
}

// joinReplay joins room:channel with params and returns the sequence numbers of the events that
// came before the join's answer (the replay), and the answer.
func joinReplay(t *testing.T, ctx context.Context, c *client.Conn, room, channel string, params map[string]any) ([]int, client.Envelope) {
	t.Helper()
	id, err := sendCommand(c, room, channel, "join_channel", params)
	if err != nil {
		t.Fatal(err)
	}
	var got []int
	for {
		env, err := c.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if env.Type == "event" {
			got = append(got, seqOf(env))
			continue
		}
		if env.RequestID() == id {
			return got, env
		}
	}
}
