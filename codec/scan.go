package codec

import (
	"encoding/binary"

	"github.com/bytedance/sonic"
)

// api is sonic's ConfigDefault plus CaseSensitive. ConfigDefault because it validates raw messages and
// skipped values (ConfigFastest does not, and this is client input). CaseSensitive because the wire
// keys are exact: "Version" is an unknown field to be ignored, not a spelling of "version". Both are
// frozen, so sharing them is not shared mutable state.
//
// ConfigDefault still lets two things through inside strings (found by FuzzDecode): raw control
// characters and malformed escapes such as "\x" or "\u12". The payload is forwarded as is, to browsers
// whose JSON.parse rejects both, so scanText rejects bad escapes itself, and apiStrict
// (ValidateString, which rejects raw control characters but doubles the decode time) runs only on the
// rare input that has a byte below 0x20 at all.
var (
	api       = sonic.Config{CaseSensitive: true}.Froze()
	apiStrict = sonic.Config{CaseSensitive: true, ValidateString: true}.Froze()
)

// decoderFor checks data for what sonic would let through and picks the config strict enough for it.
func decoderFor(data []byte) (sonic.API, *Error) {
	control, badEscape := scanText(data)
	switch {
	case badEscape:
		return nil, Validation("", "invalid JSON: invalid escape sequence in string")
	case control:
		return apiStrict, nil
	}
	return api, nil
}

// scanText reports whether data has a byte below 0x20 (compact JSON never does; pretty-printed JSON
// has newlines, valid outside strings, and takes the strict path) and whether it has a malformed
// escape. In JSON a backslash appears only inside strings and always starts an escape, so reading
// escapes left to right without tracking string boundaries is exact for any text sonic accepts. Eight
// bytes at a time while there is nothing to look at: this runs on every envelope.
func scanText(data []byte) (control, badEscape bool) {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	for i := 0; i < len(data); {
		if i+8 <= len(data) {
			x := binary.LittleEndian.Uint64(data[i:])
			y := x ^ (ones * '\\')
			// Bit tricks "hasless(x, 0x20)" and "haszero(y)": some byte is a control or a backslash.
			if (x-ones*0x20)&^x&highs == 0 && (y-ones)&^y&highs == 0 {
				i += 8
				continue
			}
		}
		c := data[i]
		i++
		if c < 0x20 {
			control = true
			continue
		}
		if c != '\\' {
			continue
		}
		if i >= len(data) {
			return control, true
		}
		switch data[i] {
		case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			i++
		case 'u':
			if i+5 > len(data) || !isHex(data[i+1]) || !isHex(data[i+2]) || !isHex(data[i+3]) || !isHex(data[i+4]) {
				return control, true
			}
			i += 5
		default:
			return control, true
		}
	}
	return control, false
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}
