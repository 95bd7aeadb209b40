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
		{"-scenario", "fanout", "-sub-addrs", "127.0.0.1"},
		{"-scenario", "fanout", "-server-pids", "12,x"},
		{"-scenario", "fanout", "-server-pids", "-3"},
		{"-scenario", "fanout", "-redis-pid", "-1"},
	} {
		var out, errs strings.Builder
		if err := run(args, &out, &errs); err == nil {
			t.Errorf("%q: no error", args)
		}
	}
}

func TestSummarizeShowsCPU(t *testing.T) {
	path := filepath.Join(t.TempDir(), "r.jsonl")
	lines := `{"label":"cluster-3","scenario":"fanout","params":"p","runs":1,"cpu_window_s":3,"server_cpu":[{"pid":1,"cpu_s":1.5},{"pid":2,"cpu_s":0.5},{"pid":3,"cpu_s":0.25}],"server_cpu_s":2.25,"server_cpu_us_per_delivery":7.5,"server_cpu_us_per_msg":750,"gen_cpu_s":2,"redis_pid":9,"redis_cpu_s":0.4}
{"label":"memory","scenario":"fanout","params":"p","runs":1,"cpu_window_s":3,"server_cpu":[{"pid":4,"missing":"open /proc/4/stat: no such file or directory"}],"gen_cpu_s":2}
`
	if err := os.WriteFile(path, []byte(lines), 0o644); err != nil {
		t.Fatal(err)
	}
	var out, errs strings.Builder
	if err := run([]string{"-summarize", path}, &out, &errs); err != nil {
		t.Fatal(err)
	}
	got := out.String()
	for _, want := range []string{"srv µs/deliv", "1.50/0.50/0.25", "7.50", "750.00", "0.40", "2.25", "?"} {
		if !strings.Contains(got, want) {
			t.Errorf("summary lacks %q:\n%s", want, got)
		}
	}
}
