package soak

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"time"

	"github.com/gobwas/ws"
)

// stalledPing is how often a client that stopped reading still writes a ping: it stays alive as
// far as the idle timeout goes (the server then has to cut it for not reading, not for silence),
// and a write that fails shows that the server has cut it.
const stalledPing = 5 * time.Second

// stalledStagger separates the start of one stalled slot from the next.
const stalledStagger = 30 * time.Second

// runStalled keeps one client that stops reading connected at a time, one after another: each
// joins every chat channel and the bulk feed, reads the answers to its joins, and then reads
// nothing more. The server must close it as a slow consumer; a client it has not closed within
// StalledLife is counted and replaced.
func (r *runner) runStalled(ctx context.Context, slot int) {
	// Staggered, so that their backlogs (megabytes each in the server until the cut) do not all
	// peak together and swing the server's RSS from one line to the next.
	if !sleepCtx(ctx, time.Duration(slot)*stalledStagger) {
		return
	}
	for n := 0; ctx.Err() == nil; n++ {
		id := fmt.Sprintf("soak-stall-%s-%d-%d", r.cfg.RunID, slot, n)
		nc, err := r.dialStalled(ctx, id)
		if err != nil {
			if ctx.Err() == nil {
				r.c.fail(cDialErrors, "stalled client: "+shortErr(err))
				sleepCtx(ctx, time.Second)
			}
			continue
		}
		r.c.inc(cStalledStarted)
		cut := r.stall(ctx, nc)
		nc.Close()
		switch {
		case ctx.Err() != nil:
			return
		case cut:
			r.c.inc(cStalledCut)
		default:
			r.c.inc(cStalledNotCut)
		}
		sleepCtx(ctx, 2*time.Second)
	}
}

// stall writes a ping every stalledPing and reads nothing, until a write fails (the server cut
// the connection: true), StalledLife passes or ctx ends (false).
func (r *runner) stall(ctx context.Context, nc net.Conn) bool {
	deadline := time.Now().Add(r.cfg.StalledLife)
	ping := appendClientFrame(nil, ws.OpPing, []byte("soak"))
	for time.Now().Before(deadline) {
		if !sleepCtx(ctx, stalledPing) {
			return false
		}
		_ = nc.SetWriteDeadline(time.Now().Add(5 * time.Second))
		if _, err := nc.Write(ping); err != nil {
			// A write that times out means the server stopped reading us: not a cut.
			var ne net.Error
			return !(errors.As(err, &ne) && ne.Timeout())
		}
	}
	return false
}

// dialStalled connects with a small receive buffer, joins the chat channels and the bulk feed,
// and reads until every join is answered.
func (r *runner) dialStalled(ctx context.Context, id string) (net.Conn, error) {
	nd := net.Dialer{Timeout: 10 * time.Second, Control: smallRcvBuf}
	d := ws.Dialer{
		Timeout: 10 * time.Second,
		NetDial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return nd.DialContext(ctx, network, addr)
		},
	}
	u := r.cfg.URL + "?client_id=" + url.QueryEscape(id) + "&client_type=human"
	nc, br, _, err := d.Dial(ctx, u)
	if err != nil {
		return nil, err
	}
	var src io.Reader = nc
	if br != nil {
		head, _ := br.Peek(br.Buffered())
		src = io.MultiReader(bytes.NewReader(bytes.Clone(head)), nc)
		ws.PutReader(br)
	}
	rd := bufio.NewReaderSize(src, 4096)
	_ = nc.SetDeadline(time.Now().Add(10 * time.Second))

	channels := []string{bulkChannel}
	for i := range r.cfg.ChatChannels {
		channels = append(channels, chatChannel(i))
	}
	var ids [][]byte
	var frames []byte
	for i, ch := range channels {
		jid := fmt.Sprintf("arq_stalljoin_%d", i)
		ids = append(ids, []byte(`"request_id":"`+jid+`"`))
		env := fmt.Appendf(nil, `{"version":"1.0","id":%q,"type":"command","room":%q,"channel":%q,"from":%q,"timestamp":%q,"payload":{"command":"join_channel","parameters":{}}}`,
			jid, soakRoom, ch, id, time.Now().UTC().Format("2006-01-02T15:04:05.000Z07:00"))
		frames = appendClientFrame(frames, ws.OpText, env)
	}
	if _, err := nc.Write(frames); err != nil {
		nc.Close()
		return nil, fmt.Errorf("sending joins: %w", err)
	}
	for answered := 0; answered < len(ids); {
		f, err := ws.ReadFrame(rd)
		if err != nil {
			nc.Close()
			return nil, fmt.Errorf("waiting for the join answers: %w", err)
		}
		if f.Header.OpCode != ws.OpText {
			continue
		}
		for _, want := range ids {
			if bytes.Contains(f.Payload, want) {
				if !bytes.Contains(f.Payload, []byte(`"status":"success"`)) {
					nc.Close()
					return nil, fmt.Errorf("join refused: %.200s", f.Payload)
				}
				answered++
			}
		}
	}
	_ = nc.SetDeadline(time.Time{})
	return nc, nil
}

// appendClientFrame appends one final, masked frame (clients must mask, RFC 6455 5.3).
func appendClientFrame(dst []byte, op ws.OpCode, payload []byte) []byte {
	f := ws.MaskFrame(ws.NewFrame(op, true, bytes.Clone(payload)))
	var b bytes.Buffer
	_ = ws.WriteFrame(&b, f)
	return append(dst, b.Bytes()...)
}
