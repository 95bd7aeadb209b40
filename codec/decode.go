package codec

import (
	"encoding/json"
	"strings"

	"github.com/bytedance/sonic"
)

// wire is the envelope as it is on the wire. Plain strings keep the fast decode allocation-free for
// them (sonic points them into its private copy of the input); a value of the wrong JSON type makes
// the fast decode fail and decodeSlow then works out which field it was. Payload and metadata are
// NoCopyRawMessage, which points into that same private copy (sonic.Unmarshal copies its input
// first), never into the caller's buffer: json.RawMessage would cost an allocation and copy each.
type wire struct {
	Version   string                 `json:"version"`
	ID        string                 `json:"id"`
	Type      string                 `json:"type"`
	Room      string                 `json:"room"`
	Channel   string                 `json:"channel"`
	From      string                 `json:"from"`
	Timestamp string                 `json:"timestamp"`
	Payload   sonic.NoCopyRawMessage `json:"payload"`
	Metadata  sonic.NoCopyRawMessage `json:"metadata"`
}

// decodeState holds the wire form and the result in one allocation; the returned *Envelope points
// inside it, which keeps the (small) wire part alive as long as the envelope, a fair price for one
// allocation less per message.
type decodeState struct {
	w   wire
	env Envelope
}

// Bits naming fields whose JSON type was wrong, found by decodeSlow.
const (
	badVersion uint16 = 1 << iota
	badID
	badType
	badRoom
	badChannel
	badFrom
	badTimestamp
)

const nameRule = "[a-z0-9][a-z0-9_.-]{0,63}"

// Decode parses and validates one client envelope (one WebSocket text message, UTF-8 already checked
// by the caller).
//
// It always returns a non-nil *Envelope. When the error is non-nil the envelope is only partly filled:
// ID (when the id was a string of at most 128 bytes, even an invalid one), Room and Channel (when they
// were valid names), so the caller can address the error envelope; the error's RequestID is that ID.
// Nothing in the envelope aliases data. Payload and Metadata are read-only.
func Decode(data []byte) (*Envelope, *Error) {
	st := new(decodeState)
	switch firstByte(data) {
	case '{':
	case 0:
		return &st.env, Validation("", "invalid JSON: empty message")
	default:
		return &st.env, Validation("", "invalid JSON: envelope must be a JSON object")
	}
	dec, e := decoderFor(data)
	if e != nil {
		return &st.env, e
	}
	var bad uint16
	// sonic.Unmarshal copies data before decoding, so strings and raw messages it returns point into its
	// own copy, never into the caller's buffer.
	if err := dec.Unmarshal(data, &st.w); err != nil {
		if bad, e = decodeSlow(dec, data, &st.w); e != nil {
			return &st.env, e
		}
	}
	if key, dup := duplicateKey(data); dup {
		// Read what can be read, so the error is addressed like any other.
		st.validate(bad)
		st.env = Envelope{ID: st.env.ID, Room: st.env.Room, Channel: st.env.Channel}
		if len(key) > 64 {
			key = key[:64] + "..."
		}
		field := strings.ToValidUTF8(key, "?")
		if field == "" {
			field = `""`
		}
		e := Validation(field, "duplicate key: each top-level key may appear only once")
		e.RequestID = st.env.ID
		return &st.env, e
	}
	return st.validate(bad)
}

// decodeSlow decodes data field by field to find which fields have the wrong JSON type; it runs only
// after the fast decode failed, so its cost is paid by bad input alone.
func decodeSlow(dec sonic.API, data []byte, w *wire) (uint16, *Error) {
	*w = wire{}
	var m map[string]json.RawMessage
	if err := dec.Unmarshal(data, &m); err != nil {
		return 0, Validation("", "invalid JSON: "+syntaxMessage(data))
	}
	var bad uint16
	str := func(key string, bit uint16, dst *string) {
		raw, ok := m[key]
		if !ok || isNull(raw) {
			return
		}
		if len(raw) == 0 || raw[0] != '"' || api.Unmarshal(raw, dst) != nil {
			bad |= bit
		}
	}
	str("version", badVersion, &w.Version)
	str("id", badID, &w.ID)
	str("type", badType, &w.Type)
	str("room", badRoom, &w.Room)
	str("channel", badChannel, &w.Channel)
	str("from", badFrom, &w.From)
	str("timestamp", badTimestamp, &w.Timestamp)
	w.Payload = sonic.NoCopyRawMessage(m["payload"])
	w.Metadata = sonic.NoCopyRawMessage(m["metadata"])
	return bad, nil
}

// syntaxMessage describes why data is not JSON. sonic's own messages quote the input at length, so the
// standard library, which says it in one line, explains the (rare) failure instead.
func syntaxMessage(data []byte) string {
	var v struct{}
	if err := json.Unmarshal(data, &v); err != nil {
		return err.Error()
	}
	return "malformed JSON"
}

// fail builds a validation error addressed with the envelope's id.
func (st *decodeState) fail(field, msg string) (*Envelope, *Error) {
	e := Validation(field, msg)
	e.RequestID = st.env.ID
	return &st.env, e
}

// validate applies the SPEC "Envelope" rules in field order, so a client fixing errors one at a time
// sees them in the order it wrote them.
func (st *decodeState) validate(bad uint16) (*Envelope, *Error) {
	w, env := &st.w, &st.env

	// Address first: every error below is reported with whatever could be read.
	if len(w.ID) <= maxIDLen {
		env.ID = w.ID
	}
	typ := ParseType(w.Type)
	room, channel, split := w.Room, w.Channel, false
	if channel == "" {
		if i := strings.IndexByte(room, ':'); i >= 0 {
			room, channel, split = room[:i], room[i+1:], true
		}
	}
	if channel == "" && typ == TypePrivate {
		channel = DefaultPrivateChannel
	}
	if ValidName(room) {
		env.Room = room
	}
	if ValidName(channel) {
		env.Channel = channel
	}

	switch {
	case bad&badVersion != 0:
		return st.fail("version", "version must be a string")
	case w.Version == "":
		return st.fail("version", "version is required")
	case w.Version != Version:
		return st.fail("version", `version must be "1.0"`)
	}

	switch {
	case bad&badID != 0:
		return st.fail("id", "id must be a string")
	case w.ID == "":
		return st.fail("id", "id is required")
	case !strings.HasPrefix(w.ID, idPrefix):
		return st.fail("id", "id must start with arq_")
	case len(w.ID) > maxIDLen:
		return st.fail("id", "id must be at most 128 characters")
	case !validIDChars(w.ID):
		return st.fail("id", "id may contain only letters, digits and _ . : -")
	}

	switch {
	case bad&badType != 0:
		return st.fail("type", "type must be a string")
	case w.Type == "":
		return st.fail("type", "type is required")
	case typ == TypeError || typ == TypeSystem:
		// Checked before room and channel: a server-only type is refused as
		// such, whatever it is addressed to (system notices use room "*").
		e := Forbidden("clients may not send " + w.Type + " envelopes")
		e.Field, e.RequestID = "type", st.env.ID
		return &st.env, e
	case typ == TypeInvalid:
		return st.fail("type", "type must be one of event, command, command_response, private, telemetry")
	}

	splitMsg := `room must be "room:channel" with both parts matching ` + nameRule
	switch {
	case bad&badRoom != 0:
		return st.fail("room", "room must be a string")
	case w.Room == "" && typ != TypePrivate:
		return st.fail("room", "room is required")
	case w.Channel != "" && strings.IndexByte(w.Room, ':') >= 0:
		return st.fail("room", `room must not contain ":" when channel is given`)
	case w.Room != "" && !ValidName(room):
		if split {
			return st.fail("room", splitMsg)
		}
		return st.fail("room", "room must match "+nameRule)
	}

	switch {
	case bad&badChannel != 0:
		return st.fail("channel", "channel must be a string")
	case channel == "" && split:
		return st.fail("room", splitMsg)
	case channel == "":
		return st.fail("channel", "channel is required")
	case !ValidName(channel):
		if split {
			return st.fail("room", splitMsg)
		}
		return st.fail("channel", "channel must match "+nameRule)
	}

	switch {
	case bad&badFrom != 0:
		return st.fail("from", "from must be a string")
	case w.From == "":
		return st.fail("from", "from is required")
	case len(w.From) > maxIDLen:
		return st.fail("from", "from must be at most 128 characters")
	case !validIDChars(w.From):
		return st.fail("from", "from may contain only letters, digits and _ . : -")
	}

	switch {
	case bad&badTimestamp != 0:
		return st.fail("timestamp", "timestamp must be a string")
	case w.Timestamp == "":
		return st.fail("timestamp", "timestamp is required")
	case !ValidTimestamp(w.Timestamp):
		return st.fail("timestamp", "timestamp must be RFC 3339, e.g. 2025-01-01T12:00:00.000Z")
	}

	switch {
	case w.Payload == nil:
		return st.fail("payload", "payload is required")
	case firstByte(w.Payload) != '{':
		return st.fail("payload", "payload must be a JSON object")
	}

	metadata := w.Metadata
	if isNull(metadata) {
		metadata = nil
	}
	if metadata != nil && firstByte(metadata) != '{' {
		return st.fail("metadata", "metadata must be a JSON object")
	}

	if e := checkPayload(typ, w.Payload); e != nil {
		e.RequestID = env.ID
		return env, e
	}

	*env = Envelope{
		Version:   w.Version,
		ID:        w.ID,
		Type:      typ,
		Room:      room,
		Channel:   channel,
		From:      w.From,
		Timestamp: w.Timestamp,
		Payload:   w.Payload,
		Metadata:  metadata,
	}
	return env, nil
}

// firstByte returns the first non-whitespace byte of a JSON text, 0 when there is none.
func firstByte(b []byte) byte {
	for _, c := range b {
		switch c {
		case ' ', '\t', '\n', '\r':
			continue
		}
		return c
	}
	return 0
}

func isNull(raw []byte) bool {
	return len(raw) == 4 && string(raw) == "null"
}
