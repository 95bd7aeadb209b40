package bus

import (
	"bytes"
	"time"

	"github.com/bytedance/sonic"

	"github.com/arqonbus/arqonbus/codec"
	"github.com/arqonbus/arqonbus/commands"
)

// bucket is a token bucket: rate tokens a second, up to burst. Loop only.
type bucket struct {
	tokens float64
	last   int64 // unix nanos of the last refill; 0 means full
}

// take spends one token, or says how long until one is there.
func (b *bucket) take(now int64, rate, burst float64) (ok bool, retryAfter time.Duration) {
	if rate <= 0 {
		return true, 0
	}
	if b.last == 0 {
		b.tokens = burst
	} else {
		b.tokens = min(burst, b.tokens+float64(now-b.last)/1e9*rate)
	}
	b.last = now
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	return false, time.Duration((1 - b.tokens) / rate * 1e9)
}

// rateLimited builds the RATE_LIMITED error with the wait rounded up to a ms.
func rateLimited(what string, wait time.Duration) *codec.Error {
	ms := int64((wait + time.Millisecond - 1) / time.Millisecond)
	return codec.RateLimited(what+" rate limit exceeded", max(ms, 1))
}

// msgAttrs gives filters an event's metadata values, from envelope metadata
// and payload.metadata, decoded only if a filtered member asks.
type msgAttrs struct {
	env    *codec.Envelope
	parsed bool
	values map[string]string
}

func (a *msgAttrs) reset(env *codec.Envelope) {
	a.env, a.parsed = env, false
	clear(a.values)
}

var metadataKey = []byte(`"metadata"`)

func (a *msgAttrs) Attr(key string) (string, bool) {
	if !a.parsed {
		a.parsed = true
		if a.values == nil {
			a.values = make(map[string]string)
		}
		a.parse(a.env.Payload, a.env.Metadata)
	}
	v, ok := a.values[key]
	return v, ok
}

// parse takes the values of payload.metadata, then of metadata (which win).
func (a *msgAttrs) parse(payload, metadata []byte) {
	if bytes.Contains(payload, metadataKey) {
		var p struct {
			Metadata map[string]sonic.NoCopyRawMessage `json:"metadata"`
		}
		if sonic.ConfigDefault.Unmarshal(payload, &p) == nil {
			a.add(p.Metadata)
		}
	}
	if len(metadata) > 0 {
		var m map[string]sonic.NoCopyRawMessage
		if sonic.ConfigDefault.Unmarshal(metadata, &m) == nil {
			a.add(m)
		}
	}
}

func (a *msgAttrs) add(m map[string]sonic.NoCopyRawMessage) {
	for k, raw := range m {
		if v, ok := commands.CompactScalar(raw); ok {
			a.values[k] = v
		}
	}
}

// routedAttrs gives filters an event's metadata values from its routed envelope (an event that came
// through Redis), parsed only if a filtered member asks.
type routedAttrs struct {
	data []byte
	msgAttrs
}

func newRoutedAttrs(data []byte) *routedAttrs { return &routedAttrs{data: data} }

func (a *routedAttrs) Attr(key string) (string, bool) {
	if !a.parsed {
		a.parsed = true
		a.values = make(map[string]string)
		var env struct {
			Payload  sonic.NoCopyRawMessage `json:"payload"`
			Metadata sonic.NoCopyRawMessage `json:"metadata"`
		}
		if sonic.ConfigDefault.Unmarshal(a.data, &env) == nil {
			a.parse(env.Payload, env.Metadata)
		}
	}
	v, ok := a.values[key]
	return v, ok
}
