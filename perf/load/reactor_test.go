package load

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

type recordedMessages struct{ msgs []string }

func (r *recordedMessages) message(msg []byte, _ int64) { r.msgs = append(r.msgs, string(msg)) }
func (r *recordedMessages) end(error)                   {}

// recordingSocket is the client side of a connection whose writes are kept (the pongs).
type recordingSocket struct {
	net.Conn
	written bytes.Buffer
}

func (r *recordingSocket) Write(p []byte) (int, error)      { return r.written.Write(p) }
func (r *recordingSocket) SetWriteDeadline(time.Time) error { return nil }

// pongs returns the payloads of the pong frames written.
func (r *recordingSocket) pongs(t *testing.T) []string {
	t.Helper()
	var out []string
	rd := bytes.NewReader(r.written.Bytes())
	for rd.Len() > 0 {
		f, err := ws.ReadFrame(rd)
		if err != nil {
			t.Fatalf("reading what was written: %v", err)
		}
		if f.Header.OpCode != ws.OpPong {
			t.Fatalf("wrote a %v frame, want only pongs", f.Header.OpCode)
		}
		out = append(out, string(ws.UnmaskFrame(f).Payload))
	}
	return out
}

// serverFrame is one unmasked frame as the server writes it.
func serverFrame(op ws.OpCode, fin bool, p []byte) []byte {
	b0 := byte(op)
	if fin {
		b0 |= 0x80
	}
	var f []byte
	switch n := len(p); {
	case n < 126:
		f = []byte{b0, byte(n)}
	case n <= 0xffff:
		f = binary.BigEndian.AppendUint16([]byte{b0, 126}, uint16(n))
	default:
		f = binary.BigEndian.AppendUint64([]byte{b0, 127}, uint64(n))
	}
	return append(f, p...)
}

// The reactor's frame reader takes frames however the socket splits them: every split point of
// a stream of short, 16-bit and 64-bit length frames, a fragmented message with a ping between
// its fragments, and a masked frame give the same messages, and the ping is answered.
func TestReactorConsumeAnySplit(t *testing.T) {
	long, huge := bytes.Repeat([]byte("x"), 300), bytes.Repeat([]byte("y"), 70000)
	var stream []byte
	stream = append(stream, serverFrame(ws.OpText, true, []byte(`{"a":1}`))...)
	stream = append(stream, serverFrame(ws.OpText, true, long)...)
	stream = append(stream, serverFrame(ws.OpText, false, []byte(`{"frag`))...)
	stream = append(stream, serverFrame(ws.OpPing, true, []byte("hi"))...)
	stream = append(stream, serverFrame(ws.OpContinuation, true, []byte(`":2}`))...)
	stream = append(stream, serverFrame(ws.OpBinary, true, huge)...)
	stream = append(stream, appendFrame(nil, ws.OpText, []byte(`{"masked":3}`))...)
	want := []string{`{"a":1}`, string(long), `{"frag":2}`, string(huge), `{"masked":3}`}

	for split := 0; split <= len(stream); split += 1 + split/64 {
		rec := &recordedMessages{}
		sock := &recordingSocket{}
		rc := &reactorConn{h: rec, c: &conn{nc: sock}}
		// What arrives is appended to what is left unconsumed, as gnet's buffer does.
		buf := append([]byte(nil), stream[:split]...)
		n, err := rc.consume(buf, 0)
		if err != nil {
			t.Fatalf("split %d: %v", split, err)
		}
		buf = append(buf[n:], stream[split:]...)
		n, err = rc.consume(buf, 0)
		if err != nil || n != len(buf) {
			t.Fatalf("split %d: consumed %d of %d: %v", split, n, len(buf), err)
		}
		if len(rec.msgs) != len(want) {
			t.Fatalf("split %d: %d messages, want %d", split, len(rec.msgs), len(want))
		}
		for i := range want {
			if rec.msgs[i] != want[i] {
				t.Fatalf("split %d: message %d is %.40q, want %.40q", split, i, rec.msgs[i], want[i])
			}
		}
		if pongs := sock.pongs(t); len(pongs) != 1 || pongs[0] != "hi" {
			t.Fatalf("split %d: pongs %q, want one with the ping's payload", split, pongs)
		}
	}
}

// A close frame and a frame longer than the generator accepts end the connection with a clear
// error; what came before them is still handled.
func TestReactorConsumeEnds(t *testing.T) {
	rec := &recordedMessages{}
	rc := &reactorConn{h: rec}
	stream := append(serverFrame(ws.OpText, true, []byte(`{}`)), serverFrame(ws.OpClose, true, []byte{0x03, 0xe8})...)
	if _, err := rc.consume(stream, 0); !errors.Is(err, errServerClosed) || len(rec.msgs) != 1 {
		t.Errorf("close: %v after %d messages, want errServerClosed after 1", err, len(rec.msgs))
	}
	tooLong := binary.BigEndian.AppendUint64([]byte{0x81, 127}, maxMessage+1)
	if _, err := rc.consume(tooLong, 0); err == nil {
		t.Error("a frame longer than maxMessage was accepted")
	}
}
