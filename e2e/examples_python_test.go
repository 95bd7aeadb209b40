package e2e

import (
	"strings"
	"testing"
	"time"
)

// TestExamplePythonAgents runs examples/agents/agents.py (quickstart Scenario
// 3 with the Python SDK) against the real server and checks its output: each
// agent receives exactly what its personality filter lets through, the
// private messages arrive, the monitor sees the whole channel, and the server
// reported agent_activity for both agents on integriguard:dashboard-events.
func TestExamplePythonAgents(t *testing.T) {
	requirePython(t)
	s := startServer(t)
	ctx := testCtx(t, 60*time.Second)
	p := startPython(t, ctx, s, "examples/agents/agents.py", "ARQONBUS_URL="+s.URL)
	err := p.cmd.Wait()
	p.waited = true
	out := p.out.String()
	if err != nil {
		t.Fatalf("agents.py: %v\n%s\nstderr:\n%s", err, out, p.stderr.String())
	}
	want := []string{
		// The analyst (filter personality=creative) hears the creative agent only.
		"research_agent_1 <- research_agent_2 [creative/medium/10_minutes]: Three hypotheses to test",
		"research_agent_1 <- research_agent_2 [creative/medium/2_minutes]: Drafting the summary for the team",
		// The creative agent (personality=analytical, priority=high) hears the
		// quickstart's message and the result, not the low-priority note.
		"research_agent_2 <- research_agent_1 [analytical/high/5_minutes]: Starting analysis phase",
		"research_agent_2 <- research_agent_1 [analytical/high/done]: Analysis complete",
		// Private messages both ways.
		"research_agent_2 <- research_agent_1 (private): Hypothesis B conflicts",
		"research_agent_1 <- research_agent_2 (private): Reworked B as B'",
		// The unfiltered monitor saw the note that the filter withheld.
		"research_agent_1 [analytical/low]: Progress: 40% of the dataset scanned",
		"channel messages: 5; analyst heard 2",
		"creative heard 2",
		"exchange complete",
	}
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("output lacks %q", w)
		}
	}
	for _, unwanted := range []string{"research_agent_2 <- research_agent_1 [analytical/low", "research_agent_1 <- research_agent_1"} {
		if strings.Contains(out, unwanted) {
			t.Errorf("output has %q: a filter let it through", unwanted)
		}
	}
	for _, agent := range []string{"research_agent_1", "research_agent_2"} {
		line := "agent_activity on integriguard:dashboard-events for " + agent + ": "
		i := strings.Index(out, line)
		if i < 0 {
			t.Errorf("no agent_activity line for %s", agent)
			continue
		}
		rest := out[i+len(line):]
		rest, _, _ = strings.Cut(rest, "\n")
		for _, act := range []string{"joined", "published", "private"} {
			if !strings.Contains(rest, "'"+act+"'") {
				t.Errorf("%s: agent_activity lacks %s: %s", agent, act, rest)
			}
		}
	}
	if t.Failed() {
		t.Logf("output:\n%s", out)
	}
}
