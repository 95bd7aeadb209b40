package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestFreePorts(t *testing.T) {
	var out, errs strings.Builder
	if err := run([]string{"-free-ports", "3"}, &out, &errs); err != nil {
		t.Fatal(err)
	}
	ports := strings.Fields(out.String())
	if len(ports) != 3 || ports[0] == ports[1] || ports[1] == ports[2] || ports[0] == ports[2] {
		t.Errorf("ports %q, want 3 distinct", ports)
	}
}

func TestSummarizeFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "r.jsonl")
	lines := `{"scenario":"fanout","params":"subs=1 pubs=1 rate=10","runs":1,"p99_ms":4,"lost":0}
{"scenario":"fanout","params":"subs=1 pubs=1 rate=10","runs":1,"p99_ms":2,"lost":3,"first_error":"FORBIDDEN: no"}
{"scenario":"fanout","params":"subs=1 pubs=1 rate=10","runs":1,"p99_ms":8,"lost":1}
`
	if err := os.WriteFile(path, []byte(lines), 0o644); err != nil {
		t.Fatal(err)
	}
	var out, errs strings.Builder
	if err := run([]string{"-summarize", path}, &out, &errs); err != nil {
		t.Fatal(err)
	}
	got := out.String()
	for _, want := range []string{"subs=1 pubs=1 rate=10", " 3 ", "4.00", "first error: FORBIDDEN: no"} {
		if !strings.Contains(got, want) {
			t.Errorf("summary lacks %q:\n%s", want, got)
		}
	}
}

func TestRefusesBadRuns(t *testing.T) {
	for _, args := range [][]string{
		{"-scenario", "idle", "-conns", "30000"},
		{"-scenario", "bogus"},
		{},
		{"-scenario", "fanout", "-src-ips", "10.1.1.1"},
	} {
		var out, errs strings.Builder
		if err := run(args, &out, &errs); err == nil {
			t.Errorf("%q: no error", args)
		}
	}
}
