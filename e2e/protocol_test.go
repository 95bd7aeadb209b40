package e2e

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/arqonbus/arqonbus/client"
	"github.com/gobwas/ws"
)

// rawConn is a WebSocket connection driven frame by frame, so tests can send
// what no well-behaved client library would.
type rawConn struct {
	t  *testing.T
	nc net.Conn
	br *bufio.Reader
}

// upgradeRequest is the HTTP upgrade for client id (none if empty).
func upgradeRequest(s *server, clientID string) []byte {
	var key [16]byte
	_, _ = rand.Read(key[:])
	path := "/"
	if clientID != "" {
		path += "?client_id=" + clientID
	}
	return []byte("GET " + path + " HTTP/1.1\r\n" +
		"Host: " + s.Addr + "\r\n" +
		"Upgrade: websocket\r\n" +
		"Connection: Upgrade\r\n" +
		"Sec-WebSocket-Key: " + base64.StdEncoding.EncodeToString(key[:]) + "\r\n" +
		"Sec-WebSocket-Version: 13\r\n\r\n")
}

// rawDial opens a TCP connection, writes the upgrade request followed by
// extra (in the same write), and reads the 101 response.
func rawDial(t *testing.T, s *server, clientID string, extra []byte) *rawConn {
	t.Helper()
	nc, err := net.DialTimeout("tcp", s.Addr, 3*time.Second)
	if err != nil {
		t.Fatalf("tcp dial: %v", err)
	}
	t.Cleanup(func() { nc.Close() })
	// Every read and write below is bounded: no test can hang on the server.
	_ = nc.SetDeadline(time.Now().Add(15 * time.Second))
	if _, err := nc.Write(append(upgradeRequest(s, clientID), extra...)); err != nil {
		t.Fatalf("write upgrade: %v", err)
	}
	rc := &rawConn{t: t, nc: nc, br: bufio.NewReader(nc)}
	resp, err := http.ReadResponse(rc.br, nil)
	if err != nil {
		t.Fatalf("read upgrade response: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade answered %s", resp.Status)
	}
	return rc
}

// frame compiles one frame, masked with a random key when masked is true.
func frame(op ws.OpCode, fin, masked bool, payload []byte) []byte {
	f := ws.NewFrame(op, fin, append([]byte(nil), payload...))
	if masked {
		f = ws.MaskFrame(f)
	}
	var b bytes.Buffer
	_ = ws.WriteFrame(&b, f)
	return b.Bytes()
}

func textFrame(payload []byte) []byte { return frame(ws.OpText, true, true, payload) }

func (c *rawConn) write(b []byte) {
	c.t.Helper()
	if _, err := c.nc.Write(b); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// readFrame reads one server frame, checking that it is unmasked (RFC 6455
// 5.1: a server never masks).
func (c *rawConn) readFrame(d time.Duration) (ws.Header, []byte, error) {
	_ = c.nc.SetReadDeadline(time.Now().Add(d))
	h, err := ws.ReadHeader(c.br)
	if err != nil {
		return h, nil, err
	}
	if h.Masked {
		c.t.Errorf("server sent a masked frame")
	}
	if h.Length > 16<<20 {
		return h, nil, fmt.Errorf("server frame of %d bytes", h.Length)
	}
	p := make([]byte, h.Length)
	if _, err := io.ReadFull(c.br, p); err != nil {
		return h, nil, err
	}
	if h.Masked {
		ws.Cipher(p, h.Mask, 0)
	}
	return h, p, nil
}

// readEnvelope reads frames until a text frame arrives and decodes it;
// pongs are skipped.
func (c *rawConn) readEnvelope() client.Envelope {
	c.t.Helper()
	for {
		h, p, err := c.readFrame(5 * time.Second)
		if err != nil {
			c.t.Fatalf("waiting for an envelope: %v", err)
		}
		switch h.OpCode {
		case ws.OpText:
			if !h.Fin {
				c.t.Fatalf("test reader does not expect fragmented server messages")
			}
			var env client.Envelope
			if err := json.Unmarshal(p, &env); err != nil {
				c.t.Fatalf("server text is not an envelope: %q", p)
			}
			env.Raw = p
			return env
		case ws.OpClose:
			code, reason := ws.ParseCloseFrameData(p)
			c.t.Fatalf("closed while waiting for an envelope: %d %q", code, reason)
		}
	}
}

// expectWelcome reads the welcome envelope.
func (c *rawConn) expectWelcome() {
	c.t.Helper()
	if env := c.readEnvelope(); env.Type != "system" || env.Channel != "welcome" {
		c.t.Fatalf("first envelope is not the welcome: %s", env.Raw)
	}
}

// expectClose reads until the server's close frame, checks its code, answers
// it as RFC 6455 asks, and checks that the server then drops the TCP
// connection. Envelopes before the close (welcome, errors) are skipped.
func (c *rawConn) expectClose(want ws.StatusCode) {
	c.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		h, p, err := c.readFrame(time.Until(deadline))
		if err != nil {
			c.t.Fatalf("want close %d, got read error %v", want, err)
		}
		if h.OpCode != ws.OpClose {
			continue
		}
		code := ws.StatusNoStatusRcvd
		reason := ""
		if len(p) >= 2 {
			code, reason = ws.ParseCloseFrameData(p)
		}
		if code != want {
			c.t.Errorf("close code %d (%q), want %d", code, reason, want)
		}
		_, _ = c.nc.Write(frame(ws.OpClose, true, true, ws.NewCloseFrameBody(code, "")))
		break
	}
	// After the close handshake the server must close the socket.
	_ = c.nc.SetReadDeadline(time.Now().Add(3 * time.Second))
	if n, err := io.Copy(io.Discard, c.br); err != nil && !errors.Is(err, net.ErrClosed) && !isReset(err) {
		c.t.Errorf("server kept the connection open after close (read %d bytes): %v", n, err)
	}
}

func isReset(err error) bool {
	return err != nil && strings.Contains(err.Error(), "connection reset")
}

// pingCommand is a valid ping command from clientID with id.
func pingCommand(clientID, id string) []byte {
	return []byte(`{"version":"1.0","id":"` + id + `","type":"command","room":"science","channel":"general","from":"` +
		clientID + `","timestamp":"2025-01-01T12:00:00.000Z","payload":{"command":"ping","parameters":{}}}`)
}

// expectResponse reads envelopes until the command_response for id.
func (c *rawConn) expectResponse(id string) {
	c.t.Helper()
	for {
		env := c.readEnvelope()
		if env.RequestID() != id {
			continue
		}
		if env.Type != "command_response" {
			c.t.Fatalf("answer to %s is not a command_response: %s", id, env.Raw)
		}
		return
	}
}

// TestProtocol checks RFC 6455 framing edge cases and the SPEC's close codes
// against raw frames, then that the server still serves other connections.
func TestProtocol(t *testing.T) {
	s := startServer(t)
	// A witness connection, open through all the abuse below.
	witness := dial(t, s, client.WithClientID("proto_witness"))

	t.Run("handshake and first frame in one write", func(t *testing.T) {
		c := rawDial(t, s, "proto_onewrite", textFrame(pingCommand("proto_onewrite", "arq_onewrite")))
		c.expectWelcome()
		c.expectResponse("arq_onewrite")
	})

	t.Run("frame byte by byte", func(t *testing.T) {
		c := rawDial(t, s, "proto_bytewise", nil)
		c.expectWelcome()
		for _, b := range textFrame(pingCommand("proto_bytewise", "arq_bytewise")) {
			c.write([]byte{b})
			// Go sets TCP_NODELAY, so each byte is its own segment; the
			// pause lets the server see them one by one.
			time.Sleep(200 * time.Microsecond)
		}
		c.expectResponse("arq_bytewise")
	})

	// The same frame in two writes, cut inside the header and inside the
	// payload: a server must keep partial frames across reads.
	for _, cut := range []int{1, 2, 6, 50} {
		t.Run(fmt.Sprintf("frame split at byte %d", cut), func(t *testing.T) {
			id := fmt.Sprintf("arq_split_%d", cut)
			// One client id per cut: the previous subtest's connection may
			// still be closing on the server, and ids are unique while live.
			client := fmt.Sprintf("proto_split_%d", cut)
			c := rawDial(t, s, client, nil)
			c.expectWelcome()
			f := textFrame(pingCommand(client, id))
			c.write(f[:cut])
			time.Sleep(20 * time.Millisecond)
			c.write(f[cut:])
			c.expectResponse(id)
			c.nc.Close()
		})
	}

	t.Run("fragmented message with ping between fragments", func(t *testing.T) {
		c := rawDial(t, s, "proto_frag", nil)
		c.expectWelcome()
		msg := pingCommand("proto_frag", "arq_frag")
		half := len(msg) / 2
		c.write(frame(ws.OpText, false, true, msg[:half]))
		c.write(frame(ws.OpPing, true, true, []byte("between")))
		// The pong must come while the message is still incomplete.
		h, p, err := c.readFrame(5 * time.Second)
		if err != nil || h.OpCode != ws.OpPong || string(p) != "between" {
			t.Fatalf("want pong \"between\" mid-message, got op %d %q (%v)", h.OpCode, p, err)
		}
		c.write(frame(ws.OpContinuation, true, true, msg[half:]))
		c.expectResponse("arq_frag")
	})

	t.Run("three fragments in one write", func(t *testing.T) {
		c := rawDial(t, s, "proto_frag3", nil)
		c.expectWelcome()
		msg := pingCommand("proto_frag3", "arq_frag3")
		var b []byte
		b = append(b, frame(ws.OpText, false, true, msg[:10])...)
		b = append(b, frame(ws.OpContinuation, false, true, msg[10:20])...)
		b = append(b, frame(ws.OpContinuation, true, true, msg[20:])...)
		c.write(b)
		c.expectResponse("arq_frag3")
	})

	t.Run("declared length 2^63-1", func(t *testing.T) {
		c := rawDial(t, s, "proto_huge", nil)
		c.expectWelcome()
		var b bytes.Buffer
		_ = ws.WriteHeader(&b, ws.Header{Fin: true, OpCode: ws.OpText, Masked: true, Mask: ws.NewMask(), Length: 1<<63 - 1})
		c.write(b.Bytes())
		c.expectClose(ws.StatusMessageTooBig)
	})

	t.Run("declared length over 1 MiB default", func(t *testing.T) {
		c := rawDial(t, s, "proto_1mib", nil)
		c.expectWelcome()
		// Only the header: the server must refuse on the declared length
		// rather than wait for (and buffer) a megabyte first.
		var b bytes.Buffer
		_ = ws.WriteHeader(&b, ws.Header{Fin: true, OpCode: ws.OpText, Masked: true, Mask: ws.NewMask(), Length: 1<<20 + 1})
		c.write(b.Bytes())
		c.expectClose(ws.StatusMessageTooBig)
	})

	t.Run("unmasked client frame", func(t *testing.T) {
		c := rawDial(t, s, "proto_unmasked", nil)
		c.expectWelcome()
		c.write(frame(ws.OpText, true, false, pingCommand("proto_unmasked", "arq_unmasked")))
		c.expectClose(ws.StatusProtocolError)
	})

	t.Run("RSV1 without extension", func(t *testing.T) {
		c := rawDial(t, s, "proto_rsv1", nil)
		c.expectWelcome()
		f := ws.MaskFrame(ws.NewTextFrame(pingCommand("proto_rsv1", "arq_rsv1")))
		f.Header.Rsv = ws.Rsv(true, false, false)
		var b bytes.Buffer
		_ = ws.WriteFrame(&b, f)
		c.write(b.Bytes())
		c.expectClose(ws.StatusProtocolError)
	})

	t.Run("binary frame", func(t *testing.T) {
		c := rawDial(t, s, "proto_binary", nil)
		c.expectWelcome()
		c.write(frame(ws.OpBinary, true, true, pingCommand("proto_binary", "arq_binary")))
		c.expectClose(ws.StatusUnsupportedData)
	})

	t.Run("invalid UTF-8", func(t *testing.T) {
		c := rawDial(t, s, "proto_utf8", nil)
		c.expectWelcome()
		msg := bytes.Replace(pingCommand("proto_utf8", "arq_utf8"), []byte(`"ping"`), []byte("\"p\xffng\""), 1)
		c.write(textFrame(msg))
		c.expectClose(ws.StatusInvalidFramePayloadData)
	})

	t.Run("invalid UTF-8 split across fragments", func(t *testing.T) {
		c := rawDial(t, s, "proto_utf8frag", nil)
		c.expectWelcome()
		// "é" is C3 A9; ending the message after C3 leaves it truncated.
		c.write(frame(ws.OpText, false, true, []byte(`{"version":"1.0","x":"`+"\xc3")))
		c.write(frame(ws.OpContinuation, true, true, []byte(`"}`)))
		c.expectClose(ws.StatusInvalidFramePayloadData)
	})

	t.Run("close with 1-byte payload", func(t *testing.T) {
		c := rawDial(t, s, "proto_close1", nil)
		c.expectWelcome()
		c.write(frame(ws.OpClose, true, true, []byte{0x03}))
		c.expectClose(ws.StatusProtocolError)
	})

	t.Run("close 1000 echoed", func(t *testing.T) {
		c := rawDial(t, s, "proto_close1000", nil)
		c.expectWelcome()
		c.write(frame(ws.OpClose, true, true, ws.NewCloseFrameBody(ws.StatusNormalClosure, "bye")))
		c.expectClose(ws.StatusNormalClosure)
	})

	t.Run("ping answered with same payload", func(t *testing.T) {
		c := rawDial(t, s, "proto_ping", nil)
		c.expectWelcome()
		c.write(frame(ws.OpPing, true, true, []byte("are you there")))
		h, p, err := c.readFrame(5 * time.Second)
		if err != nil || h.OpCode != ws.OpPong || string(p) != "are you there" {
			t.Fatalf("want pong with the ping's payload, got op %d %q (%v)", h.OpCode, p, err)
		}
	})

	t.Run("control frame over 125 bytes", func(t *testing.T) {
		c := rawDial(t, s, "proto_bigping", nil)
		c.expectWelcome()
		c.write(frame(ws.OpPing, true, true, bytes.Repeat([]byte("p"), 126)))
		c.expectClose(ws.StatusProtocolError)
	})

	t.Run("continuation without start", func(t *testing.T) {
		c := rawDial(t, s, "proto_cont", nil)
		c.expectWelcome()
		c.write(frame(ws.OpContinuation, true, true, []byte(`{}`)))
		c.expectClose(ws.StatusProtocolError)
	})

	// After all that, the server still routes for everyone else.
	ctx := testCtx(t, 10*time.Second)
	if !s.Alive() {
		t.Fatalf("server died during protocol tests")
	}
	if _, err := witness.Command(ctx, "science", "general", "ping", nil); err != nil {
		t.Errorf("witness connection broken after protocol errors: %v", err)
	}
	fresh := dial(t, s, client.WithClientID("proto_fresh"))
	for _, c := range []*client.Conn{witness, fresh} {
		if err := c.Join(ctx, "science", "general"); err != nil {
			t.Fatalf("%s join: %v", c.ClientID(), err)
		}
	}
	id, err := fresh.Publish("science", "general", map[string]any{"message": "still alive"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := witness.Expect(ctx, func(e client.Envelope) bool { return e.ID == id }); err != nil {
		t.Errorf("event between healthy connections not delivered after protocol errors: %v", err)
	}
}

// TestOversizedMessage uses a small ARQONBUS_MAX_MESSAGE_SIZE so the whole
// oversized frame can be sent: whole, and as fragments each under the limit.
func TestOversizedMessage(t *testing.T) {
	s := startServer(t, "ARQONBUS_MAX_MESSAGE_SIZE=2048")
	witness := dial(t, s, client.WithClientID("big_witness"))

	t.Run("one frame", func(t *testing.T) {
		c := rawDial(t, s, "big_one", nil)
		c.expectWelcome()
		msg := bytes.Replace(pingCommand("big_one", "arq_big_one"), []byte(`"parameters":{}`),
			[]byte(`"parameters":{"pad":"`+strings.Repeat("x", 3000)+`"}`), 1)
		c.write(textFrame(msg))
		c.expectClose(ws.StatusMessageTooBig)
	})

	t.Run("fragments", func(t *testing.T) {
		c := rawDial(t, s, "big_frag", nil)
		c.expectWelcome()
		chunk := bytes.Repeat([]byte("y"), 1500)
		c.write(frame(ws.OpText, false, true, append([]byte(`{"pad":"`), chunk...)))
		c.write(frame(ws.OpContinuation, true, true, append(chunk, []byte(`"}`)...)))
		c.expectClose(ws.StatusMessageTooBig)
	})

	t.Run("just under the limit", func(t *testing.T) {
		c := rawDial(t, s, "big_ok", nil)
		c.expectWelcome()
		base := pingCommand("big_ok", "arq_big_ok")
		pad := 2048 - len(base) - len(`"pad":""`)
		msg := bytes.Replace(base, []byte(`"parameters":{}`),
			[]byte(`"parameters":{"pad":"`+strings.Repeat("z", pad)+`"}`), 1)
		if len(msg) != 2048 {
			t.Fatalf("built %d bytes, want 2048", len(msg))
		}
		c.write(textFrame(msg))
		c.expectResponse("arq_big_ok")
	})

	ctx := testCtx(t, 5*time.Second)
	if _, err := witness.Command(ctx, "science", "general", "ping", nil); err != nil {
		t.Errorf("witness broken after oversized messages: %v", err)
	}
}
