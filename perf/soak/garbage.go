package soak

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/gobwas/ws"

	"github.com/arqonbus/arqonbus/client"
)

// garbageKind is one kind of bad input and what the protocol says the server does about it:
// answer with an error envelope (wantError) or close with a code (wantClose).
type garbageKind struct {
	name      string
	wantError string        // expected error code ("" when a close is expected)
	wantClose ws.StatusCode // expected close code (0 when an error envelope is expected)
	frame     func(from string) []byte
}

// maxFrame is the server's default frame limit (ARQONBUS_MAX_MESSAGE_SIZE).
const maxFrame = 1 << 20

// garbageKinds is the cycle every garbage client goes through.
var garbageKinds = []garbageKind{
	{name: "invalid_json", wantError: "VALIDATION_ERROR", frame: func(string) []byte {
		return appendClientFrame(nil, ws.OpText, []byte(`{"version":"1.0","id":"arq_x",`))
	}},
	{name: "binary_frame", wantClose: ws.StatusUnsupportedData, frame: func(string) []byte {
		return appendClientFrame(nil, ws.OpBinary, []byte{0, 1, 2, 3, 0xff})
	}},
	{name: "not_an_object", wantError: "VALIDATION_ERROR", frame: func(string) []byte {
		return appendClientFrame(nil, ws.OpText, []byte(`[1,2,3]`))
	}},
	{name: "bad_utf8", wantClose: ws.StatusInvalidFramePayloadData, frame: func(string) []byte {
		return appendClientFrame(nil, ws.OpText, []byte("{\"version\":\"1.0\",\"x\":\"\xff\xfe\"}"))
	}},
	{name: "bad_envelope", wantError: "VALIDATION_ERROR", frame: func(from string) []byte {
		return appendClientFrame(nil, ws.OpText, fmt.Appendf(nil,
			`{"version":"2.0","id":"not-arq","type":"event","room":"Upper Case","channel":"general","from":%q,"timestamp":"yesterday","payload":[]}`, from))
	}},
	{name: "oversized_frame", wantClose: ws.StatusMessageTooBig, frame: func(string) []byte {
		return appendClientFrame(nil, ws.OpText, []byte(strings.Repeat("a", maxFrame+1024)))
	}},
	{name: "server_only_type", wantError: "FORBIDDEN", frame: func(from string) []byte {
		return appendClientFrame(nil, ws.OpText, fmt.Appendf(nil,
			`{"version":"1.0","id":"arq_sys_1","type":"system","room":"*","channel":"broadcast","from":%q,"timestamp":"2025-01-01T12:00:00.000Z","payload":{}}`, from))
	}},
	{name: "huge_length", wantClose: ws.StatusMessageTooBig, frame: func(string) []byte {
		// A header declaring 2^40 bytes, then a few: the server must refuse on the header.
		h := []byte{0x81, 0x80 | 127}
		h = binary.BigEndian.AppendUint64(h, 1<<40)
		return append(h, 1, 2, 3, 4, 'x', 'y')
	}},
	{name: "reserved_opcode", wantClose: ws.StatusProtocolError, frame: func(string) []byte {
		return appendClientFrame(nil, ws.OpCode(0x3), []byte("?"))
	}},
	{name: "unmasked_frame", wantClose: ws.StatusProtocolError, frame: func(string) []byte {
		var b strings.Builder
		_ = ws.WriteFrame(&b, ws.NewTextFrame([]byte(`{}`)))
		return []byte(b.String())
	}},
	{name: "stray_continuation", wantClose: ws.StatusProtocolError, frame: func(string) []byte {
		return appendClientFrame(nil, ws.OpContinuation, []byte("tail"))
	}},
}

// garbageStats counts the outcomes of each kind.
type garbageStats struct {
	mu    sync.Mutex
	kinds map[string]*garbageOutcome
}

// garbageOutcome is what one kind of garbage got.
type garbageOutcome struct {
	Sent     int64            `json:"sent"`
	Expected int64            `json:"expected"`
	Got      map[string]int64 `json:"got_otherwise,omitempty"` // what came instead, counted
	want     string
}

func newGarbageStats() *garbageStats {
	g := &garbageStats{kinds: make(map[string]*garbageOutcome)}
	for _, k := range garbageKinds {
		g.kinds[k.name] = &garbageOutcome{Got: map[string]int64{}, want: k.want()}
	}
	return g
}

func (k garbageKind) want() string {
	if k.wantClose != 0 {
		return fmt.Sprintf("close %d", k.wantClose)
	}
	return "error " + k.wantError
}

func (g *garbageStats) note(kind, got string, expected bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	o := g.kinds[kind]
	o.Sent++
	if expected {
		o.Expected++
	} else if _, ok := o.Got[got]; ok || len(o.Got) < 10 {
		o.Got[got]++
	}
}

// write prints one line per kind.
func (g *garbageStats) write(w interface{ Write([]byte) (int, error) }) {
	g.mu.Lock()
	defer g.mu.Unlock()
	names := make([]string, 0, len(g.kinds))
	for n := range g.kinds {
		names = append(names, n)
	}
	slices.Sort(names)
	fmt.Fprintf(w, "  %-20s %-16s %7s %9s  %s\n", "garbage", "expected", "sent", "as_spec", "got otherwise")
	for _, n := range names {
		o := g.kinds[n]
		var other []string
		for got, c := range o.Got {
			other = append(other, fmt.Sprintf("%s x%d", got, c))
		}
		slices.Sort(other)
		fmt.Fprintf(w, "  %-20s %-16s %7d %9d  %s\n", n, o.want, o.Sent, o.Expected, strings.Join(other, ", "))
	}
}

func (g *garbageStats) snapshot() map[string]garbageOutcome {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make(map[string]garbageOutcome, len(g.kinds))
	for n, o := range g.kinds {
		c := *o
		c.Got = make(map[string]int64, len(o.Got))
		for k, v := range o.Got {
			c.Got[k] = v
		}
		out[n] = c
	}
	return out
}

// garbageWait bounds the wait for the server's answer to one garbage frame.
const garbageWait = 5 * time.Second

// runGarbage sends one garbage frame every GarbageEvery, going through garbageKinds (starting
// at its own offset), and checks each answer. A client closed by its garbage (as it should be,
// or for too many violations) connects again.
func (r *runner) runGarbage(ctx context.Context, slot int) {
	p := newPacer(1 / r.cfg.GarbageEvery.Seconds())
	var c *client.Conn
	defer func() {
		if c != nil {
			c.Abort()
		}
	}()
	conns := 0
	for n := slot * 5; p.wait(ctx); n++ {
		if c == nil {
			id := fmt.Sprintf("soak-gbg-%s-%d-%d", r.cfg.RunID, slot, conns)
			conns++
			dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			var err error
			c, err = client.Dial(dctx, r.cfg.URL, client.WithClientID(id))
			cancel()
			if err != nil {
				c = nil
				if ctx.Err() == nil {
					r.c.fail(cDialErrors, "garbage client: "+shortErr(err))
				}
				continue
			}
		}
		k := garbageKinds[n%len(garbageKinds)]
		got, closed := r.sendGarbage(ctx, c, k)
		if ctx.Err() != nil {
			return
		}
		expected := got == k.want() || got == fmt.Sprintf("close %d", ws.StatusPolicyViolation)
		r.c.inc(cGarbageSent)
		if expected {
			r.c.inc(cGarbageExpected)
		} else {
			r.c.inc(cGarbageUnexpected)
		}
		r.garbage.note(k.name, got, expected)
		if closed {
			c.Abort()
			c = nil
		}
	}
}

// sendGarbage sends k's frame on c and waits for the answer: "error CODE", "close CODE" (with
// 1006 for a connection that ended without a close frame: a reset), or "nothing". closed tells
// whether the connection is gone.
func (r *runner) sendGarbage(ctx context.Context, c *client.Conn, k garbageKind) (got string, closed bool) {
	frame := k.frame(c.ClientID())
	c.NetConn().SetWriteDeadline(time.Now().Add(garbageWait))
	_, werr := c.NetConn().Write(frame)
	wctx, cancel := context.WithTimeout(ctx, garbageWait)
	defer cancel()
	for {
		env, err := c.Next(wctx)
		switch {
		case errors.Is(err, client.ErrClosed):
			code, _ := c.CloseCode()
			if code == 0 {
				code = ws.StatusAbnormalClosure // no close frame: the connection was reset
			}
			return fmt.Sprintf("close %d", code), true
		case err != nil && wctx.Err() != nil:
			if werr != nil {
				return "write failed: " + shortErr(werr), true
			}
			return "nothing", false
		case err != nil:
			return "undecodable answer", false
		case isNotice(env):
			continue
		case env.Type == "error":
			return "error " + errorCode(env), false
		default:
			return "unexpected " + env.Type, false
		}
	}
}
