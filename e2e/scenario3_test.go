package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/arqonbus/arqonbus/client"
)

// TestScenario3Filters runs the quickstart's Scenario 3: research_agent_1
// publishes the seed's agent message (verbatim) on research:coordination;
// members joined with a metadata filter receive only the events whose
// metadata or payload.metadata hold every pair of their filter, members
// without a filter receive everything. Events keep their order, so a member
// whose received ids are exactly its expected sequence, ending with an event
// sent after all the ones it must not get, proves the negatives too.
func TestScenario3Filters(t *testing.T) {
	s := startServer(t)
	ctx := testCtx(t, 15*time.Second)
	const room, ch = "research", "coordination"
	seed := bytes.TrimSpace(readTestdata(t, "scenario3-agent.json"))

	agent := dial(t, s, client.WithClientID("research_agent_1"),
		client.WithParam("client_type", "ai-agent"), client.WithParam("personality", "analytical"))
	cmdOK(t, agent, room, ch, "join_channel", nil)

	type member struct {
		name   string
		filter map[string]any
		want   []string // ids of the events it must receive, in order
		c      *client.Conn
	}
	members := []*member{
		{name: "observer", want: []string{"arq_agent_001", "arq_s3_e1", "arq_s3_e2", "arq_s3_e3", "arq_s3_e4", "arq_s3_e5", "arq_s3_e6"}},
		{name: "analyst", filter: map[string]any{"personality": "analytical"}, want: []string{"arq_agent_001", "arq_s3_e2", "arq_s3_e3", "arq_s3_e5"}},
		{name: "urgent_analyst", filter: map[string]any{"personality": "analytical", "priority": "high"}, want: []string{"arq_agent_001", "arq_s3_e3"}},
		{name: "creative", filter: map[string]any{"personality": "creative"}, want: []string{"arq_s3_e1", "arq_s3_e4"}},
		{name: "relaxed_analyst", filter: map[string]any{"personality": "analytical", "priority": "low"}, want: []string{"arq_s3_e2", "arq_s3_e5"}},
		// JSON equality: the number 2 matches 2, not "2".
		{name: "level_two", filter: map[string]any{"level": 2}, want: []string{"arq_s3_e3", "arq_s3_e6"}},
	}
	for _, m := range members {
		m.c = dial(t, s, client.WithClientID("s3_"+m.name), client.WithParam("client_type", "ai-agent"))
		var params map[string]any
		if m.filter != nil {
			params = map[string]any{"filter": m.filter}
		}
		r := cmdOK(t, m.c, room, ch, "join_channel", params)
		if j, ok := r.boolean("joined"); !ok || !j {
			t.Errorf("%s: join_channel result without joined:true: %v", m.name, r)
		}
	}

	// E0: the seed's message, verbatim (payload.metadata analytical, high).
	if err := agent.SendRaw(seed); err != nil {
		t.Fatal(err)
	}
	// E1..E6: sentinels with metadata at the top level or under payload.
	sentinels := []struct {
		id              string
		payloadMetadata map[string]any
		metadata        map[string]any
	}{
		{"arq_s3_e1", map[string]any{"personality": "creative", "priority": "low"}, nil},
		{"arq_s3_e2", nil, map[string]any{"personality": "analytical", "priority": "low"}},
		{"arq_s3_e3", map[string]any{"personality": "analytical", "priority": "high", "level": 2}, nil},
		{"arq_s3_e4", nil, map[string]any{"personality": "creative", "level": "2"}},
		{"arq_s3_e5", nil, map[string]any{"personality": "analytical", "priority": "low"}},
		{"arq_s3_e6", nil, map[string]any{"level": 2}},
	}
	for _, e := range sentinels {
		payload := map[string]any{"message": "sentinel " + e.id}
		if e.payloadMetadata != nil {
			payload["metadata"] = e.payloadMetadata
		}
		p, _ := json.Marshal(payload)
		env := client.Envelope{ID: e.id, Type: "event", Room: room, Channel: ch, Payload: p}
		if e.metadata != nil {
			env.Metadata, _ = json.Marshal(e.metadata)
		}
		if err := agent.Send(env); err != nil {
			t.Fatal(err)
		}
	}

	for _, m := range members {
		var got []string
		for len(got) < len(m.want) {
			env, err := nextReal(ctx, m.c)
			if err != nil {
				t.Errorf("%s (filter %v): stopped after %v, want %v: %v", m.name, m.filter, got, m.want, err)
				break
			}
			if env.Type != "event" {
				t.Errorf("%s: unexpected %s", m.name, env.Raw)
				continue
			}
			got = append(got, env.ID)
			if env.ID == "arq_agent_001" && !jsonEqualIgnoringMetadata(env.Raw, seed) {
				t.Errorf("%s: the agent's message arrived altered:\nsent %s\ngot  %s", m.name, seed, env.Raw)
			}
		}
		if fmt.Sprint(got) != fmt.Sprint(m.want) {
			t.Errorf("%s (filter %v) received %v, want %v", m.name, m.filter, got, m.want)
		}
	}
	// The publisher does not get its own events back.
	expectNothing(t, agent, 100*time.Millisecond, "publisher of the agent messages")

	// channel_info lists the filtered members like any other.
	info := cmdOK(t, agent, room, ch, "channel_info", nil)
	if n, _ := info.num("member_count"); int(n) != len(members)+1 {
		t.Errorf("channel_info member_count %v, want %d", n, len(members)+1)
	}
	if !strings.Contains(string(info["members"]), "s3_analyst") {
		t.Errorf("channel_info members lack s3_analyst: %s", info["members"])
	}
}

// TestFilterValidation: a filter that is not an object is refused.
func TestFilterValidation(t *testing.T) {
	s := startServer(t)
	c := dial(t, s, client.WithClientID("filter_bad"))
	cmdErr(t, c, "research", "coordination", "join_channel", map[string]any{"filter": "analytical"}, "VALIDATION_ERROR", "")
	cmdErr(t, c, "research", "coordination", "join_channel", map[string]any{"handles": "status"}, "VALIDATION_ERROR", "")
	busServes(t, s, nil)
}
