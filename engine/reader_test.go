package engine

import (
	"bytes"
	"encoding/binary"
	"strings"
	"testing"

	"github.com/gobwas/ws"
)

// recorder is a frameSink that remembers what it saw.
type recorder struct {
	msgs      []string
	pings     []string
	pongs     int
	closeCode ws.StatusCode
	closed    bool
}

func (r *recorder) onMessage(m []byte)         { r.msgs = append(r.msgs, string(m)) }
func (r *recorder) onPing(p []byte)            { r.pings = append(r.pings, string(p)) }
func (r *recorder) onPong([]byte)              { r.pongs++ }
func (r *recorder) onClose(code ws.StatusCode) { r.closed, r.closeCode = true, code }
func (r *recorder) stopped() bool              { return r.closed }

var testMask = [4]byte{0x12, 0x34, 0x56, 0x78}

// clientFrame builds a masked client frame.
func clientFrame(fin bool, op ws.OpCode, payload []byte) []byte {
	f := ws.NewFrame(op, fin, append([]byte(nil), payload...))
	f = ws.MaskFrameWith(f, testMask)
	b, err := ws.CompileFrame(f)
	if err != nil {
		panic(err)
	}
	return b
}

// feedAll runs the reader over stream the way the engine does: each call sees
// everything buffered so far, and consumed bytes leave the buffer. chunk is
// how many new bytes arrive per read.
func feedAll(t *testing.T, maxMsg int64, stream []byte, chunk int) (*recorder, *closeError) {
	t.Helper()
	return feedChunks(t, maxMsg, stream, func() int { return chunk })
}

// feedChunks is feedAll with the size of each read given by next. Like the
// engine, it does not call the reader while fewer bytes are buffered than it
// said it needs.
func feedChunks(t *testing.T, maxMsg int64, stream []byte, next func() int) (*recorder, *closeError) {
	t.Helper()
	r := &msgReader{maxMessage: maxMsg}
	rec := &recorder{}
	var buf []byte
	for off := 0; off < len(stream); {
		end := min(off+max(next(), 1), len(stream))
		buf = append(buf, stream[off:end]...)
		off = end
		if len(buf) < r.need() {
			continue
		}
		n, err := r.feed(buf, rec)
		buf = buf[n:]
		if err != nil {
			return rec, err
		}
		if rec.closed {
			break
		}
	}
	return rec, nil
}

func TestReaderWholeAndSplit(t *testing.T) {
	var stream []byte
	stream = append(stream, clientFrame(true, ws.OpText, []byte(`{"a":1}`))...)
	stream = append(stream, clientFrame(true, ws.OpText, []byte(strings.Repeat("x", 300)))...) // 16-bit length
	stream = append(stream, clientFrame(true, ws.OpText, bytes.Repeat([]byte("y"), 70000))...) // 64-bit length
	stream = append(stream, clientFrame(true, ws.OpText, []byte("héllo"))...)
	for _, chunk := range []int{len(stream), 1, 2, 3, 7, 1000} {
		rec, err := feedAll(t, 1<<20, stream, chunk)
		if err != nil {
			t.Fatalf("chunk %d: %v", chunk, err)
		}
		if len(rec.msgs) != 4 || rec.msgs[0] != `{"a":1}` || len(rec.msgs[1]) != 300 || len(rec.msgs[2]) != 70000 || rec.msgs[3] != "héllo" {
			t.Fatalf("chunk %d: got %d messages", chunk, len(rec.msgs))
		}
	}
}

func TestReaderFragmentsWithPingBetween(t *testing.T) {
	var stream []byte
	stream = append(stream, clientFrame(false, ws.OpText, []byte("hel"))...)
	stream = append(stream, clientFrame(true, ws.OpPing, []byte("p1"))...)
	stream = append(stream, clientFrame(false, ws.OpContinuation, []byte("lo "))...)
	stream = append(stream, clientFrame(true, ws.OpPong, nil)...)
	stream = append(stream, clientFrame(true, ws.OpContinuation, []byte("world"))...)
	stream = append(stream, clientFrame(true, ws.OpText, []byte("next"))...)
	for _, chunk := range []int{len(stream), 1, 5} {
		rec, err := feedAll(t, 1<<20, stream, chunk)
		if err != nil {
			t.Fatal(err)
		}
		if len(rec.msgs) != 2 || rec.msgs[0] != "hello world" || rec.msgs[1] != "next" {
			t.Fatalf("chunk %d: messages %q", chunk, rec.msgs)
		}
		if len(rec.pings) != 1 || rec.pings[0] != "p1" || rec.pongs != 1 {
			t.Fatalf("chunk %d: pings %q pongs %d", chunk, rec.pings, rec.pongs)
		}
	}
}

// A UTF-8 sequence split across fragments is valid: only the whole message counts.
func TestReaderUTF8SplitAcrossFragments(t *testing.T) {
	e := []byte("é") // 2 bytes
	var stream []byte
	stream = append(stream, clientFrame(false, ws.OpText, e[:1])...)
	stream = append(stream, clientFrame(true, ws.OpContinuation, e[1:])...)
	rec, err := feedAll(t, 1<<20, stream, 1)
	if err != nil || len(rec.msgs) != 1 || rec.msgs[0] != "é" {
		t.Fatalf("got %q, %v", rec.msgs, err)
	}
}

func rawHeader(b0, b1 byte, ext []byte, mask bool) []byte {
	h := append([]byte{b0, b1}, ext...)
	if mask {
		h = append(h, testMask[:]...)
	}
	return h
}

func TestReaderErrors(t *testing.T) {
	huge := make([]byte, 8)
	binary.BigEndian.PutUint64(huge, 1<<63-1)
	msb := make([]byte, 8)
	binary.BigEndian.PutUint64(msb, 1<<63)
	cases := []struct {
		name   string
		stream []byte
		max    int64
		code   ws.StatusCode
	}{
		{"declared length 2^63-1", rawHeader(0x81, 0x80|127, huge, true), 1 << 20, CloseTooBig},
		{"declared length with MSB set", rawHeader(0x81, 0x80|127, msb, true), 1 << 20, CloseProtocolError},
		{"unmasked", []byte{0x81, 0x02, 'h', 'i'}, 1 << 20, CloseProtocolError},
		{"rsv1", rawHeader(0xC1, 0x80|2, nil, true), 1 << 20, CloseProtocolError},
		{"rsv3", rawHeader(0x91, 0x80|2, nil, true), 1 << 20, CloseProtocolError},
		{"reserved opcode", rawHeader(0x83, 0x80, nil, true), 1 << 20, CloseProtocolError},
		{"binary", clientFrame(true, ws.OpBinary, []byte{1, 2}), 1 << 20, CloseUnsupportedData},
		{"invalid utf-8", clientFrame(true, ws.OpText, []byte{0xff, 0xfe}), 1 << 20, CloseInvalidPayload},
		{"invalid utf-8 fragmented", append(clientFrame(false, ws.OpText, []byte("ok")), clientFrame(true, ws.OpContinuation, []byte{0xc0})...), 1 << 20, CloseInvalidPayload},
		{"oversized frame", clientFrame(true, ws.OpText, bytes.Repeat([]byte("a"), 2000)), 1000, CloseTooBig},
		{"oversized fragmented", append(clientFrame(false, ws.OpText, bytes.Repeat([]byte("a"), 600)), clientFrame(true, ws.OpContinuation, bytes.Repeat([]byte("a"), 600))...), 1000, CloseTooBig},
		{"continuation first", clientFrame(true, ws.OpContinuation, []byte("x")), 1 << 20, CloseProtocolError},
		{"text inside fragments", append(clientFrame(false, ws.OpText, []byte("a")), clientFrame(true, ws.OpText, []byte("b"))...), 1 << 20, CloseProtocolError},
		{"fragmented ping", clientFrame(false, ws.OpPing, nil), 1 << 20, CloseProtocolError},
		{"ping over 125", clientFrame(true, ws.OpPing, bytes.Repeat([]byte("p"), 126)), 1 << 20, CloseProtocolError},
		{"close one byte", clientFrame(true, ws.OpClose, []byte{3}), 1 << 20, CloseProtocolError},
		{"close code 1005", clientFrame(true, ws.OpClose, []byte{0x03, 0xED}), 1 << 20, CloseProtocolError},
		{"close code 5000", clientFrame(true, ws.OpClose, []byte{0x13, 0x88}), 1 << 20, CloseProtocolError},
		{"close reason bad utf-8", clientFrame(true, ws.OpClose, []byte{0x03, 0xE8, 0xff}), 1 << 20, CloseInvalidPayload},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, chunk := range []int{len(tc.stream), 1} {
				_, err := feedAll(t, tc.max, tc.stream, chunk)
				if err == nil || err.code != tc.code {
					t.Fatalf("chunk %d: got %v, want close %d", chunk, err, tc.code)
				}
			}
		})
	}
}

// A frame's header is parsed once: while its payload is incomplete the reader
// asks for the whole frame before it needs to be called again.
func TestReaderNeedsTheWholeFrame(t *testing.T) {
	r := &msgReader{maxMessage: 1 << 20}
	rec := &recorder{}
	f := clientFrame(true, ws.OpText, bytes.Repeat([]byte("n"), 1000))
	if n, err := r.feed(f[:10], rec); n != 0 || err != nil || r.need() != len(f) {
		t.Fatalf("after the header: consumed %d, err %v, need %d, want %d", n, err, r.need(), len(f))
	}
	// The header's bytes are not parsed again: corrupting them changes nothing.
	g := append([]byte(nil), f...)
	g[0] = 0xff
	if n, err := r.feed(g, rec); n != len(f) || err != nil || len(rec.msgs) != 1 || r.need() != 0 {
		t.Fatalf("whole frame: consumed %d, err %v, %d messages, need %d", n, err, len(rec.msgs), r.need())
	}
}

// The too-big verdict comes from the header: the reader must not wait for
// (or buffer) a payload it will refuse.
func TestReaderRefusesOnHeader(t *testing.T) {
	r := &msgReader{maxMessage: 1000}
	hdr := rawHeader(0x81, 0x80|126, []byte{0x10, 0x00}, true) // 4096 bytes declared, none sent
	if _, err := r.feed(hdr, &recorder{}); err == nil || err.code != CloseTooBig {
		t.Fatalf("got %v", err)
	}
}

func TestReaderCloseCodes(t *testing.T) {
	for _, code := range []ws.StatusCode{1000, 1001, 1003, 1007, 1011, 1012, 1013, 1014, 3000, 4999} {
		body := binary.BigEndian.AppendUint16(nil, uint16(code))
		stream := append(clientFrame(true, ws.OpClose, append(body, "bye"...)), clientFrame(true, ws.OpText, []byte("after"))...)
		rec, err := feedAll(t, 1<<20, stream, len(stream))
		if err != nil || !rec.closed || rec.closeCode != code {
			t.Fatalf("code %d: closed %v code %d err %v", code, rec.closed, rec.closeCode, err)
		}
		if len(rec.msgs) != 0 {
			t.Fatalf("code %d: parsed past the close frame", code)
		}
	}
	rec, err := feedAll(t, 1<<20, clientFrame(true, ws.OpClose, nil), 1)
	if err != nil || !rec.closed || rec.closeCode != 0 {
		t.Fatalf("empty close: %v %v", rec.closeCode, err)
	}
}

func TestServerFrames(t *testing.T) {
	for _, n := range []int{0, 125, 126, 65535, 65536} {
		p := bytes.Repeat([]byte("z"), n)
		buf := append(make([]byte, HeaderRoom), p...)
		for name, f := range map[string][]byte{"append": AppendFrame(nil, ws.OpText, p), "text": TextFrame(p), "finish": FinishText(buf)} {
			h, err := ws.ReadHeader(bytes.NewReader(f))
			if err != nil || h.OpCode != ws.OpText || !h.Fin || h.Masked || h.Length != int64(n) || len(f) != FrameHeaderLen(n)+n {
				t.Fatalf("%s %d: header %+v err %v len %d", name, n, h, err, len(f))
			}
		}
	}
	cf := closeFrame(CloseGoingAway, strings.Repeat("é", 100))
	h, err := ws.ReadHeader(bytes.NewReader(cf))
	if err != nil || h.OpCode != ws.OpClose || h.Length > 125 {
		t.Fatalf("close frame header %+v %v", h, err)
	}
}

func FuzzFrameReader(f *testing.F) {
	f.Add(clientFrame(true, ws.OpText, []byte(`{"a":1}`)), []byte{1})
	f.Add(append(clientFrame(false, ws.OpText, []byte("he")), clientFrame(true, ws.OpContinuation, []byte("y"))...), []byte{3, 1, 7})
	f.Add(clientFrame(true, ws.OpClose, []byte{0x03, 0xE8}), []byte{2})
	f.Add(clientFrame(true, ws.OpPing, []byte("x")), []byte{5, 2})
	f.Add(rawHeader(0x81, 0x80|127, []byte{0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, true), []byte{1})
	f.Add(append(clientFrame(true, ws.OpText, bytes.Repeat([]byte("z"), 300)), clientFrame(true, ws.OpText, []byte("next"))...), []byte{1, 3, 200, 0, 64})
	f.Fuzz(func(t *testing.T, stream []byte, sizes []byte) {
		// Whatever the reads' sizes, the reader (which keeps the header of
		// the frame in progress between reads) must see the same messages
		// and reach the same verdict as when it gets the stream at once.
		whole, werr := feedAll(t, 4096, append([]byte(nil), stream...), len(stream)+1)
		i := 0
		split, serr := feedChunks(t, 4096, append([]byte(nil), stream...), func() int {
			if len(sizes) == 0 {
				return 1
			}
			n := int(sizes[i%len(sizes)])
			i++
			return n
		})
		if (werr == nil) != (serr == nil) || (werr != nil && werr.code != serr.code) {
			t.Fatalf("verdicts differ: whole %v, split %v", werr, serr)
		}
		if len(whole.msgs) != len(split.msgs) || len(whole.pings) != len(split.pings) || whole.pongs != split.pongs || whole.closeCode != split.closeCode {
			t.Fatalf("events differ: whole %d messages %d pings %d pongs close %d, split %d %d %d %d",
				len(whole.msgs), len(whole.pings), whole.pongs, whole.closeCode, len(split.msgs), len(split.pings), split.pongs, split.closeCode)
		}
		for i := range whole.msgs {
			if whole.msgs[i] != split.msgs[i] {
				t.Fatalf("message %d differs", i)
			}
		}
	})
}

func BenchmarkReaderFeed(b *testing.B) {
	frame := clientFrame(true, ws.OpText, []byte(`{"version":"1.0","id":"arq_msg_001","type":"event","room":"science","channel":"general","from":"web_client_1","timestamp":"2025-01-01T12:00:00.000Z","payload":{"message":"hi"}}`))
	stream := bytes.Repeat(frame, 16)
	work := make([]byte, len(stream))
	r := &msgReader{maxMessage: 1 << 20}
	rec := &countSink{}
	b.ReportAllocs()
	b.SetBytes(int64(len(stream)))
	for b.Loop() {
		copy(work, stream)
		if n, err := r.feed(work, rec); err != nil || n != len(work) {
			b.Fatal(n, err)
		}
	}
}

type countSink struct{ n int }

func (c *countSink) onMessage([]byte)      { c.n++ }
func (c *countSink) onPing([]byte)         {}
func (c *countSink) onPong([]byte)         {}
func (c *countSink) onClose(ws.StatusCode) {}
func (c *countSink) stopped() bool         { return false }
