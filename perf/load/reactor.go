package load

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/gobwas/ws"
	"github.com/panjf2000/gnet/v2"
)

// reactor reads the measured connections on a few gnet event loops instead of a goroutine each.
// A goroutine per connection costs a park, a wake-up and often a read that finds nothing for
// every burst a connection gets; on the two cores the server shares, that was about a third of
// the generator's CPU. Here one epoll_wait returns every socket with data, each is read once into
// the loop's buffer, and its frames are scanned where they lie: the generator's cost per
// delivery is the scan and a share of one read.
type reactor struct {
	gnet.BuiltinEventEngine
	cli  *gnet.Client
	open sync.WaitGroup // one per enrolled connection, done when it is closed
}

// frameHandler takes the messages of one enrolled connection, on its reactor loop.
type frameHandler interface {
	// message is one complete data message; msg is valid only during the call. now is when
	// the read that brought it returned (unix ns).
	message(msg []byte, now int64)
	// end says the connection is gone, with why.
	end(err error)
}

// reactorConn is one enrolled connection's reading state, loop-only.
type reactorConn struct {
	c     *conn
	gc    gnet.Conn // once the reactor has read it (set on its loop); before, pongs go through c
	h     frameHandler
	frag  []byte // the fragments of a message in progress
	carry []byte // bytes the handshake's reader had read ahead and that end in a partial frame
	err   error  // why the loop closed it, when it did
}

// newReactor starts loops event loops (0: half the CPUs, at least one).
func newReactor(loops int) (*reactor, error) {
	if loops <= 0 {
		loops = halfCPUs()
	}
	r := &reactor{}
	cli, err := gnet.NewClient(r, gnet.WithMulticore(true), gnet.WithNumEventLoop(loops),
		gnet.WithTCPNoDelay(gnet.TCPNoDelay), gnet.WithLogger(quietLogger{}))
	if err != nil {
		return nil, fmt.Errorf("reactor: %w", err)
	}
	if err := cli.Start(); err != nil {
		return nil, fmt.Errorf("reactor: %w", err)
	}
	r.cli = cli
	return r, nil
}

// enroll hands c to the reactor: from now on h gets its messages, on a reactor loop, and c's
// own net.Conn is closed (gnet reads a duplicate of its descriptor). Whatever c's reader had
// read ahead is handled first, on this goroutine. c.close closes it through the reactor.
func (r *reactor) enroll(c *conn, h frameHandler) error {
	rc := &reactorConn{c: c, h: h}
	if n := c.br.Buffered(); n > 0 {
		early, _ := c.br.Peek(n)
		used, err := rc.consume(early, time.Now().UnixNano())
		if err != nil {
			return fmt.Errorf("%s: %w", c.id, err)
		}
		rc.carry = append([]byte(nil), early[used:]...)
	}
	r.open.Add(1)
	gc, err := r.cli.EnrollContext(c.nc, rc)
	if err != nil {
		r.open.Done()
		return fmt.Errorf("%s: enrolling in the reactor: %w", c.id, err)
	}
	c.enrolled(gc)
	return nil
}

// wait waits until every enrolled connection is closed, then stops the loops.
func (r *reactor) wait() {
	r.open.Wait()
	_ = r.cli.Stop()
}

func (r *reactor) OnTraffic(gc gnet.Conn) gnet.Action {
	rc, _ := gc.Context().(*reactorConn)
	if rc == nil {
		return gnet.Close
	}
	rc.gc = gc
	// One clock reading per read: messages that came in one read arrived together.
	now := time.Now().UnixNano()
	if len(rc.carry) > 0 {
		more, _ := gc.Next(-1)
		rc.carry = append(rc.carry, more...)
		n, err := rc.consume(rc.carry, now)
		rc.carry = rc.carry[n:]
		if len(rc.carry) == 0 {
			rc.carry = nil
		}
		return rc.verdict(err)
	}
	buf, _ := gc.Peek(-1)
	n, err := rc.consume(buf, now)
	if n > 0 {
		_, _ = gc.Discard(n)
	}
	return rc.verdict(err)
}

// pong answers a ping: on the reactor's loop once it reads the connection,
// before that (bytes the handshake read ahead) on the connection itself.
func (rc *reactorConn) pong(p []byte) error {
	if rc.gc == nil {
		return rc.c.writeControl(ws.OpPong, p)
	}
	_, err := rc.gc.Write(appendFrame(nil, ws.OpPong, p))
	return err
}

func (rc *reactorConn) verdict(err error) gnet.Action {
	if err != nil {
		rc.err = err
		return gnet.Close
	}
	return gnet.None
}

func (r *reactor) OnClose(gc gnet.Conn, err error) gnet.Action {
	rc, _ := gc.Context().(*reactorConn)
	if rc == nil {
		return gnet.None
	}
	switch {
	case rc.err != nil:
		err = rc.err
	case err == nil:
		err = io.EOF
	}
	rc.h.end(err)
	r.open.Done()
	return gnet.None
}

// consume handles the complete frames at the start of buf and returns how many bytes they took;
// a partial frame at the end waits for more. Server frames are unmasked, but a masked one is
// unmasked in place.
func (rc *reactorConn) consume(buf []byte, now int64) (int, error) {
	used := 0
	for {
		b := buf[used:]
		if len(b) < 2 {
			return used, nil
		}
		fin, op, masked := b[0]&0x80 != 0, ws.OpCode(b[0]&0x0f), b[1]&0x80 != 0
		hdr, n := 2, int64(b[1]&0x7f)
		switch n {
		case 126:
			if len(b) < 4 {
				return used, nil
			}
			n, hdr = int64(binary.BigEndian.Uint16(b[2:])), 4
		case 127:
			if len(b) < 10 {
				return used, nil
			}
			n, hdr = int64(binary.BigEndian.Uint64(b[2:])), 10
		}
		if n < 0 || n > maxMessage || int64(len(rc.frag))+n > maxMessage {
			return used, fmt.Errorf("message longer than %d bytes", maxMessage)
		}
		var mask [4]byte
		if masked {
			if len(b) < hdr+4 {
				return used, nil
			}
			copy(mask[:], b[hdr:])
			hdr += 4
		}
		if int64(len(b)-hdr) < n {
			return used, nil
		}
		p := b[hdr : hdr+int(n)]
		used += hdr + int(n)
		if masked {
			ws.Cipher(p, mask, 0)
		}
		switch {
		case op.IsControl():
			if n > 125 {
				return used, errors.New("control frame longer than 125 bytes")
			}
			switch op {
			case ws.OpPing:
				if err := rc.pong(p); err != nil {
					return used, err
				}
			case ws.OpClose:
				return used, errServerClosed
			}
		case fin && len(rc.frag) == 0:
			rc.h.message(p, now)
		default:
			rc.frag = append(rc.frag, p...)
			if fin {
				rc.h.message(rc.frag, now)
				rc.frag = rc.frag[:0]
			}
		}
	}
}

// quietLogger drops gnet's own logging: the generator reports what went wrong itself.
type quietLogger struct{}

func (quietLogger) Debugf(string, ...any) {}
func (quietLogger) Infof(string, ...any)  {}
func (quietLogger) Warnf(string, ...any)  {}
func (quietLogger) Errorf(string, ...any) {}
func (quietLogger) Fatalf(string, ...any) {}
