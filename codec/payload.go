package codec

import (
	"bytes"

	"github.com/bytedance/sonic"
)

// payloadWire holds the payload fields the type-specific rules look at. Raw values, so a field of the
// wrong type is reported by name instead of failing the whole decode. NoCopyRawMessage points into
// sonic's own copy of the payload, so results never alias the caller's bytes.
type payloadWire struct {
	Command    sonic.NoCopyRawMessage `json:"command"`
	Parameters sonic.NoCopyRawMessage `json:"parameters"`
	Target     sonic.NoCopyRawMessage `json:"target"`
	EventType  sonic.NoCopyRawMessage `json:"eventType"`
	Payload    sonic.NoCopyRawMessage `json:"payload"`
	RequestID  sonic.NoCopyRawMessage `json:"request_id"`
}

// checkPayload applies the type-specific payload rules. Events, the hot path, need none.
func checkPayload(typ Type, payload []byte) *Error {
	switch typ {
	case TypeCommand:
		_, e := DecodeCommand(payload)
		return e
	case TypePrivate:
		_, e := DecodePrivateTarget(payload)
		return e
	case TypeTelemetry:
		var p payloadWire
		if e := decodePayload(payload, &p); e != nil {
			return e
		}
		if _, ok := rawString(p.EventType); !ok {
			return Validation("payload.eventType", "payload.eventType must be a string")
		}
		if firstByte(p.Payload) != '{' {
			return Validation("payload.payload", "payload.payload must be a JSON object")
		}
	case TypeCommandResponse:
		var p payloadWire
		if e := decodePayload(payload, &p); e != nil {
			return e
		}
		if s, ok := rawString(p.RequestID); !ok || s == "" {
			return Validation("payload.request_id", "payload.request_id must be a non-empty string")
		}
	}
	return nil
}

// CommandPayload is the payload of a command envelope.
type CommandPayload struct {
	Command    string
	Parameters []byte // raw JSON object, or nil when absent or null
}

// DecodeCommand reads the payload of a command envelope: payload.command must be a non-empty string and
// payload.parameters, when present, a JSON object.
func DecodeCommand(payload []byte) (CommandPayload, *Error) {
	var p payloadWire
	if e := decodePayload(payload, &p); e != nil {
		return CommandPayload{}, e
	}
	cmd, ok := rawString(p.Command)
	if !ok || cmd == "" {
		return CommandPayload{}, Validation("payload.command", "payload.command must be a non-empty string")
	}
	params := p.Parameters
	if isNull(params) {
		params = nil
	}
	if params != nil && firstByte(params) != '{' {
		return CommandPayload{}, Validation("payload.parameters", "payload.parameters must be a JSON object")
	}
	return CommandPayload{Command: cmd, Parameters: params}, nil
}

// DecodePrivateTarget reads payload.target of a private envelope: a non-empty string.
func DecodePrivateTarget(payload []byte) (string, *Error) {
	var p payloadWire
	if e := decodePayload(payload, &p); e != nil {
		return "", e
	}
	target, ok := rawString(p.Target)
	if !ok || target == "" {
		return "", Validation("payload.target", "payload.target must be a non-empty string")
	}
	return target, nil
}

// decodePayload decodes a payload object into p. Inside Decode the payload was already validated, so
// this fails only when a caller hands the helpers something that is not an object.
func decodePayload(payload []byte, p *payloadWire) *Error {
	if firstByte(payload) != '{' {
		return Validation("payload", "payload must be a JSON object")
	}
	dec, e := decoderFor(payload)
	if e != nil {
		e.Field = "payload"
		return e
	}
	if err := dec.Unmarshal(payload, p); err != nil {
		return Validation("payload", "payload: invalid JSON: "+syntaxMessage(payload))
	}
	return nil
}

// rawString returns the string a raw JSON value holds, false when it is not a string.
func rawString(raw []byte) (string, bool) {
	if len(raw) < 2 || raw[0] != '"' || raw[len(raw)-1] != '"' {
		return "", false
	}
	body := raw[1 : len(raw)-1]
	if bytes.IndexByte(body, '\\') < 0 {
		// sonic validated the string already; without escapes its bytes are its value.
		return string(body), true
	}
	var s string
	if api.Unmarshal(raw, &s) != nil {
		return "", false
	}
	return s, true
}
