package telemetry

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strconv"
	"time"

	"github.com/arqonbus/arqonbus/codec"
)

// The payload encoder. Fields are small and simple (strings, numbers, bools,
// small maps and lists), so the common types are written directly; anything
// else goes through encoding/json. Map keys are sorted so payloads are
// deterministic. All of it runs on the emitter goroutine.

func appendString(dst []byte, s string) []byte { return codec.AppendString(dst, s) }

func appendInt(dst []byte, n int64) []byte { return strconv.AppendInt(dst, n, 10) }

func appendUint(dst []byte, n uint64) []byte { return strconv.AppendUint(dst, n, 10) }

// appendFields writes `"key":value,` for each field but eventType and
// node_id, which the envelope's payload sets itself.
func appendFields(dst []byte, fields map[string]any, log *slog.Logger) []byte {
	if len(fields) == 0 {
		return dst
	}
	for _, k := range sortedKeys(fields) {
		if k == "eventType" || k == "node_id" {
			continue
		}
		dst = appendString(dst, k)
		dst = append(dst, ':')
		dst = appendValue(dst, fields[k], log)
		dst = append(dst, ',')
	}
	return dst
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func appendMap[V any](dst []byte, m map[string]V, log *slog.Logger) []byte {
	if m == nil {
		return append(dst, "null"...)
	}
	dst = append(dst, '{')
	for i, k := range sortedKeys(m) {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendString(dst, k)
		dst = append(dst, ':')
		dst = appendValue(dst, m[k], log)
	}
	return append(dst, '}')
}

func appendSlice[V any](dst []byte, s []V, log *slog.Logger) []byte {
	if s == nil {
		return append(dst, "null"...)
	}
	dst = append(dst, '[')
	for i, v := range s {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendValue(dst, v, log)
	}
	return append(dst, ']')
}

// appendFloat writes f as encoding/json does; NaN and infinities, which JSON
// cannot hold, become null.
func appendFloat(dst []byte, f float64, bits int) []byte {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return append(dst, "null"...)
	}
	abs := math.Abs(f)
	format := byte('f')
	if abs != 0 && (bits == 64 && (abs < 1e-6 || abs >= 1e21) || bits == 32 && (float32(abs) < 1e-6 || float32(abs) >= 1e21)) {
		format = 'e'
	}
	return strconv.AppendFloat(dst, f, format, -1, bits)
}

// appendValue writes v as JSON.
func appendValue(dst []byte, v any, log *slog.Logger) []byte {
	switch x := v.(type) {
	case nil:
		return append(dst, "null"...)
	case string:
		return appendString(dst, x)
	case bool:
		return strconv.AppendBool(dst, x)
	case int:
		return appendInt(dst, int64(x))
	case int8:
		return appendInt(dst, int64(x))
	case int16:
		return appendInt(dst, int64(x))
	case int32:
		return appendInt(dst, int64(x))
	case int64:
		return appendInt(dst, x)
	case uint:
		return appendUint(dst, uint64(x))
	case uint8:
		return appendUint(dst, uint64(x))
	case uint16:
		return appendUint(dst, uint64(x))
	case uint32:
		return appendUint(dst, uint64(x))
	case uint64:
		return appendUint(dst, x)
	case float64:
		return appendFloat(dst, x, 64)
	case float32:
		return appendFloat(dst, float64(x), 32)
	case time.Time:
		return codec.AppendTimestamp(dst, x)
	case json.RawMessage:
		if len(x) == 0 || !json.Valid(x) {
			return append(dst, "null"...)
		}
		return append(dst, x...)
	case map[string]any:
		return appendMap(dst, x, log)
	case map[string]string:
		return appendMap(dst, x, log)
	case map[string]int:
		return appendMap(dst, x, log)
	case map[string]int64:
		return appendMap(dst, x, log)
	case map[string]uint64:
		return appendMap(dst, x, log)
	case map[string]float64:
		return appendMap(dst, x, log)
	case []any:
		return appendSlice(dst, x, log)
	case []string:
		return appendSlice(dst, x, log)
	case []int:
		return appendSlice(dst, x, log)
	case []map[string]any:
		return appendSlice(dst, x, log)
	}
	b, err := json.Marshal(v)
	if err != nil {
		log.Debug("telemetry field not encodable", "type", fmt.Sprintf("%T", v), "err", err)
		return append(dst, "null"...)
	}
	return append(dst, b...)
}
