package engine

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/url"

	"github.com/gobwas/ws"
)

// maxRequestBytes bounds an upgrade request; browsers send well under 4 KiB.
const maxRequestBytes = 16 << 10

var crlf2 = []byte("\r\n\r\n")

var responseTooLarge = []byte("HTTP/1.1 431 Request Header Fields Too Large\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")

var responseBadRequest = []byte("HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")

// parseUpgrade reads an upgrade request at the start of buf, the first bytes a
// connection sent. It returns how many bytes the request took (0 while it is
// incomplete: wait for more), the response to send, and whether the
// connection is upgraded. decide accepts or refuses the parsed request (see
// Handler.Upgrade). It only reads the request's bytes: frames pipelined behind
// it stay for the frame parser. A request that grows past maxRequestBytes
// without ending is refused with 431, taking all of buf.
func parseUpgrade(buf []byte, remote string, decide func(*Request) error) (n int, response []byte, upgraded bool) {
	end := bytes.Index(buf, crlf2)
	if end < 0 || end+len(crlf2) > maxRequestBytes {
		if len(buf) > maxRequestBytes {
			return len(buf), responseTooLarge, false
		}
		return 0, nil, false
	}
	n = end + len(crlf2)
	req := &Request{Header: make(http.Header), RemoteAddr: remote}
	var out bytes.Buffer
	up := ws.Upgrader{
		OnRequest: func(uri []byte) error {
			req.URI = string(uri)
			u, err := url.ParseRequestURI(req.URI)
			if err != nil {
				return ws.RejectConnectionError(ws.RejectionStatus(http.StatusBadRequest), ws.RejectionReason("bad request URI"))
			}
			req.Query = u.Query()
			return nil
		},
		OnHost: func(host []byte) error {
			req.Header.Set("Host", string(host))
			return nil
		},
		OnHeader: func(key, value []byte) error {
			req.Header.Add(string(key), string(value))
			return nil
		},
		OnBeforeUpgrade: func() (ws.HandshakeHeader, error) {
			err := decide(req)
			if err == nil {
				return ws.HandshakeHeaderString(""), nil
			}
			var rej *Reject
			if errors.As(err, &rej) {
				return nil, ws.RejectConnectionError(ws.RejectionStatus(rej.Status), ws.RejectionReason(rej.Reason))
			}
			return nil, ws.RejectConnectionError(ws.RejectionStatus(http.StatusBadRequest), ws.RejectionReason(err.Error()))
		},
	}
	_, err := up.Upgrade(struct {
		io.Reader
		io.Writer
	}{bytes.NewReader(buf[:n]), &out})
	if err != nil && out.Len() == 0 {
		// The upgrader answers what it can read as HTTP; a request too
		// malformed for that (no request line) gets a plain 400.
		return n, responseBadRequest, false
	}
	return n, out.Bytes(), err == nil
}

// handshake upgrades c once its whole request is buffered. It reports whether
// the connection is now open.
func (s *Server) handshake(c *Conn) bool {
	buf, _ := c.gc.Peek(-1)
	n, response, upgraded := parseUpgrade(buf, c.remote, func(r *Request) error { return s.handler.Upgrade(c, r) })
	if n == 0 {
		return false
	}
	_, _ = c.gc.Discard(n)
	c.enqueue(response)
	if !upgraded {
		c.closing = true
		c.flush()
		c.linger()
		return false
	}
	c.state = stateOpen
	s.handler.Open(c)
	return !c.closing
}
