package persist

import (
	"math"
	"testing"
	"time"
)

func TestPositionParseAndString(t *testing.T) {
	tests := []struct {
		in   string
		want Position
		ok   bool
		text string // String() of the result when ok
	}{
		{"1700000000000-3", Position{1700000000000, 3}, true, "1700000000000-3"},
		{"1700000000000", Position{1700000000000, 0}, true, "1700000000000-0"},
		{"0-1", Position{0, 1}, true, "0-1"},
		{"18446744073709551615-18446744073709551615", Position{math.MaxUint64, math.MaxUint64}, true, "18446744073709551615-18446744073709551615"},
		{"007-01", Position{7, 1}, true, "7-1"},
		{"", Position{}, false, ""},
		{"-", Position{}, false, ""},
		{"1-", Position{}, false, ""},
		{"-1", Position{}, false, ""},
		{"+1-2", Position{}, false, ""},
		{"1-+2", Position{}, false, ""},
		{"1-2-3", Position{}, false, ""},
		{" 1-2", Position{}, false, ""},
		{"1_000-2", Position{}, false, ""},
		{"0x10-1", Position{}, false, ""},
		{"18446744073709551616-0", Position{}, false, ""},
		{"2024-05-01T12:00:00Z", Position{}, false, ""},
	}
	for _, tt := range tests {
		got, ok := ParsePosition(tt.in)
		if ok != tt.ok || got != tt.want {
			t.Errorf("ParsePosition(%q) = %v, %v; want %v, %v", tt.in, got, ok, tt.want, tt.ok)
			continue
		}
		if ok && got.String() != tt.text {
			t.Errorf("ParsePosition(%q).String() = %q; want %q", tt.in, got.String(), tt.text)
		}
	}
	if got := string(Position{12, 34}.AppendTo([]byte("at "))); got != "at 12-34" {
		t.Errorf("AppendTo = %q", got)
	}
}

func TestPositionLess(t *testing.T) {
	tests := []struct {
		a, b Position
		less bool
	}{
		{Position{1, 0}, Position{1, 1}, true},
		{Position{1, 5}, Position{2, 0}, true},
		{Position{2, 0}, Position{1, 5}, false},
		{Position{1, 1}, Position{1, 1}, false},
		{Position{}, Position{0, 1}, true},
	}
	for _, tt := range tests {
		if got := tt.a.Less(tt.b); got != tt.less {
			t.Errorf("%v.Less(%v) = %v; want %v", tt.a, tt.b, got, tt.less)
		}
	}
}

func TestClock(t *testing.T) {
	ms := func(m int64) time.Time { return time.UnixMilli(m) }
	type step struct {
		observe *Position // Observe instead of Next
		now     time.Time
		want    Position
	}
	p := func(ms, seq uint64) *Position { return &Position{ms, seq} }
	tests := []struct {
		name  string
		steps []step
	}{
		{"new millisecond starts at seq 0", []step{
			{now: ms(1000), want: Position{1000, 0}},
			{now: ms(1001), want: Position{1001, 0}},
		}},
		{"same millisecond counts up", []step{
			{now: ms(1000), want: Position{1000, 0}},
			{now: ms(1000), want: Position{1000, 1}},
			{now: ms(1000), want: Position{1000, 2}},
		}},
		{"clock going back never goes back", []step{
			{now: ms(1000), want: Position{1000, 0}},
			{now: ms(900), want: Position{1000, 1}},
			{now: ms(1000), want: Position{1000, 2}},
			{now: ms(1001), want: Position{1001, 0}},
		}},
		{"seeded after restart", []step{
			{observe: p(5000, 7)},
			{now: ms(4000), want: Position{5000, 8}},
			{now: ms(5000), want: Position{5000, 9}},
			{now: ms(6000), want: Position{6000, 0}},
		}},
		{"observing an older position changes nothing", []step{
			{now: ms(1000), want: Position{1000, 0}},
			{observe: p(10, 10)},
			{now: ms(1000), want: Position{1000, 1}},
		}},
		{"never 0-0", []step{
			{now: ms(0), want: Position{0, 1}},
			{now: ms(-5), want: Position{0, 2}},
		}},
	}
	for _, tt := range tests {
		var c Clock
		for i, s := range tt.steps {
			if s.observe != nil {
				c.Observe(*s.observe)
				continue
			}
			if got := c.Next(s.now); got != s.want {
				t.Errorf("%s: step %d: Next = %v; want %v", tt.name, i, got, s.want)
			}
		}
	}
}

func TestParseBound(t *testing.T) {
	ts := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		in      string
		want    Bound
		wantErr bool
	}{
		{"", Bound{}, false},
		{"1700000000000-3", AtPosition(Position{1700000000000, 3}), false},
		{"1700000000000", AtPosition(Position{1700000000000, 0}), false},
		{"2024-05-01T12:00:00Z", AtTime(ts), false},
		{"2024-05-01T14:00:00+02:00", AtTime(ts), false},
		{"2024-05-01T12:00:00.250Z", AtTime(ts.Add(250 * time.Millisecond)), false},
		{"yesterday", Bound{}, true},
		{"2024-05-01", Bound{}, true},
		{"1-2-3", Bound{}, true},
		{"-5", Bound{}, true},
	}
	for _, tt := range tests {
		got, err := ParseBound(tt.in)
		if (err != nil) != tt.wantErr {
			t.Errorf("ParseBound(%q) error = %v; want error %v", tt.in, err, tt.wantErr)
			continue
		}
		if err != nil {
			continue
		}
		if got.IsSet != tt.want.IsSet || got.Pos != tt.want.Pos || !got.Time.Equal(tt.want.Time) {
			t.Errorf("ParseBound(%q) = %+v; want %+v", tt.in, got, tt.want)
		}
	}
	if _, err := ParseBound("soon"); err == nil || err.Error() != `invalid history bound "soon": want a position like "1700000000000-3" or an RFC 3339 time like "2024-05-01T12:00:00Z"` {
		t.Errorf("error text: %v", err)
	}
}
