package persist

import (
	"fmt"
	"math"
	"time"
)

// Limits of Query.Limit.
const (
	DefaultLimit = 50
	MaxLimit     = 1000
)

// Bound is one end of a history query: a position or a time. The zero Bound is unset (open).
//
// Times resolve to whole milliseconds, the resolution of positions, and a time bound includes its whole
// millisecond: Since t means entries at or after t's millisecond, Until t entries at or before it.
// Position bounds are exact: Since p means entries after p (the client passes the last position it saw),
// Until p entries up to and including p.
type Bound struct {
	Pos   Position
	Time  time.Time // a time bound when IsSet and Time is not zero; Pos is then ignored
	IsSet bool
}

// AtPosition returns a position bound.
func AtPosition(p Position) Bound { return Bound{Pos: p, IsSet: true} }

// AtTime returns a time bound.
func AtTime(t time.Time) Bound { return Bound{Time: t, IsSet: true} }

// IsTime reports whether b is a time bound.
func (b Bound) IsTime() bool { return b.IsSet && !b.Time.IsZero() }

// String returns b as ParseBound accepts it, or "" when unset.
func (b Bound) String() string {
	switch {
	case !b.IsSet:
		return ""
	case b.IsTime():
		return b.Time.Format(time.RFC3339Nano)
	default:
		return b.Pos.String()
	}
}

// ParseBound parses a history bound: a position ("1700000000000-3", or a bare millisecond count
// "1700000000000") or an RFC 3339 time ("2024-05-01T12:00:00Z", fractions allowed). An empty string
// yields an unset Bound.
func ParseBound(s string) (Bound, error) {
	if s == "" {
		return Bound{}, nil
	}
	if p, ok := ParsePosition(s); ok {
		return AtPosition(p), nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return AtTime(t), nil
	}
	if len(s) > 64 {
		s = s[:64] + "…"
	}
	return Bound{}, fmt.Errorf("invalid history bound %q: want a position like \"1700000000000-3\" or an RFC 3339 time like \"2024-05-01T12:00:00Z\"", s)
}

// Query selects history entries: those after Since and up to Until, at most Limit of them, oldest first.
// Limit is clamped to 1..MaxLimit, and 0 (or less) means DefaultLimit. When more entries match than
// Limit, a query with Since returns the oldest Limit entries after Since (a client catching up pages
// forward), and a query without Since returns the newest Limit entries (the most recent history).
type Query struct {
	Since, Until Bound
	Limit        int
}

// limit returns q.Limit clamped to 1..MaxLimit.
func (q Query) limit() int {
	switch {
	case q.Limit <= 0:
		return DefaultLimit
	case q.Limit > MaxLimit:
		return MaxLimit
	default:
		return q.Limit
	}
}

// span is a query's positions as an inclusive range [lo, hi].
type span struct {
	lo, hi Position
	fromLo bool // take the oldest entries from lo (Since set), else the newest up to hi
	limit  int
}

var maxPosition = Position{math.MaxUint64, math.MaxUint64}

func timeMs(t time.Time) uint64 {
	if m := t.UnixMilli(); m > 0 {
		return uint64(m)
	}
	return 0
}

// span resolves q; ok is false when nothing can match.
func (q Query) span() (s span, ok bool) {
	s = span{hi: maxPosition, fromLo: q.Since.IsSet, limit: q.limit()}
	switch {
	case !q.Since.IsSet:
	case q.Since.IsTime():
		s.lo = Position{Ms: timeMs(q.Since.Time)}
	default:
		if s.lo, ok = q.Since.Pos.next(); !ok {
			return s, false
		}
	}
	switch {
	case !q.Until.IsSet:
	case q.Until.IsTime():
		s.hi = Position{Ms: timeMs(q.Until.Time), Seq: math.MaxUint64}
	default:
		s.hi = q.Until.Pos
	}
	return s, !s.hi.Less(s.lo)
}

// String describes q for error messages.
func (q Query) String() string {
	return fmt.Sprintf("since=%q until=%q limit=%d", q.Since.String(), q.Until.String(), q.limit())
}
