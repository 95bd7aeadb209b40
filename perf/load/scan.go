package load

import (
	"bytes"
	"math"
	"strconv"
)

// The scanner below reads just the few fields the generator needs straight from the message
// bytes. A full JSON decode of every delivery would cost the generator about as much CPU as the
// server spends routing it, on the same two cores.

var (
	keyType      = []byte(`"type":`)
	keyPayload   = []byte(`"payload":`)
	keyRequestID = []byte(`"request_id":`)
	keyStatus    = []byte(`"status":`)
	keyMessage   = []byte(`"message":`)
	keyCode      = []byte(`"code":`)
	keyT         = []byte(`"t":`)
	keyP         = []byte(`"p":`)
	keyS         = []byte(`"s":`)
	keyID        = []byte(`"id":`)
	keyParams    = []byte(`"parameters":`)
	keyResult    = []byte(`"result":`)
)

// envType returns the value of the first "type" field: the envelope's own for every envelope the
// server sends, since "type" comes before "payload" in them and in ours.
func envType(msg []byte) []byte {
	return stringField(msg, keyType)
}

// stringField returns the string value after the first occurrence of key (which includes the
// quotes and the colon), without unescaping; nil if absent or not a string.
func stringField(msg, key []byte) []byte {
	i := bytes.Index(msg, key)
	if i < 0 {
		return nil
	}
	rest := skipSpace(msg[i+len(key):])
	if len(rest) == 0 || rest[0] != '"' {
		return nil
	}
	rest = rest[1:]
	for j := 0; j < len(rest); j++ {
		switch rest[j] {
		case '\\':
			j++
		case '"':
			return rest[:j]
		}
	}
	return nil
}

// intField parses the integer after the first occurrence of key in b.
func intField(b, key []byte) (int64, bool) {
	i := bytes.Index(b, key)
	if i < 0 {
		return 0, false
	}
	rest := skipSpace(b[i+len(key):])
	neg := false
	if len(rest) > 0 && rest[0] == '-' {
		neg, rest = true, rest[1:]
	}
	v, _, ok := leadingInt(rest)
	if neg {
		v = -v
	}
	return v, ok
}

func skipSpace(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t' || b[0] == '\n' || b[0] == '\r') {
		b = b[1:]
	}
	return b
}

// parseEvent extracts the generator's payload {"t":<send ns>,"p":<publisher>,"s":<seq>} from an
// event. The search is confined to the payload object (flat, so its first '}' ends it) so that
// whatever the server adds under metadata cannot be mistaken for it. Events are relayed as sent,
// so the payload almost always reads exactly as written and is parsed in one pass; anything else
// (spaces, another order) falls back to searching for each key.
func parseEvent(msg []byte) (t, p, s int64, ok bool) {
	return parseTPS(msg, keyPayload)
}

// The fields of a routed event before its payload, in the order the server writes them.
var routedFields = [][]byte{[]byte(`","type":"event","room":"`), []byte(`","channel":"`), []byte(`","from":"`), []byte(`","timestamp":"`)}

var (
	routedStart   = []byte(`{"version":"1.0","id":"`)
	routedPayload = []byte(`","payload":`)
)

// parseRoutedEvent reads the payload of an event exactly as the server routes the generator's
// own: fields in the server's order, strings without escapes. It walks the message once, string
// by string, where a search for "type" and then for "payload" would scan it twice; at a million
// deliveries a second those scans were a fifth of the generator's CPU. Anything else is not
// ok, and the caller falls back on the searching parsers.
func parseRoutedEvent(msg []byte) (t, p, s int64, ok bool) {
	b, ok := bytes.CutPrefix(msg, routedStart)
	if !ok {
		return 0, 0, 0, false
	}
	for _, f := range routedFields {
		if b, ok = skipPlainString(b); !ok {
			return 0, 0, 0, false
		}
		if b, ok = bytes.CutPrefix(b, f); !ok {
			return 0, 0, 0, false
		}
	}
	if b, ok = skipPlainString(b); !ok {
		return 0, 0, 0, false
	}
	if b, ok = bytes.CutPrefix(b, routedPayload); !ok {
		return 0, 0, 0, false
	}
	return parseExactPayload(b)
}

// skipPlainString returns b from the quote that ends the string b starts inside of, when the
// string has no escapes.
func skipPlainString(b []byte) ([]byte, bool) {
	i := bytes.IndexByte(b, '"')
	if i < 0 || bytes.IndexByte(b[:i], '\\') >= 0 {
		return nil, false
	}
	return b[i:], true
}

// parseTPS reads the flat object {"t":N,"p":N,"s":N} that follows the first occurrence of key
// (an event's payload, a command's parameters, an echo's result).
func parseTPS(msg, key []byte) (t, p, s int64, ok bool) {
	i := bytes.Index(msg, key)
	if i < 0 {
		return 0, 0, 0, false
	}
	body := msg[i+len(key):]
	if t, p, s, ok = parseExactPayload(body); ok {
		return t, p, s, true
	}
	if end := bytes.IndexByte(body, '}'); end >= 0 {
		body = body[:end+1]
	}
	var okT, okP, okS bool
	t, okT = intField(body, keyT)
	p, okP = intField(body, keyP)
	s, okS = intField(body, keyS)
	return t, p, s, okT && okP && okS
}

var (
	exactT = []byte(`{"t":`)
	exactP = []byte(`,"p":`)
	exactS = []byte(`,"s":`)
)

// parseExactPayload parses b if it starts with {"t":N,"p":N,"s":N} exactly as written.
func parseExactPayload(b []byte) (t, p, s int64, ok bool) {
	if b, ok = bytes.CutPrefix(b, exactT); !ok {
		return
	}
	if t, b, ok = leadingInt(b); !ok {
		return
	}
	if b, ok = bytes.CutPrefix(b, exactP); !ok {
		return
	}
	if p, b, ok = leadingInt(b); !ok {
		return
	}
	if b, ok = bytes.CutPrefix(b, exactS); !ok {
		return
	}
	if s, b, ok = leadingInt(b); !ok {
		return
	}
	if len(b) == 0 || b[0] != '}' {
		return 0, 0, 0, false
	}
	return t, p, s, true
}

// leadingInt parses the non-negative integer at the start of b and returns the rest. Send times
// in nanoseconds take 19 digits; more, or a value past int64, is not ours.
func leadingInt(b []byte) (v int64, rest []byte, ok bool) {
	var u uint64 // 19 digits fit in a uint64 whatever they are
	j := 0
	for ; j < len(b) && b[j] >= '0' && b[j] <= '9'; j++ {
		if j == 19 {
			return 0, b, false
		}
		u = u*10 + uint64(b[j]-'0')
	}
	if j == 0 || u > math.MaxInt64 {
		return 0, b, false
	}
	return int64(u), b[j:], true
}

// errorText summarises an error envelope as "CODE: message" for reports.
func errorText(msg []byte) string {
	code := stringField(msg, keyCode)
	text := stringField(msg, keyMessage)
	if code == nil && text == nil {
		if len(msg) > 200 {
			msg = msg[:200]
		}
		return string(msg)
	}
	return string(code) + ": " + string(text)
}

// commandIDPrefix starts the ids of the command scenario's requests: arq_c_<publisher>_<seq>.
const commandIDPrefix = "arq_c_"

func appendCommandID(dst []byte, p, seq int64) []byte {
	dst = append(dst, commandIDPrefix...)
	dst = strconv.AppendInt(dst, p, 10)
	dst = append(dst, '_')
	return strconv.AppendInt(dst, seq, 10)
}

// parseCommandID reads publisher and sequence back from a request id made by appendCommandID.
func parseCommandID(id []byte) (p, seq int64, ok bool) {
	rest, ok := bytes.CutPrefix(id, []byte(commandIDPrefix))
	if !ok {
		return 0, 0, false
	}
	if p, rest, ok = leadingInt(rest); !ok {
		return 0, 0, false
	}
	if rest, ok = bytes.CutPrefix(rest, []byte("_")); !ok {
		return 0, 0, false
	}
	if seq, rest, ok = leadingInt(rest); !ok || len(rest) != 0 {
		return 0, 0, false
	}
	return p, seq, true
}

// rawObject returns the flat JSON object that follows the first occurrence of key, braces
// included (nil if there is none). Flat: its first '}' ends it, as in the generator's own
// parameters.
func rawObject(msg, key []byte) []byte {
	i := bytes.Index(msg, key)
	if i < 0 {
		return nil
	}
	body := skipSpace(msg[i+len(key):])
	if len(body) == 0 || body[0] != '{' {
		return nil
	}
	end := bytes.IndexByte(body, '}')
	if end < 0 {
		return nil
	}
	return body[:end+1]
}
