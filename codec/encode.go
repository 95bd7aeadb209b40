package codec

import (
	"strconv"
	"time"
	"unicode/utf8"
)

// Out is the header of an envelope the server builds.
type Out struct {
	ID, Type, Room, Channel, From string
	Timestamp                     time.Time
}

// AppendEnvelope appends a complete envelope JSON object to dst:
//
//	{"version":"1.0","id":..,"type":..,"room":..,"channel":..,"from":..,"timestamp":..,"payload":..}
//
// plus ,"metadata":.. when metadata is non-nil. payload and metadata are raw JSON written as they are
// (they come validated from Decode or from the server's own encoders): re-encoding them would cost more
// than the rest of the envelope. A nil or empty payload is written as {} so the output stays JSON.
// Empty room and channel are still written, as "".
func AppendEnvelope(dst []byte, o Out, payload, metadata []byte) []byte {
	dst = appendHeader(dst, o.ID, o.Type, o.Room, o.Channel, o.From, o.Timestamp)
	if len(payload) == 0 {
		dst = append(dst, "{}"...)
	} else {
		dst = append(dst, payload...)
	}
	if metadata != nil {
		dst = append(dst, `,"metadata":`...)
		if len(metadata) == 0 {
			dst = append(dst, "{}"...)
		} else {
			dst = append(dst, metadata...)
		}
	}
	return append(dst, '}')
}

// appendHeader writes everything up to and including `"payload":`.
func appendHeader(dst []byte, id, typ, room, channel, from string, t time.Time) []byte {
	dst = append(dst, `{"version":"1.0","id":`...)
	dst = AppendString(dst, id)
	dst = append(dst, `,"type":`...)
	dst = AppendString(dst, typ)
	dst = append(dst, `,"room":`...)
	dst = AppendString(dst, room)
	dst = append(dst, `,"channel":`...)
	dst = AppendString(dst, channel)
	dst = append(dst, `,"from":`...)
	dst = AppendString(dst, from)
	dst = append(dst, `,"timestamp":`...)
	dst = AppendTimestamp(dst, t)
	return append(dst, `,"payload":`...)
}

// AppendError appends a complete "error" envelope from arqonbus_server whose payload is
// {"request_id":..,"code":..,"status":..,"message":..,"field":..,"retry_after_ms":..}; request_id,
// field and retry_after_ms are left out when empty or zero.
func AppendError(dst []byte, id, room, channel string, now time.Time, e *Error) []byte {
	dst = appendHeader(dst, id, "error", room, channel, ServerFrom, now)
	dst = append(dst, '{')
	if e.RequestID != "" {
		dst = append(dst, `"request_id":`...)
		dst = AppendString(dst, e.RequestID)
		dst = append(dst, ',')
	}
	dst = appendErrorFields(dst, e)
	return append(dst, "}}"...)
}

// appendErrorFields writes "code":..,"status":..,"message":.. and the optional field and
// retry_after_ms, without braces, so error envelopes and error responses share one layout.
func appendErrorFields(dst []byte, e *Error) []byte {
	dst = append(dst, `"code":`...)
	dst = AppendString(dst, e.Code)
	dst = append(dst, `,"status":`...)
	dst = strconv.AppendInt(dst, int64(e.Status), 10)
	dst = append(dst, `,"message":`...)
	dst = AppendString(dst, e.Message)
	if e.Field != "" {
		dst = append(dst, `,"field":`...)
		dst = AppendString(dst, e.Field)
	}
	if e.RetryAfterMs != 0 {
		dst = append(dst, `,"retry_after_ms":`...)
		dst = strconv.AppendInt(dst, e.RetryAfterMs, 10)
	}
	return dst
}

// AppendResponse appends a "command_response" from arqonbus_server with payload
// {"request_id":..,"status":"success","result":<result>}. result is raw JSON; nil is written as {}.
func AppendResponse(dst []byte, id, room, channel string, now time.Time, requestID string, result []byte) []byte {
	dst = appendHeader(dst, id, "command_response", room, channel, ServerFrom, now)
	dst = append(dst, `{"request_id":`...)
	dst = AppendString(dst, requestID)
	dst = append(dst, `,"status":"success","result":`...)
	if len(result) == 0 {
		dst = append(dst, "{}"...)
	} else {
		dst = append(dst, result...)
	}
	return append(dst, "}}"...)
}

const hexDigits = "0123456789abcdef"

// safeASCII marks the ASCII bytes that go into a JSON string as they are.
var safeASCII = func() (t [utf8.RuneSelf]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// AppendString appends s as a JSON string. Quotes, backslashes and control characters are escaped; valid
// UTF-8 is kept as is, except U+2028 and U+2029, escaped because JavaScript source cannot hold them raw;
// each invalid byte becomes U+FFFD so the output is always valid JSON (as encoding/json does).
func AppendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0 // s[start:i] is pending, needing no escape
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if safeASCII[c] {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// AppendTimestamp appends t in UTC with milliseconds, quoted: "2025-01-01T12:00:00.000Z", the form
// JavaScript's Date.toISOString produces. Written by hand: time.AppendFormat is several times slower and
// this runs for every server envelope.
func AppendTimestamp(dst []byte, t time.Time) []byte {
	t = t.UTC()
	year, month, day := t.Date()
	if year < 0 || year > 9999 {
		// Not representable in four digits; RFC 3339 does not allow more. Never happens with a sane clock.
		dst = append(dst, '"')
		dst = t.AppendFormat(dst, "2006-01-02T15:04:05.000Z07:00")
		return append(dst, '"')
	}
	hour, minute, sec := t.Clock()
	ms := t.Nanosecond() / 1e6
	dst = append(dst, '"',
		byte('0'+year/1000), byte('0'+year/100%10), byte('0'+year/10%10), byte('0'+year%10), '-',
		byte('0'+int(month)/10), byte('0'+int(month)%10), '-',
		byte('0'+day/10), byte('0'+day%10), 'T',
		byte('0'+hour/10), byte('0'+hour%10), ':',
		byte('0'+minute/10), byte('0'+minute%10), ':',
		byte('0'+sec/10), byte('0'+sec%10), '.',
		byte('0'+ms/100), byte('0'+ms/10%10), byte('0'+ms%10), 'Z', '"')
	return dst
}
