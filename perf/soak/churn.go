package soak

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/arqonbus/arqonbus/client"
)

// runHistory reads the chat channels' history in turn (limit 50) at the configured rate, times
// each read and checks that positions come oldest first.
func (r *runner) runHistory(ctx context.Context, id string) {
	for ctx.Err() == nil {
		s, err := dialSession(ctx, r.cfg.URL, id, r.unexpected("history reader"))
		if err != nil {
			if ctx.Err() == nil {
				r.c.fail(cDialErrors, "history reader: "+shortErr(err))
				sleepCtx(ctx, time.Second)
			}
			continue
		}
		p := newPacer(r.cfg.HistoryRate)
		for n := 0; p.wait(ctx) && s.c.Err() == nil; n++ {
			ch := chatChannel(n % r.cfg.ChatChannels)
			hctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			start := time.Now()
			env, err := s.command(hctx, soakRoom, ch, "history", json.RawMessage(`{"limit":50}`))
			took := time.Since(start)
			cancel()
			if ctx.Err() != nil {
				break
			}
			if err != nil {
				r.c.fail(cHistErrors, "history: "+shortErr(err))
				continue
			}
			r.c.inc(cHistReads)
			r.history.record(took)
			if msg := checkHistory(env.Payload); msg != "" {
				r.c.fail(cHistBad, msg)
			}
		}
		if ctx.Err() != nil {
			s.close()
			return
		}
		code, reason := s.c.CloseCode()
		r.c.fail(cHealthyDrops, fmt.Sprintf("history reader lost its connection (close %d %s)", code, reason))
		s.abort()
	}
}

// checkHistory returns what is wrong with a history answer's payload ("" if nothing): entries
// must come with strictly increasing positions.
func checkHistory(payload json.RawMessage) string {
	var p struct {
		Result struct {
			Entries []struct {
				Position string `json:"position"`
			} `json:"entries"`
		} `json:"result"`
	}
	if err := json.Unmarshal(payload, &p); err != nil {
		return "history answer is not the documented shape"
	}
	for i := 1; i < len(p.Result.Entries); i++ {
		a, b := p.Result.Entries[i-1].Position, p.Result.Entries[i].Position
		if !positionLess(a, b) {
			return fmt.Sprintf("history positions not increasing (%q then %q)", a, b)
		}
	}
	return ""
}

// positionLess compares history positions "<ms>-<seq>"; malformed ones compare false.
func positionLess(a, b string) bool {
	pa, ok1 := parsePosition(a)
	pb, ok2 := parsePosition(b)
	return ok1 && ok2 && (pa[0] < pb[0] || pa[0] == pb[0] && pa[1] < pb[1])
}

func parsePosition(s string) ([2]uint64, bool) {
	a, b, ok := strings.Cut(s, "-")
	if !ok {
		return [2]uint64{}, false
	}
	ms, err1 := strconv.ParseUint(a, 10, 64)
	seq, err2 := strconv.ParseUint(b, 10, 64)
	return [2]uint64{ms, seq}, err1 == nil && err2 == nil
}

// unexpected is a handler for a client that should receive nothing but answers and notices.
func (r *runner) unexpected(who string) func(*session, client.Envelope) {
	return func(_ *session, env client.Envelope) {
		if !isNotice(env) {
			r.c.fail(cOtherErrors, who+" got unexpected "+env.Type+" "+errorCode(env))
		}
	}
}

// runChannelChurn joins a channel no one has used, publishes one event to it and leaves, at the
// configured rate: the life of a short conversation. Without channel eviction every one of them
// stays in the server.
func (r *runner) runChannelChurn(ctx context.Context, id string) {
	text := filler(r.cfg.PayloadBytes)
	n := 0
	for ctx.Err() == nil {
		s, err := dialSession(ctx, r.cfg.URL, id, func(_ *session, env client.Envelope) {
			switch {
			case isNotice(env):
			case env.Type == "error":
				r.c.fail(cChurnErrors, "event to a churn channel answered "+errorCode(env))
			default:
				r.c.fail(cOtherErrors, "channel churner got unexpected "+env.Type)
			}
		})
		if err != nil {
			if ctx.Err() == nil {
				r.c.fail(cDialErrors, "channel churner: "+shortErr(err))
				sleepCtx(ctx, time.Second)
			}
			continue
		}
		p := newPacer(r.cfg.ChurnChannelRate)
		for p.wait(ctx) && s.c.Err() == nil {
			n++
			ch := fmt.Sprintf("c%s-%d", r.cfg.RunID, n)
			if err := r.churnOne(ctx, s, ch, text); err != nil && ctx.Err() == nil {
				r.c.fail(cChurnErrors, shortErr(err))
				continue
			}
			r.c.inc(cChurnChannels)
		}
		if ctx.Err() != nil {
			s.close()
			return
		}
		code, reason := s.c.CloseCode()
		r.c.fail(cHealthyDrops, fmt.Sprintf("channel churner lost its connection (close %d %s)", code, reason))
		s.abort()
	}
}

func (r *runner) churnOne(ctx context.Context, s *session, ch, text string) error {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := s.command(cctx, churnRoom, ch, "join_channel", nil); err != nil {
		return fmt.Errorf("join: %w", err)
	}
	payload := appendEventPayload(nil, time.Now().UnixNano(), s.id, -1, text)
	if err := s.c.Send(client.Envelope{ID: client.NewID("msg"), Type: "event", Room: churnRoom, Channel: ch, Payload: payload}); err != nil {
		return fmt.Errorf("publish: %w", err)
	}
	if _, err := s.command(cctx, churnRoom, ch, "leave_channel", nil); err != nil {
		return fmt.Errorf("leave: %w", err)
	}
	return nil
}

// runConnChurn opens a connection, joins a chat channel, says one thing and goes, at the
// configured rate; every other one drops without a close handshake, as a lost network does.
func (r *runner) runConnChurn(ctx context.Context) {
	text := filler(r.cfg.PayloadBytes)
	p := newPacer(r.cfg.ChurnConnRate)
	for n := 0; p.wait(ctx); n++ {
		id := fmt.Sprintf("soak-cc-%s-%d", r.cfg.RunID, n)
		ch := chatChannel(n % r.cfg.ChatChannels)
		if err := r.churnConn(ctx, id, ch, text, n%2 == 1); err != nil && ctx.Err() == nil {
			r.c.fail(cChurnConnErrors, shortErr(err))
			continue
		}
		if ctx.Err() == nil {
			r.c.inc(cChurnConns)
		}
	}
}

func (r *runner) churnConn(ctx context.Context, id, ch, text string, abort bool) error {
	s, err := dialSession(ctx, r.cfg.URL, id, nil)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer func() {
		if abort {
			s.abort()
		} else {
			s.close()
		}
	}()
	jctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := s.command(jctx, soakRoom, ch, "join_channel", nil); err != nil {
		return fmt.Errorf("join: %w", err)
	}
	payload := appendEventPayload(nil, time.Now().UnixNano(), "churn", -1, text)
	if err := s.c.Send(client.Envelope{ID: client.NewID("msg"), Type: "event", Room: soakRoom, Channel: ch, Payload: payload}); err != nil {
		return fmt.Errorf("publish: %w", err)
	}
	return nil
}
