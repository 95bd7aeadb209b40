package engine

import (
	"unicode/utf8"

	"github.com/gobwas/ws"
)

// frameSink receives what msgReader finds in the byte stream.
type frameSink interface {
	// onMessage gets one complete text message, valid only until it returns.
	onMessage(msg []byte)
	onPing(payload []byte)
	onPong(payload []byte)
	// onClose gets the peer's close code (0 when it sent none).
	onClose(code ws.StatusCode)
	// stopped reports that the connection is closing: parse nothing more.
	stopped() bool
}

// msgReader is the per-connection frame parser: a state machine over whatever
// bytes the event loop has buffered, so a frame may arrive whole, byte by
// byte, or many to a segment. Only a fragmented message's finished fragments
// are copied; everything else is read in place.
type msgReader struct {
	maxMessage int64
	frag       []byte // finished fragments of the message in progress
	inFrag     bool

	// The frame in progress, whose header was parsed (and checked) but whose
	// payload is not all buffered yet: hdrLen is 0 when there is none. Kept so
	// that a frame trickled in costs one parse, and so that need can tell the
	// caller not to look at the buffer again until the payload is complete.
	hdr    frameHeader
	hdrLen int
}

// need is how many bytes, counted from the first unconsumed one, must be
// buffered before feed can make progress: the whole frame in progress, or 0
// when any new byte may help (no frame started, or its header incomplete).
func (r *msgReader) need() int {
	if r.hdrLen == 0 {
		return 0
	}
	return r.hdrLen + int(r.hdr.length)
}

// fragKeepCap bounds the fragment buffer kept between messages, so one huge
// fragmented message does not pin its memory for the connection's lifetime.
const fragKeepCap = 64 << 10

// feed parses every complete frame at the start of b, unmasking payloads in
// place, and returns how many bytes it consumed. b must start at the first
// byte not consumed by the previous call and hold at least the bytes that call
// saw. A non-nil error means the connection must be closed with that error's
// code; bytes after a close frame are not parsed.
func (r *msgReader) feed(b []byte, s frameSink) (consumed int, err *closeError) {
	pos := 0
	for !s.stopped() {
		var (
			h  frameHeader
			hl int
		)
		if r.hdrLen > 0 {
			// Parsed and checked by an earlier call, at the start of b.
			h, hl = r.hdr, r.hdrLen
			r.hdrLen = 0
		} else {
			var cerr *closeError
			h, hl, cerr = parseHeader(b[pos:], r.maxMessage)
			if cerr != nil {
				return pos, cerr
			}
			if hl == 0 {
				return pos, nil
			}
			if cerr := r.checkHeader(h); cerr != nil {
				return pos, cerr
			}
		}
		total := hl + int(h.length)
		if len(b)-pos < total {
			r.hdr, r.hdrLen = h, hl
			return pos, nil
		}
		payload := b[pos+hl : pos+total]
		ws.Cipher(payload, h.mask, 0)
		pos += total

		switch h.opcode {
		case ws.OpText:
			if !h.fin {
				r.inFrag = true
				r.frag = append(r.frag[:0], payload...)
				continue
			}
			if !utf8.Valid(payload) {
				return pos, errBadUTF8
			}
			s.onMessage(payload)
		case ws.OpContinuation:
			r.frag = append(r.frag, payload...)
			if !h.fin {
				continue
			}
			r.inFrag = false
			msg := r.frag
			if cap(r.frag) > fragKeepCap {
				r.frag = nil
			} else {
				r.frag = r.frag[:0]
			}
			if !utf8.Valid(msg) {
				return pos, errBadUTF8
			}
			s.onMessage(msg)
		case ws.OpPing:
			s.onPing(payload)
		case ws.OpPong:
			s.onPong(payload)
		case ws.OpClose:
			code, cerr := parseClosePayload(payload)
			if cerr != nil {
				return pos, cerr
			}
			s.onClose(code)
			return pos, nil
		}
	}
	return pos, nil
}

// checkHeader refuses a frame on its header, before its payload is awaited.
func (r *msgReader) checkHeader(h frameHeader) *closeError {
	switch h.opcode {
	case ws.OpBinary:
		return errBinary
	case ws.OpText:
		if r.inFrag {
			return errExpectedCont
		}
	case ws.OpContinuation:
		if !r.inFrag {
			return errUnexpectedCont
		}
		if int64(len(r.frag))+h.length > r.maxMessage {
			return errTooBig
		}
	}
	return nil
}
