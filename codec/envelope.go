// Package codec owns the ArqonBus envelope: decode and validate client input, and build the server's own
// envelopes (errors, command responses, system notices).
package codec

// Version is the only protocol version this server speaks.
const Version = "1.0"

// ServerFrom is the from of every envelope the server itself builds.
const ServerFrom = "arqonbus_server"

// DefaultPrivateChannel is the channel a private envelope gets when the client omits it.
const DefaultPrivateChannel = "pm"

// Type is the envelope type. A small integer so routing code switches on it without string compares.
type Type uint8

// Envelope types. TypeInvalid is the zero value so a forgotten assignment never looks like an event.
const (
	TypeInvalid Type = iota
	TypeEvent
	TypeCommand
	TypeCommandResponse
	TypePrivate
	TypeTelemetry
	TypeSystem
	TypeError
)

var typeNames = [...]string{
	TypeInvalid:         "invalid",
	TypeEvent:           "event",
	TypeCommand:         "command",
	TypeCommandResponse: "command_response",
	TypePrivate:         "private",
	TypeTelemetry:       "telemetry",
	TypeSystem:          "system",
	TypeError:           "error",
}

// String returns the wire name of t ("event", "command", ...), or "invalid".
func (t Type) String() string {
	if int(t) < len(typeNames) {
		return typeNames[t]
	}
	return "invalid"
}

// ParseType maps a wire name to its Type, TypeInvalid when unknown. It accepts "error" too: whether a
// given sender may use a type is the caller's decision.
func ParseType(s string) Type {
	switch s {
	case "event":
		return TypeEvent
	case "command":
		return TypeCommand
	case "command_response":
		return TypeCommandResponse
	case "private":
		return TypePrivate
	case "telemetry":
		return TypeTelemetry
	case "system":
		return TypeSystem
	case "error":
		return TypeError
	}
	return TypeInvalid
}

// Envelope is a decoded, validated client envelope.
//
// None of its fields alias the buffer given to Decode, so callers may keep them after reusing that buffer.
type Envelope struct {
	Version   string
	ID        string
	Type      Type
	Room      string // normalised: "a:b" sent as room with channel omitted becomes Room "a", Channel "b"
	Channel   string // DefaultPrivateChannel for private when omitted
	From      string
	Timestamp string // as sent, validated as RFC 3339
	Payload   []byte // raw JSON object, exactly as sent
	Metadata  []byte // raw JSON object, or nil when absent or null
}
