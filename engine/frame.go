package engine

import (
	"encoding/binary"
	"unicode/utf8"

	"github.com/gobwas/ws"
)

// Close codes used by the server (RFC 6455 section 7.4.1).
const (
	CloseNormal          ws.StatusCode = 1000
	CloseGoingAway       ws.StatusCode = 1001
	CloseProtocolError   ws.StatusCode = 1002
	CloseUnsupportedData ws.StatusCode = 1003
	CloseInvalidPayload  ws.StatusCode = 1007
	ClosePolicyViolation ws.StatusCode = 1008
	CloseTooBig          ws.StatusCode = 1009
	CloseInternalError   ws.StatusCode = 1011
	CloseTryAgainLater   ws.StatusCode = 1013
)

// frameHeader is one parsed client frame header.
type frameHeader struct {
	fin    bool
	rsv    byte
	opcode ws.OpCode
	masked bool
	mask   [4]byte
	length int64
}

// closeError asks for the connection to be closed with a code and reason.
type closeError struct {
	code   ws.StatusCode
	reason string
}

func (e *closeError) Error() string { return e.reason }

var (
	errRSV             = &closeError{CloseProtocolError, "reserved bits set"}
	errReservedOpcode  = &closeError{CloseProtocolError, "reserved opcode"}
	errUnmasked        = &closeError{CloseProtocolError, "client frames must be masked"}
	errControlFrag     = &closeError{CloseProtocolError, "fragmented control frame"}
	errControlTooLong  = &closeError{CloseProtocolError, "control frame payload over 125 bytes"}
	errLengthMSB       = &closeError{CloseProtocolError, "payload length has its most significant bit set"}
	errTooBig          = &closeError{CloseTooBig, "message too big"}
	errBinary          = &closeError{CloseUnsupportedData, "binary frames are not supported"}
	errBadUTF8         = &closeError{CloseInvalidPayload, "text is not valid UTF-8"}
	errUnexpectedCont  = &closeError{CloseProtocolError, "continuation frame without a message in progress"}
	errExpectedCont    = &closeError{CloseProtocolError, "new data frame while a fragmented message is in progress"}
	errCloseOneByte    = &closeError{CloseProtocolError, "close payload of one byte"}
	errCloseBadCode    = &closeError{CloseProtocolError, "invalid close code"}
	errCloseBadUTF8    = &closeError{CloseInvalidPayload, "close reason is not valid UTF-8"}
	errHandshakeTooBig = &closeError{CloseProtocolError, "handshake request too large"}
)

// parseHeader parses a client frame header at the start of b. It returns the
// header length, or 0 when b does not yet hold a whole header. The declared
// length is checked against maxPayload here, before any payload is awaited, so a
// client cannot make us buffer what we will refuse anyway.
func parseHeader(b []byte, maxPayload int64) (h frameHeader, n int, err *closeError) {
	if len(b) < 2 {
		return h, 0, nil
	}
	h.fin = b[0]&0x80 != 0
	h.rsv = (b[0] >> 4) & 0x07
	h.opcode = ws.OpCode(b[0] & 0x0f)
	h.masked = b[1]&0x80 != 0
	if h.rsv != 0 {
		return h, 0, errRSV
	}
	if h.opcode.IsReserved() {
		return h, 0, errReservedOpcode
	}
	if !h.masked {
		return h, 0, errUnmasked
	}
	l7 := b[1] & 0x7f
	n = 2
	switch {
	case l7 < 126:
		h.length = int64(l7)
	case l7 == 126:
		if len(b) < 4 {
			return h, 0, nil
		}
		h.length = int64(binary.BigEndian.Uint16(b[2:4]))
		n = 4
	default:
		if len(b) < 10 {
			return h, 0, nil
		}
		u := binary.BigEndian.Uint64(b[2:10])
		if u>>63 != 0 {
			return h, 0, errLengthMSB
		}
		h.length = int64(u)
		n = 10
	}
	if h.opcode.IsControl() {
		if !h.fin {
			return h, 0, errControlFrag
		}
		if h.length > 125 {
			return h, 0, errControlTooLong
		}
	} else if h.length > maxPayload {
		return h, 0, errTooBig
	}
	if len(b) < n+4 {
		return h, 0, nil
	}
	copy(h.mask[:], b[n:n+4])
	return h, n + 4, nil
}

// AppendFrame appends a server (unmasked) frame with the given opcode and
// payload: header and payload in one buffer, so one write sends both.
func AppendFrame(dst []byte, op ws.OpCode, payload []byte) []byte {
	dst = appendHeader(dst, op, len(payload))
	return append(dst, payload...)
}

// TextFrame returns a new text frame holding payload, allocated at its exact size.
func TextFrame(payload []byte) []byte {
	return AppendFrame(make([]byte, 0, FrameHeaderLen(len(payload))+len(payload)), ws.OpText, payload)
}

// FrameHeaderLen is the length of a server frame header for a payload of n bytes.
func FrameHeaderLen(n int) int {
	switch {
	case n < 126:
		return 2
	case n <= 0xffff:
		return 4
	default:
		return 10
	}
}

func appendHeader(dst []byte, op ws.OpCode, n int) []byte {
	b0 := 0x80 | byte(op)
	switch {
	case n < 126:
		return append(dst, b0, byte(n))
	case n <= 0xffff:
		return append(dst, b0, 126, byte(n>>8), byte(n))
	default:
		return append(dst, b0, 127,
			byte(uint64(n)>>56), byte(uint64(n)>>48), byte(uint64(n)>>40), byte(uint64(n)>>32),
			byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
}

// closeFrame builds a close frame carrying code and reason (reason trimmed to
// fit a control frame).
func closeFrame(code ws.StatusCode, reason string) []byte {
	if len(reason) > 123 {
		reason = reason[:123]
		for !utf8.ValidString(reason) {
			reason = reason[:len(reason)-1]
		}
	}
	body := make([]byte, 2, 2+len(reason))
	binary.BigEndian.PutUint16(body, uint16(code))
	body = append(body, reason...)
	return AppendFrame(make([]byte, 0, 2+len(body)), ws.OpClose, body)
}

// validCloseCode reports whether a peer may send code in a close frame. Unlike
// ws.CheckCloseFrameData it accepts 1012-1014 and refuses 5000 and above.
func validCloseCode(code ws.StatusCode) bool {
	switch {
	case code >= 1000 && code <= 1003:
		return true
	case code >= 1007 && code <= 1014:
		return true
	case code >= 3000 && code <= 4999:
		return true
	}
	return false
}

// parseClosePayload checks a peer's close payload and returns the code to echo.
func parseClosePayload(p []byte) (ws.StatusCode, *closeError) {
	switch {
	case len(p) == 0:
		return 0, nil
	case len(p) == 1:
		return 0, errCloseOneByte
	}
	code := ws.StatusCode(binary.BigEndian.Uint16(p))
	if !validCloseCode(code) {
		return 0, errCloseBadCode
	}
	if !utf8.Valid(p[2:]) {
		return 0, errCloseBadUTF8
	}
	return code, nil
}

// HeaderRoom is the space to reserve at the start of a buffer so that a text
// frame can be finished around its payload in place (see FinishText).
const HeaderRoom = 10

// FinishText turns buf, whose first HeaderRoom bytes were reserved and whose
// rest is the payload, into a text frame without copying the payload.
func FinishText(buf []byte) []byte {
	n := len(buf) - HeaderRoom
	start := HeaderRoom - FrameHeaderLen(n)
	appendHeader(buf[start:start], ws.OpText, n)
	return buf[start:]
}
