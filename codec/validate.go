package codec

// Limits of the wire rules (SPEC "Envelope").
const (
	maxIDLen   = 128
	maxNameLen = 64
	idPrefix   = "arq_"
)

// idChar marks the bytes allowed in ids and client ids: [A-Za-z0-9_.:-]. A table keeps the check to one
// load per byte on the hot path.
var idChar = func() (t [256]bool) {
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
	}
	for c := 'A'; c <= 'Z'; c++ {
		t[c] = true
	}
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	t['_'], t['.'], t[':'], t['-'] = true, true, true, true
	return t
}()

// validIDChars reports whether s is non-empty, at most maxIDLen bytes, all of [A-Za-z0-9_.:-].
func validIDChars(s string) bool {
	if len(s) == 0 || len(s) > maxIDLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !idChar[s[i]] {
			return false
		}
	}
	return true
}

// ValidID reports whether s is a valid envelope id: "arq_" then [A-Za-z0-9_.:-], 128 characters at most.
func ValidID(s string) bool {
	return len(s) >= len(idPrefix) && s[:len(idPrefix)] == idPrefix && validIDChars(s)
}

// ValidClientID reports whether s may be used as a client id (the from field): 1 to 128 characters of
// [A-Za-z0-9_.:-].
func ValidClientID(s string) bool { return validIDChars(s) }

// ValidName reports whether s is a valid room or channel name: lowercase [a-z0-9][a-z0-9_.-]{0,63}.
// ":" is excluded so "room:channel" always splits one way.
func ValidName(s string) bool {
	if len(s) == 0 || len(s) > maxNameLen {
		return false
	}
	if c := s[0]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9') {
		return false
	}
	for i := 1; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '-') {
			return false
		}
	}
	return true
}

// ValidTimestamp reports whether s is an RFC 3339 date-time: YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM).
// Hand-written rather than time.Parse because this runs on every envelope and only the yes/no matters.
// It follows RFC 3339 section 5.6, including its lowercase "t"/"z" and leap second 60; calendar
// ranges are checked (no February 30th). A missing offset is rejected: the time would be ambiguous.
func ValidTimestamp(s string) bool {
	// Shortest form: 2006-01-02T15:04:05Z (20 bytes).
	if len(s) < 20 || len(s) > 64 {
		return false
	}
	year, ok := digits(s, 0, 4)
	if !ok || s[4] != '-' {
		return false
	}
	month, ok := digits(s, 5, 2)
	if !ok || s[7] != '-' || month < 1 || month > 12 {
		return false
	}
	day, ok := digits(s, 8, 2)
	if !ok || day < 1 || day > daysIn(month, year) {
		return false
	}
	if s[10] != 'T' && s[10] != 't' {
		return false
	}
	hour, ok := digits(s, 11, 2)
	if !ok || s[13] != ':' || hour > 23 {
		return false
	}
	minute, ok := digits(s, 14, 2)
	if !ok || s[16] != ':' || minute > 59 {
		return false
	}
	sec, ok := digits(s, 17, 2)
	if !ok || sec > 60 {
		return false
	}
	i := 19
	if s[i] == '.' {
		i++
		start := i
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
		if i == start {
			return false
		}
	}
	if i >= len(s) {
		return false
	}
	switch s[i] {
	case 'Z', 'z':
		return i+1 == len(s)
	case '+', '-':
		if len(s)-i != 6 || s[i+3] != ':' {
			return false
		}
		oh, ok1 := digits(s, i+1, 2)
		om, ok2 := digits(s, i+4, 2)
		return ok1 && ok2 && oh <= 23 && om <= 59
	}
	return false
}

// digits parses s[at:at+n] as a decimal number; false if any byte is not a digit.
func digits(s string, at, n int) (int, bool) {
	v := 0
	for i := at; i < at+n; i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		v = v*10 + int(c-'0')
	}
	return v, true
}

func daysIn(month, year int) int {
	switch month {
	case 2:
		if year%4 == 0 && (year%100 != 0 || year%400 == 0) {
			return 29
		}
		return 28
	case 4, 6, 9, 11:
		return 30
	}
	return 31
}
