// Package client is the Go client for ArqonBus.
//
// Bus (Connect) is the SDK for applications: it reconnects and resumes every
// channel by itself, correlates commands with their answers, serves
// commands through handlers and delivers each event once, in order (see
// bus.go). Conn (Dial) is the low-level connection it is built on, for tests
// and tools that want every frame as it comes: dial, send envelopes, read
// them back.
//
// A Conn owns one reader goroutine that parses WebSocket frames, answers
// pings, records the server's close frame and queues every text message as an
// Envelope. Writers may call Send* from several goroutines; Next, Expect and
// the helpers built on them (Join, Command) read from one queue and are meant
// to be used by one goroutine at a time.
//
//	c, err := client.Dial(ctx, "ws://127.0.0.1:9100", client.WithClientID("alice"))
//	if err != nil { ... }
//	defer c.Close()
//	if err := c.Join(ctx, "science", "general"); err != nil { ... }
//	id, err := c.Publish("science", "general", map[string]any{"message": "hi"})
//	env, err := c.Next(ctx)
package client

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
)

// ProtocolVersion is the envelope version this client speaks.
const ProtocolVersion = "1.0"

// ServerFrom is the `from` of envelopes the server itself produces.
const ServerFrom = "arqonbus_server"

// Envelope is one ArqonBus message. Payload and Metadata stay raw JSON so that
// routed envelopes can be compared byte for byte with what the sender sent.
type Envelope struct {
	Version   string          `json:"version"`
	ID        string          `json:"id"`
	Type      string          `json:"type"`
	Room      string          `json:"room,omitempty"`
	Channel   string          `json:"channel,omitempty"`
	From      string          `json:"from"`
	Timestamp string          `json:"timestamp"`
	Payload   json.RawMessage `json:"payload"`
	Metadata  json.RawMessage `json:"metadata,omitempty"`

	// Raw holds the exact bytes of the text message this envelope was decoded
	// from; nil for envelopes built locally.
	Raw []byte `json:"-"`
}

// PayloadField decodes one top-level payload field into v. It reports false
// when the payload is not an object, lacks the key, or the value does not fit v.
func (e Envelope) PayloadField(key string, v any) bool {
	var m map[string]json.RawMessage
	if json.Unmarshal(e.Payload, &m) != nil {
		return false
	}
	raw, ok := m[key]
	if !ok {
		return false
	}
	return json.Unmarshal(raw, v) == nil
}

// RequestID is payload.request_id of command_response and error envelopes.
func (e Envelope) RequestID() string {
	var s string
	e.PayloadField("request_id", &s)
	return s
}

// Error is an `error` envelope from the server (or a command_response whose
// status is "error"), as a Go error.
type Error struct {
	RequestID    string `json:"request_id"`
	Code         string `json:"code"`
	Status       int    `json:"status"`
	Message      string `json:"message"`
	Field        string `json:"field,omitempty"`
	RetryAfterMS int64  `json:"retry_after_ms,omitempty"`

	// Envelope is the envelope the error came in.
	Envelope Envelope `json:"-"`
}

func (e *Error) Error() string {
	s := fmt.Sprintf("arqonbus: %s (%d): %s", e.Code, e.Status, e.Message)
	if e.Field != "" {
		s += " [field " + e.Field + "]"
	}
	return s
}

// AsError turns an `error` envelope, or a command_response with status
// "error", into an *Error; it returns nil for anything else.
func AsError(env Envelope) *Error {
	switch env.Type {
	case "error":
		e := &Error{Envelope: env}
		_ = json.Unmarshal(env.Payload, e)
		return e
	case "command_response":
		var p struct {
			RequestID string          `json:"request_id"`
			Status    string          `json:"status"`
			Error     json.RawMessage `json:"error"`
		}
		if json.Unmarshal(env.Payload, &p) != nil || p.Status != "error" {
			return nil
		}
		e := &Error{RequestID: p.RequestID, Envelope: env}
		// The error may be an object {code, status, message} or a plain string.
		if json.Unmarshal(p.Error, e) != nil {
			var msg string
			_ = json.Unmarshal(p.Error, &msg)
			e.Message = msg
		}
		e.RequestID = p.RequestID
		return e
	}
	return nil
}

// ErrClosed is returned by Next once the connection is gone and every queued
// envelope has been read. CloseCode tells what the server said, if anything.
var ErrClosed = errors.New("arqonbus client: connection closed")

// options collects Dial settings.
type options struct {
	query          url.Values
	header         http.Header
	dialTimeout    time.Duration
	welcomeTimeout time.Duration
	waitWelcome    bool
	buffer         int
	maxMessage     int64
}

// Option configures Dial.
type Option func(*options)

// WithClientID asks for a client id through the `client_id` query parameter.
func WithClientID(id string) Option { return WithParam("client_id", id) }

// WithParam adds one query parameter to the upgrade request (client_type,
// screen_name, token, admin_token, ...).
func WithParam(key, value string) Option {
	return func(o *options) { o.query.Add(key, value) }
}

// WithHeader adds one HTTP header to the upgrade request (Origin, Authorization).
func WithHeader(key, value string) Option {
	return func(o *options) { o.header.Add(key, value) }
}

// WithDialTimeout bounds the TCP connect plus the HTTP upgrade (default 5 s).
func WithDialTimeout(d time.Duration) Option {
	return func(o *options) { o.dialTimeout = d }
}

// WithoutWelcome makes Dial return right after the upgrade instead of waiting
// for the server's welcome envelope; the welcome then comes out of Next.
func WithoutWelcome() Option { return func(o *options) { o.waitWelcome = false } }

// WithWelcomeTimeout bounds the wait for the welcome envelope (default 5 s).
func WithWelcomeTimeout(d time.Duration) Option {
	return func(o *options) { o.welcomeTimeout = d }
}

// WithBuffer sets how many received envelopes may wait unread (default 4096).
// When full, the reader stops reading and TCP pushes back on the server.
func WithBuffer(n int) Option { return func(o *options) { o.buffer = n } }

// WithMaxMessage caps the size of one received message (default 64 MiB); a
// larger one closes the connection with 1009.
func WithMaxMessage(n int64) Option { return func(o *options) { o.maxMessage = n } }

// item is one queued result of the reader: an envelope, or the decode error of
// a message that was not a valid envelope.
type item struct {
	env Envelope
	err error
}

// Conn is one client connection to ArqonBus.
type Conn struct {
	nc net.Conn

	wmu sync.Mutex // serialises frame writes; held for one whole frame

	in      chan item
	pending []item // envelopes Expect skipped over; Next returns them first

	done      chan struct{} // closed when the reader goroutine has exited
	quit      chan struct{} // closed by Close/Abort to release a blocked reader
	readErr   error         // why the reader stopped; valid after done
	closeOnce sync.Once

	cmu        sync.Mutex
	closeCode  ws.StatusCode
	closeText  string
	closeSeen  bool
	closeSent  atomic.Bool
	welcome    Envelope
	clientID   string
	maxMessage int64
}

// Dial connects to an ArqonBus server at url (ws://host:port[/path][?query])
// and, unless WithoutWelcome is given, waits for the welcome envelope so that
// ClientID is known. If the server answers the upgrade with an error envelope
// instead of a welcome (for example CONFLICT for a duplicate client_id), Dial
// returns it as an *Error.
func Dial(ctx context.Context, rawURL string, opts ...Option) (*Conn, error) {
	o := options{
		query:          url.Values{},
		header:         http.Header{},
		dialTimeout:    5 * time.Second,
		welcomeTimeout: 5 * time.Second,
		waitWelcome:    true,
		buffer:         4096,
		maxMessage:     64 << 20,
	}
	for _, opt := range opts {
		opt(&o)
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("arqonbus client: bad url: %w", err)
	}
	if len(o.query) > 0 {
		q := u.Query()
		for k, vs := range o.query {
			for _, v := range vs {
				q.Add(k, v)
			}
		}
		u.RawQuery = q.Encode()
	}
	if u.Path == "" {
		u.Path = "/"
	}
	d := ws.Dialer{Timeout: o.dialTimeout}
	if len(o.header) > 0 {
		d.Header = ws.HandshakeHeaderHTTP(o.header)
	}
	nc, br, _, err := d.Dial(ctx, u.String())
	if err != nil {
		return nil, fmt.Errorf("arqonbus client: dial %s: %w", u.Redacted(), err)
	}
	// Frames the server sent right behind its 101 response (the welcome,
	// typically) may already sit in br: read those first, then the socket.
	var r io.Reader = nc
	if br != nil && br.Buffered() > 0 {
		head, _ := br.Peek(br.Buffered())
		r = io.MultiReader(bytes.NewReader(append([]byte(nil), head...)), nc)
	}
	if br != nil {
		ws.PutReader(br)
	}
	c := &Conn{
		nc:         nc,
		in:         make(chan item, o.buffer),
		done:       make(chan struct{}),
		quit:       make(chan struct{}),
		maxMessage: o.maxMessage,
	}
	go c.readLoop(bufio.NewReaderSize(r, 16<<10))

	if !o.waitWelcome {
		return c, nil
	}
	wctx, cancel := context.WithTimeout(ctx, o.welcomeTimeout)
	defer cancel()
	env, err := c.Next(wctx)
	if err != nil {
		c.Abort()
		if code, reason := c.CloseCode(); code != 0 {
			return nil, fmt.Errorf("arqonbus client: no welcome (closed %d %q): %w", code, reason, err)
		}
		return nil, fmt.Errorf("arqonbus client: no welcome: %w", err)
	}
	if e := AsError(env); e != nil {
		c.Abort()
		return nil, e
	}
	if env.Type != "system" || env.Channel != "welcome" {
		c.Abort()
		return nil, fmt.Errorf("arqonbus client: first envelope is not a welcome: %s", env.Raw)
	}
	c.setWelcome(env)
	return c, nil
}

func (c *Conn) setWelcome(env Envelope) {
	var p struct {
		ClientID string `json:"client_id"`
	}
	_ = json.Unmarshal(env.Payload, &p)
	c.cmu.Lock()
	c.welcome, c.clientID = env, p.ClientID
	c.cmu.Unlock()
}

// ClientID is the client id from the welcome envelope ("" with WithoutWelcome).
func (c *Conn) ClientID() string {
	c.cmu.Lock()
	defer c.cmu.Unlock()
	return c.clientID
}

// Welcome is the welcome envelope the server sent on open.
func (c *Conn) Welcome() Envelope {
	c.cmu.Lock()
	defer c.cmu.Unlock()
	return c.welcome
}

// CloseCode is the status code and reason of the close frame the server sent
// (0 and "" if none arrived, ws.StatusNoStatusRcvd for an empty close frame).
func (c *Conn) CloseCode() (ws.StatusCode, string) {
	c.cmu.Lock()
	defer c.cmu.Unlock()
	return c.closeCode, c.closeText
}

// Done is closed once the connection's reader has stopped.
func (c *Conn) Done() <-chan struct{} { return c.done }

// Err is why the reader stopped (io.EOF after a clean close); nil while it runs.
func (c *Conn) Err() error {
	select {
	case <-c.done:
		return c.readErr
	default:
		return nil
	}
}

// NetConn exposes the underlying connection, for tests that need to poke at it.
func (c *Conn) NetConn() net.Conn { return c.nc }

// readLoop is the only reader of the socket. It assembles fragmented
// messages, answers pings between fragments, and ends on close or error.
func (c *Conn) readLoop(r *bufio.Reader) {
	defer func() {
		close(c.in)
		close(c.done)
	}()
	var (
		msg    []byte
		inFrag bool
	)
	for {
		h, err := ws.ReadHeader(r)
		if err != nil {
			c.readErr = err
			c.nc.Close()
			return
		}
		if h.Length < 0 || h.Length > c.maxMessage || (h.OpCode.IsControl() && h.Length > 125) {
			c.readErr = fmt.Errorf("arqonbus client: frame too large (%d bytes)", h.Length)
			c.failClose(ws.StatusMessageTooBig)
			return
		}
		p := make([]byte, h.Length)
		if _, err := io.ReadFull(r, p); err != nil {
			c.readErr = err
			c.nc.Close()
			return
		}
		if h.Masked {
			ws.Cipher(p, h.Mask, 0)
		}
		switch h.OpCode {
		case ws.OpPing:
			// Pong with the same payload; a failed write shows up on the next read.
			_ = c.SendFrame(ws.MaskFrame(ws.NewPongFrame(p)))
		case ws.OpPong:
		case ws.OpClose:
			code, reason := ws.StatusNoStatusRcvd, ""
			if len(p) >= 2 {
				code, reason = ws.ParseCloseFrameData(p)
			}
			c.cmu.Lock()
			c.closeCode, c.closeText, c.closeSeen = code, reason, true
			c.cmu.Unlock()
			// Echo the code (RFC 6455 5.5.1) unless we started the close.
			if !c.closeSent.Swap(true) {
				echo := code
				if len(p) < 2 {
					echo = ws.StatusNormalClosure
				}
				_ = c.SendFrame(ws.MaskFrame(ws.NewCloseFrame(ws.NewCloseFrameBody(echo, ""))))
			}
			c.readErr = io.EOF
			c.nc.Close()
			return
		case ws.OpText, ws.OpBinary, ws.OpContinuation:
			if h.OpCode == ws.OpContinuation != inFrag {
				c.readErr = errors.New("arqonbus client: unexpected continuation state")
				c.failClose(ws.StatusProtocolError)
				return
			}
			if int64(len(msg))+int64(len(p)) > c.maxMessage {
				c.readErr = errors.New("arqonbus client: message too large")
				c.failClose(ws.StatusMessageTooBig)
				return
			}
			if h.OpCode == ws.OpContinuation || !h.Fin {
				msg = append(msg, p...)
			} else {
				msg = p
			}
			if !h.Fin {
				inFrag = true
				continue
			}
			inFrag = false
			data := msg
			msg = nil
			it := item{env: Envelope{Raw: data}}
			if err := json.Unmarshal(data, &it.env); err != nil {
				it.err = fmt.Errorf("arqonbus client: message is not an envelope: %w", err)
			}
			it.env.Raw = data
			// Blocks while the queue is full (TCP then pushes back on the
			// server) but never past Close/Abort.
			select {
			case c.in <- it:
			case <-c.quit:
				c.readErr = ErrClosed
				c.nc.Close()
				return
			}
		default:
			c.readErr = fmt.Errorf("arqonbus client: reserved opcode %d", h.OpCode)
			c.failClose(ws.StatusProtocolError)
			return
		}
	}
}

// failClose sends a close frame with code and drops the connection; used when
// the server sent something this client will not accept.
func (c *Conn) failClose(code ws.StatusCode) {
	if !c.closeSent.Swap(true) {
		_ = c.SendFrame(ws.MaskFrame(ws.NewCloseFrame(ws.NewCloseFrameBody(code, ""))))
	}
	c.nc.Close()
}

// SendFrame writes f exactly as given, header and payload in one write. It does
// not mask: use ws.MaskFrame for a well-formed client frame. Meant for
// protocol tests; Send and SendRaw are the normal way to write.
func (c *Conn) SendFrame(f ws.Frame) error {
	buf := make([]byte, 0, ws.HeaderSize(f.Header)+len(f.Payload))
	w := bytes.NewBuffer(buf)
	if err := ws.WriteHeader(w, f.Header); err != nil {
		return err
	}
	w.Write(f.Payload)
	c.wmu.Lock()
	defer c.wmu.Unlock()
	// A write deadline keeps a stuck peer from blocking writers forever.
	_ = c.nc.SetWriteDeadline(time.Now().Add(10 * time.Second))
	_, err := c.nc.Write(w.Bytes())
	return err
}

// SendRaw sends b as one masked text frame, unchanged.
func (c *Conn) SendRaw(b []byte) error {
	return c.SendFrame(ws.MaskFrame(ws.NewTextFrame(b)))
}

// Send encodes v as JSON and sends it as one text frame. An Envelope (or
// *Envelope) gets its empty fields filled in first: version "1.0", a new id,
// from = ClientID(), timestamp = now, payload = {}. Anything else (a map, a
// struct) is sent as encoded, so tests can send deliberately broken envelopes.
func (c *Conn) Send(v any) error {
	switch e := v.(type) {
	case Envelope:
		v = c.fill(e)
	case *Envelope:
		v = c.fill(*e)
	}
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return c.SendRaw(b)
}

func (c *Conn) fill(e Envelope) Envelope {
	if e.Version == "" {
		e.Version = ProtocolVersion
	}
	if e.ID == "" {
		e.ID = NewID("msg")
	}
	if e.From == "" {
		e.From = c.ClientID()
	}
	if e.Timestamp == "" {
		e.Timestamp = Now()
	}
	if len(e.Payload) == 0 {
		e.Payload = json.RawMessage(`{}`)
	}
	return e
}

// Next returns the next received envelope, waiting until one arrives, ctx
// ends, or the connection closes (ErrClosed). A message that is not a valid
// envelope comes back with only Raw set and a decode error.
func (c *Conn) Next(ctx context.Context) (Envelope, error) {
	if len(c.pending) > 0 {
		it := c.pending[0]
		c.pending = c.pending[1:]
		return it.env, it.err
	}
	return c.recv(ctx)
}

func (c *Conn) recv(ctx context.Context) (Envelope, error) {
	select {
	case it, ok := <-c.in:
		if !ok {
			return Envelope{}, ErrClosed
		}
		return it.env, it.err
	case <-ctx.Done():
		return Envelope{}, ctx.Err()
	}
}

// Expect returns the first envelope for which match is true. Envelopes that do
// not match are kept, in order, and come out of later Next calls, so waiting
// for a command's answer does not lose events that arrived meanwhile.
func (c *Conn) Expect(ctx context.Context, match func(Envelope) bool) (Envelope, error) {
	for i, it := range c.pending {
		if it.err == nil && match(it.env) {
			c.pending = append(c.pending[:i:i], c.pending[i+1:]...)
			return it.env, nil
		}
	}
	for {
		env, err := c.recv(ctx)
		if err == nil && match(env) {
			return env, nil
		}
		if err != nil && (errors.Is(err, ErrClosed) || ctx.Err() != nil) {
			return Envelope{}, err
		}
		c.pending = append(c.pending, item{env: env, err: err})
	}
}

// Command sends a command envelope for room:channel with payload
// {command: name, parameters: params} and waits for the command_response or
// error whose request_id is the command's id. A server error comes back both
// as the envelope and as an *Error.
func (c *Conn) Command(ctx context.Context, room, channel, name string, params any) (Envelope, error) {
	if params == nil {
		params = map[string]any{}
	}
	payload, err := json.Marshal(map[string]any{"command": name, "parameters": params})
	if err != nil {
		return Envelope{}, err
	}
	id := NewID("cmd")
	if err := c.Send(Envelope{ID: id, Type: "command", Room: room, Channel: channel, Payload: payload}); err != nil {
		return Envelope{}, err
	}
	env, err := c.Expect(ctx, func(e Envelope) bool {
		return (e.Type == "command_response" || e.Type == "error") && e.RequestID() == id
	})
	if err != nil {
		return env, fmt.Errorf("arqonbus client: waiting for %s response: %w", name, err)
	}
	if e := AsError(env); e != nil {
		return env, e
	}
	return env, nil
}

// Join joins room:channel (the join_channel command) and waits for success.
func (c *Conn) Join(ctx context.Context, room, channel string) error {
	_, err := c.Command(ctx, room, channel, "join_channel", nil)
	return err
}

// Leave leaves room:channel (the leave_channel command) and waits for success.
func (c *Conn) Leave(ctx context.Context, room, channel string) error {
	_, err := c.Command(ctx, room, channel, "leave_channel", nil)
	return err
}

// Publish sends an event with payload (which must encode to a JSON object) to
// room:channel and returns its id. It does not wait: the server answers only
// on error or when metadata.ack is set.
func (c *Conn) Publish(room, channel string, payload any) (string, error) {
	p, err := json.Marshal(payload)
	if err != nil {
		return "", err
	}
	id := NewID("msg")
	return id, c.Send(Envelope{ID: id, Type: "event", Room: room, Channel: channel, Payload: p})
}

// Close sends a normal close frame, waits briefly for the server's answer and
// closes the socket. Safe to call more than once.
func (c *Conn) Close() error {
	c.closeOnce.Do(func() {
		if !c.closeSent.Swap(true) {
			_ = c.SendFrame(ws.MaskFrame(ws.NewCloseFrame(ws.NewCloseFrameBody(ws.StatusNormalClosure, ""))))
		}
		select {
		case <-c.done:
		case <-time.After(time.Second):
		}
		close(c.quit)
		c.nc.Close()
		<-c.done
	})
	return nil
}

// Abort drops the connection without a close handshake.
func (c *Conn) Abort() {
	c.closeOnce.Do(func() {
		c.closeSent.Store(true)
		close(c.quit)
		c.nc.Close()
		<-c.done
	})
}

var idSeq atomic.Uint64

// NewID returns a fresh envelope id "arq_<kind>_<random hex><counter>", unique
// within the process and, with 64 random bits, across processes in practice.
func NewID(kind string) string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("arq_%s_%s%x", kind, hex.EncodeToString(b[:]), idSeq.Add(1))
}

// Now is the current UTC time as the protocol's timestamp (RFC 3339, ms).
func Now() string { return time.Now().UTC().Format("2006-01-02T15:04:05.000Z07:00") }
