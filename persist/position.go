package persist

import (
	"math"
	"strconv"
	"strings"
	"time"
)

// Position is a history position: a Redis stream id "<unix ms>-<seq>". Positions are strictly increasing
// per channel. The zero Position ("0-0") is never assigned and means "none".
type Position struct {
	Ms, Seq uint64
}

// String formats p as "<ms>-<seq>", e.g. "1700000000000-3".
func (p Position) String() string {
	var b [41]byte
	return string(p.AppendTo(b[:0]))
}

// AppendTo appends p's text form to dst and returns the extended slice.
func (p Position) AppendTo(dst []byte) []byte {
	dst = strconv.AppendUint(dst, p.Ms, 10)
	dst = append(dst, '-')
	return strconv.AppendUint(dst, p.Seq, 10)
}

// IsZero reports whether p is the zero Position.
func (p Position) IsZero() bool { return p.Ms == 0 && p.Seq == 0 }

// Less reports whether p comes before q.
func (p Position) Less(q Position) bool {
	return p.Ms < q.Ms || (p.Ms == q.Ms && p.Seq < q.Seq)
}

// Time returns the wall-clock millisecond p was assigned at.
func (p Position) Time() time.Time {
	if p.Ms > math.MaxInt64 {
		return time.UnixMilli(math.MaxInt64)
	}
	return time.UnixMilli(int64(p.Ms))
}

// next returns the smallest position after p, and false if p is the largest position.
func (p Position) next() (Position, bool) {
	switch {
	case p.Seq < math.MaxUint64:
		return Position{p.Ms, p.Seq + 1}, true
	case p.Ms < math.MaxUint64:
		return Position{p.Ms + 1, 0}, true
	default:
		return p, false
	}
}

// ParsePosition parses "<ms>-<seq>" or a bare "<ms>" (seq 0). Both parts are unsigned decimal numbers
// without sign or spaces.
func ParsePosition(s string) (Position, bool) {
	msText, seqText, hasSeq := strings.Cut(s, "-")
	ms, ok := parseDecimal(msText)
	if !ok {
		return Position{}, false
	}
	if !hasSeq {
		return Position{Ms: ms}, true
	}
	seq, ok := parseDecimal(seqText)
	if !ok {
		return Position{}, false
	}
	return Position{Ms: ms, Seq: seq}, true
}

func parseDecimal(s string) (uint64, bool) {
	if s == "" || s[0] < '0' || s[0] > '9' {
		return 0, false
	}
	v, err := strconv.ParseUint(s, 10, 64)
	return v, err == nil
}

// Clock makes strictly increasing positions for one channel: the millisecond is max(now, last ms), and the
// sequence counts up within a millisecond, so a clock that steps back never produces an older position.
// A Clock is not safe for concurrent use: the caller holds the channel's lock. After a restart, seed it
// with Observe(the channel's last stored position) before the first Next.
type Clock struct {
	last Position
}

// Next returns the channel's next position for an event published at now.
func (c *Clock) Next(now time.Time) Position {
	var ms uint64
	if m := now.UnixMilli(); m > 0 {
		ms = uint64(m)
	}
	if ms > c.last.Ms {
		c.last = Position{Ms: ms}
	} else if n, ok := c.last.next(); ok {
		c.last = n
	}
	if c.last.IsZero() { // "0-0" is not a valid stream id
		c.last.Seq = 1
	}
	return c.last
}

// Observe makes every later Next greater than p.
func (c *Clock) Observe(p Position) {
	if c.last.Less(p) {
		c.last = p
	}
}

// Last returns the last position made or observed.
func (c *Clock) Last() Position { return c.last }
