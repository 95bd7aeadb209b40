package codec

import (
	"bytes"
	"encoding/json"
)

// duplicateKey returns the first top-level key of the JSON object data that appears twice (which may be
// ""), and whether there is one. JSON parsers disagree on duplicates (sonic and encoding/json keep the last, many
// others the first), and the server forwards the envelope as sent: a second "from" or "room" would let
// a client show the server one value and its recipients another. data must be JSON that sonic
// accepted, so the scan can skip values without validating them.
//
// Keys are compared after unescaping ("\u0066rom" is "from"). The envelope's own keys are tracked in a
// bit set; other keys, rare on the wire, in a map made only when one appears. Strings are skipped with
// bytes.IndexByte, so the cost is one vectorised pass over the message.
func duplicateKey(data []byte) (string, bool) {
	i := skipSpace(data, 0)
	if i >= len(data) || data[i] != '{' {
		return "", false
	}
	i++
	var known uint16
	var others map[string]struct{}
	for {
		i = skipSpace(data, i)
		if i >= len(data) || data[i] != '"' {
			return "", false // "}" of an empty object, or input sonic would not have accepted
		}
		end := stringEnd(data, i)
		if end < 0 {
			return "", false
		}
		key := data[i+1 : end]
		if bytes.IndexByte(key, '\\') >= 0 {
			var s string
			if err := json.Unmarshal(data[i:end+1], &s); err != nil {
				return "", false
			}
			key = []byte(s)
		}
		if bit := envelopeKeyBit(key); bit != 0 {
			if known&bit != 0 {
				return string(key), true
			}
			known |= bit
		} else {
			if _, dup := others[string(key)]; dup {
				return string(key), true
			}
			if others == nil {
				others = make(map[string]struct{})
			}
			others[string(key)] = struct{}{}
		}
		i = skipSpace(data, end+1)
		if i >= len(data) || data[i] != ':' {
			return "", false
		}
		if i = skipValue(data, skipSpace(data, i+1)); i < 0 {
			return "", false
		}
		i = skipSpace(data, i)
		if i >= len(data) || data[i] != ',' {
			return "", false
		}
		i++
	}
}

// envelopeKeyBit numbers the envelope's keys; 0 for any other key.
func envelopeKeyBit(key []byte) uint16 {
	switch string(key) {
	case "version":
		return 1 << 0
	case "id":
		return 1 << 1
	case "type":
		return 1 << 2
	case "room":
		return 1 << 3
	case "channel":
		return 1 << 4
	case "from":
		return 1 << 5
	case "timestamp":
		return 1 << 6
	case "payload":
		return 1 << 7
	case "metadata":
		return 1 << 8
	}
	return 0
}

func skipSpace(data []byte, i int) int {
	for i < len(data) {
		switch data[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// stringEnd returns the index of the quote closing the string that opens at data[i], -1 if none.
func stringEnd(data []byte, i int) int {
	for j := i + 1; ; {
		k := bytes.IndexByte(data[j:], '"')
		if k < 0 {
			return -1
		}
		q := j + k
		// The quote is escaped when an odd number of backslashes precede it.
		n := 0
		for p := q - 1; p > i && data[p] == '\\'; p-- {
			n++
		}
		if n%2 == 0 {
			return q
		}
		j = q + 1
	}
}

// skipValue returns the index just past the JSON value starting at data[i], -1 if it is cut short.
func skipValue(data []byte, i int) int {
	if i >= len(data) {
		return -1
	}
	switch data[i] {
	case '"':
		end := stringEnd(data, i)
		if end < 0 {
			return -1
		}
		return end + 1
	case '{', '[':
		depth := 0
		for i < len(data) {
			switch data[i] {
			case '"':
				end := stringEnd(data, i)
				if end < 0 {
					return -1
				}
				i = end + 1
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
			i++
		}
		return -1
	default: // number, true, false, null
		for i < len(data) {
			switch data[i] {
			case ',', '}', ']', ' ', '\t', '\n', '\r':
				return i
			}
			i++
		}
		return i
	}
}
