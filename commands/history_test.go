package commands

import (
	"fmt"
	"strings"
	"testing"
)

func entriesN(from, n, size int) []HistoryEntry {
	out := make([]HistoryEntry, n)
	for i := range out {
		out[i] = HistoryEntry{Position: fmt.Sprintf("1700000000%03d-0", from+i), Envelope: []byte(`{"x":"` + strings.Repeat("a", size) + `"}`)}
	}
	return out
}

func positions(es []HistoryEntry) string {
	var s []string
	for _, e := range es {
		s = append(s, e.Position[len(e.Position)-5:])
	}
	return strings.Join(s, ",")
}

func TestPageHistory(t *testing.T) {
	cases := []struct {
		name                 string
		entries              []HistoryEntry
		limit                int
		since                bool
		budget               int
		want                 string
		more                 bool
		nextSince, nextUntil string
	}{
		{"all fit", entriesN(0, 3, 10), 5, true, 0, "000-0,001-0,002-0", false, "", ""},
		{"limit, since: oldest", entriesN(0, 4, 10), 3, true, 0, "000-0,001-0,002-0", true, "1700000000002-0", ""},
		{"limit, newest", entriesN(0, 4, 10), 3, false, 0, "001-0,002-0,003-0", true, "", "1700000000000-18446744073709551615"},
		{"budget, since", entriesN(0, 5, 100), 10, true, 400, "000-0,001-0", true, "1700000000001-0", ""},
		{"budget, newest", entriesN(0, 5, 100), 10, false, 400, "003-0,004-0", true, "", "1700000000002-18446744073709551615"},
		{"one too big still goes", entriesN(0, 2, 1000), 10, true, 100, "000-0", true, "1700000000000-0", ""},
		{"empty", nil, 10, true, 100, "", false, "", ""},
		{"largest limit full", entriesN(0, 1000, 1), 1000, true, 0, "", true, "1700000000999-0", ""},
	}
	for _, c := range cases {
		pg := pageHistory(c.entries, c.limit, c.since, c.budget)
		got := positions(pg.entries)
		if c.name == "largest limit full" {
			got = ""
		}
		if got != c.want || pg.more != c.more || pg.nextSince != c.nextSince || pg.nextUntil != c.nextUntil {
			t.Errorf("%s: got %s more=%v since=%q until=%q; want %s more=%v since=%q until=%q",
				c.name, got, pg.more, pg.nextSince, pg.nextUntil, c.want, c.more, c.nextSince, c.nextUntil)
		}
	}
}
