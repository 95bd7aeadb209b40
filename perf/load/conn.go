package load

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
	"github.com/panjf2000/gnet/v2"
)

// maxMessage bounds what the generator accepts in one message; the server's default limit is
// 1 MiB, and anything bigger than that from the server is a bug worth failing on.
const maxMessage = 1 << 20

// writeTimeout bounds a single write, so that a server that stops reading cannot hang a run.
const writeTimeout = 5 * time.Second

// errServerClosed reports a close frame from the server.
var errServerClosed = errors.New("server closed the connection")

// conn is one client WebSocket connection. After set-up exactly one goroutine reads it; writes
// (events from a publisher, pongs from the reader) are serialised by wmu.
type conn struct {
	nc  net.Conn
	src countingReader // the socket (behind any bytes the handshake read ahead), under br
	br  *bufio.Reader
	id  string

	hdr []byte // scratch for ws.ReadHeaderBuffer, which wants 12 bytes of capacity
	msg []byte // the message being read; reused, valid until the next readMessage

	wmu       sync.Mutex
	wbuf      []byte    // scratch for control frames, under wmu
	wdeadline time.Time // the write deadline set on nc, under wmu

	closing atomic.Bool // set before we close it ourselves: a read error then is no disconnect

	gc gnet.Conn // once enrolled in a reactor, which reads it (nc is closed then)
}

// dialer opens client connections, spreading them over source addresses.
type dialer struct {
	srcIPs  []net.IP
	timeout time.Duration
	next    atomic.Uint64 // round-robin position in srcIPs
}

// dial connects to the server at addr (host:port) as client id.
func (d *dialer) dial(ctx context.Context, addr, id string, readBuf int) (*conn, error) {
	nd := net.Dialer{Timeout: d.timeout}
	if len(d.srcIPs) > 0 {
		ip := d.srcIPs[(d.next.Add(1)-1)%uint64(len(d.srcIPs))]
		nd.LocalAddr = &net.TCPAddr{IP: ip}
		nd.Control = bindNoPortControl
	}
	wd := ws.Dialer{
		Timeout: d.timeout,
		NetDial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return nd.DialContext(ctx, network, addr)
		},
	}
	u := "ws://" + addr + "/?client_id=" + url.QueryEscape(id) + "&client_type=service"
	nc, br, _, err := wd.Dial(ctx, u)
	if err != nil {
		return nil, fmt.Errorf("connect %s: %w", u, err)
	}
	c := &conn{nc: nc, id: id, hdr: make([]byte, 2, ws.MaxHeaderSize-2)}
	if br != nil {
		// The server wrote right behind the handshake (the welcome) and the dialer's pooled
		// reader holds those bytes: keep them in front of the socket, then give it back.
		early, _ := br.Peek(br.Buffered())
		early = bytes.Clone(early)
		ws.PutReader(br)
		c.src.r = io.MultiReader(bytes.NewReader(early), nc)
	} else {
		c.src.r = nc
	}
	c.br = bufio.NewReaderSize(&c.src, readBuf)
	return c, nil
}

// countingReader counts reads, so that a reader can tell whether a message needed a read from
// the socket (and so a fresh clock reading) or was already buffered.
type countingReader struct {
	r     io.Reader
	reads uint64
}

func (cr *countingReader) Read(p []byte) (int, error) {
	cr.reads++
	return cr.r.Read(p)
}

// close closes the connection on purpose (its reader then ends without counting a disconnect).
func (c *conn) close() {
	c.closing.Store(true)
	if c.gc != nil {
		_ = c.gc.Close()
		return
	}
	c.nc.Close()
}

// enrolled says a reactor reads c from now on, through gc.
func (c *conn) enrolled(gc gnet.Conn) { c.gc = gc }

// readMessage returns the next complete data message, answering pings on the way. Fragments are
// joined. The returned slice is reused by the next call.
func (c *conn) readMessage() ([]byte, error) {
	c.msg = c.msg[:0]
	for {
		h, err := ws.ReadHeaderBuffer(c.br, c.hdr)
		if err != nil {
			return nil, err
		}
		if h.Length < 0 || h.Length > maxMessage || int64(len(c.msg))+h.Length > maxMessage {
			return nil, fmt.Errorf("message longer than %d bytes", maxMessage)
		}
		n := int(h.Length)
		if h.OpCode.IsControl() {
			var ctl [125]byte
			if n > len(ctl) {
				return nil, errors.New("control frame longer than 125 bytes")
			}
			p := ctl[:n]
			if _, err := io.ReadFull(c.br, p); err != nil {
				return nil, err
			}
			if h.Masked {
				ws.Cipher(p, h.Mask, 0)
			}
			switch h.OpCode {
			case ws.OpPing:
				if err := c.writeControl(ws.OpPong, p); err != nil {
					return nil, err
				}
			case ws.OpClose:
				return nil, errServerClosed
			}
			continue
		}
		start := len(c.msg)
		c.msg = slices.Grow(c.msg, n)[:start+n]
		if _, err := io.ReadFull(c.br, c.msg[start:]); err != nil {
			return nil, err
		}
		if h.Masked {
			ws.Cipher(c.msg[start:], h.Mask, 0)
		}
		if h.Fin {
			return c.msg, nil
		}
	}
}

func (c *conn) writeControl(op ws.OpCode, p []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.wbuf = appendFrame(c.wbuf[:0], op, p)
	return c.writeLocked(c.wbuf)
}

// write sends b (one or more complete frames) in one write.
func (c *conn) write(b []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.writeLocked(b)
}

// writeLocked writes b with at least half of writeTimeout to go. The deadline is moved only
// when less than that is left: setting it on every write re-arms a runtime timer each time,
// a cost per message the server's measurements would share the cores with.
func (c *conn) writeLocked(b []byte) error {
	if now := time.Now(); c.wdeadline.Sub(now) < writeTimeout/2 {
		c.wdeadline = now.Add(writeTimeout)
		if err := c.nc.SetWriteDeadline(c.wdeadline); err != nil {
			return err
		}
	}
	_, err := c.nc.Write(b)
	return err
}

// appendFrame appends one final, masked client frame. Clients must mask (RFC 6455 5.3); the key
// need not be cryptographically strong for a load test, so the cheap per-thread generator does.
func appendFrame(dst []byte, op ws.OpCode, payload []byte) []byte {
	n := len(payload)
	dst = append(dst, 0x80|byte(op))
	switch {
	case n < 126:
		dst = append(dst, 0x80|byte(n))
	case n <= 0xffff:
		dst = append(dst, 0x80|126, byte(n>>8), byte(n))
	default:
		dst = append(dst, 0x80|127,
			byte(uint64(n)>>56), byte(uint64(n)>>48), byte(uint64(n)>>40), byte(uint64(n)>>32),
			byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
	m := rand.Uint32()
	mask := [4]byte{byte(m), byte(m >> 8), byte(m >> 16), byte(m >> 24)}
	dst = append(dst, mask[:]...)
	start := len(dst)
	dst = append(dst, payload...)
	ws.Cipher(dst[start:], mask, 0)
	return dst
}

// timestampLayout is RFC 3339 with milliseconds, as in the protocol's examples.
const timestampLayout = "2006-01-02T15:04:05.000Z07:00"

// appendJoin appends the JSON of a join_channel command with the given parameters object
// (nil: none).
func appendJoin(dst []byte, id, room, channel, from string, params []byte, now time.Time) []byte {
	dst = append(dst, `{"version":"1.0","id":"`...)
	dst = append(dst, id...)
	dst = append(dst, `","type":"command","room":"`...)
	dst = append(dst, room...)
	dst = append(dst, `","channel":"`...)
	dst = append(dst, channel...)
	dst = append(dst, `","from":"`...)
	dst = append(dst, from...)
	dst = append(dst, `","timestamp":"`...)
	dst = now.UTC().AppendFormat(dst, timestampLayout)
	dst = append(dst, `","payload":{"command":"join_channel","parameters":`...)
	if len(params) == 0 {
		params = []byte(`{}`)
	}
	dst = append(dst, params...)
	return append(dst, `}}`...)
}

// setup waits for the welcome, joins room:channel and waits for the join's reply, all within the
// connection's deadline. Publishing before the reply could be refused (publishers must be
// members), and a subscriber that is not yet a member would miss messages.
func (c *conn) setup(room, channel, joinID string, joinParams []byte, deadline time.Time) error {
	if err := c.nc.SetDeadline(deadline); err != nil {
		return err
	}
	for welcomed := false; !welcomed; {
		msg, err := c.readMessage()
		if err != nil {
			return fmt.Errorf("%s: waiting for the welcome: %w", c.id, err)
		}
		switch string(envType(msg)) {
		case "system":
			welcomed = true
		case "error":
			return fmt.Errorf("%s: error instead of the welcome: %s", c.id, errorText(msg))
		}
	}
	js := appendJoin(nil, joinID, room, channel, c.id, joinParams, time.Now())
	if err := c.write(appendFrame(nil, ws.OpText, js)); err != nil {
		return fmt.Errorf("%s: sending join: %w", c.id, err)
	}
	for {
		msg, err := c.readMessage()
		if err != nil {
			return fmt.Errorf("%s: waiting for the join reply: %w", c.id, err)
		}
		typ := envType(msg)
		if !bytes.Equal(stringField(msg, keyRequestID), []byte(joinID)) {
			continue // something else (a notice, another member's event): not our answer
		}
		switch string(typ) {
		case "command_response":
			if st := stringField(msg, keyStatus); string(st) != "success" {
				return fmt.Errorf("%s: join %s:%s answered %q: %s", c.id, room, channel, st, msg)
			}
			return c.nc.SetDeadline(time.Time{})
		case "error":
			return fmt.Errorf("%s: join %s:%s refused: %s", c.id, room, channel, errorText(msg))
		}
	}
}
