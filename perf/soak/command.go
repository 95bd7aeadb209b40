package soak

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/arqonbus/arqonbus/client"
)

// commandGiveUp is when a requester stops waiting for an answer and counts the command lost:
// well past the server's own command timeout (5 s by default), which answers TIMEOUT.
const commandGiveUp = 30 * time.Second

// runHandler keeps one service client joined to soak:services as the handler of echoCommand,
// answering every command at once with a command_response.
func (r *runner) runHandler(ctx context.Context, id string, ready func()) {
	for ctx.Err() == nil {
		onEnv := func(s *session, env client.Envelope) {
			switch {
			case env.Type == "command":
				r.answer(s, env)
			case isNotice(env):
			default:
				r.c.fail(cOtherErrors, "handler got unexpected "+env.Type+" "+errorCode(env))
			}
		}
		s, err := dialSession(ctx, r.cfg.URL, id, onEnv)
		if err == nil {
			jctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			_, err = s.command(jctx, soakRoom, servicesChannel, "join_channel",
				json.RawMessage(`{"handles":["`+echoCommand+`"]}`))
			cancel()
			if err != nil {
				s.abort()
			}
		}
		if ready != nil {
			ready()
			ready = nil
		}
		if err != nil {
			if ctx.Err() == nil {
				r.c.fail(cDialErrors, "handler: "+shortErr(err))
				sleepCtx(ctx, time.Second)
			}
			continue
		}
		select {
		case <-ctx.Done():
			s.close()
			return
		case <-s.done:
			if ctx.Err() == nil {
				code, reason := s.c.CloseCode()
				r.c.fail(cHealthyDrops, fmt.Sprintf("handler lost its connection (close %d %s)", code, reason))
			}
		}
	}
}

// answer replies to one command with its parameters echoed back.
func (r *runner) answer(s *session, cmd client.Envelope) {
	var p struct {
		Parameters json.RawMessage `json:"parameters"`
	}
	_ = json.Unmarshal(cmd.Payload, &p)
	if len(p.Parameters) == 0 {
		p.Parameters = json.RawMessage(`{}`)
	}
	payload, _ := json.Marshal(struct {
		RequestID string          `json:"request_id"`
		Status    string          `json:"status"`
		Result    json.RawMessage `json:"result"`
	}{cmd.ID, "success", p.Parameters})
	_ = s.c.Send(client.Envelope{ID: client.NewID("resp"), Type: "command_response",
		Room: cmd.Room, Channel: cmd.Channel, Payload: payload})
}

// runRequester sends echoCommand to soak:services at the configured rate and times each round
// trip. It does not wait for one answer before the next command: answers are matched by id.
func (r *runner) runRequester(ctx context.Context, id string) {
	for ctx.Err() == nil {
		s, err := dialSession(ctx, r.cfg.URL, id, func(_ *session, env client.Envelope) {
			if !isNotice(env) {
				r.c.fail(cOtherErrors, "requester got unexpected "+env.Type+" "+errorCode(env))
			}
		})
		if err != nil {
			if ctx.Err() == nil {
				r.c.fail(cDialErrors, "requester: "+shortErr(err))
				sleepCtx(ctx, time.Second)
			}
			continue
		}
		r.request(ctx, s)
		if ctx.Err() != nil {
			s.close()
			return
		}
		code, reason := s.c.CloseCode()
		r.c.fail(cHealthyDrops, fmt.Sprintf("requester lost its connection (close %d %s)", code, reason))
		s.abort()
	}
}

// request sends commands on s until ctx ends or s is gone.
func (r *runner) request(ctx context.Context, s *session) {
	p := newPacer(r.cfg.CommandRate)
	lastExpire := time.Now()
	for n := 0; p.wait(ctx); n++ {
		select {
		case <-s.done:
			return
		default:
		}
		if time.Since(lastExpire) > 5*time.Second {
			s.expire(commandGiveUp)
			lastExpire = time.Now()
		}
		sent := time.Now()
		params := fmt.Appendf(nil, `{"n":%d,"t":%d}`, n, sent.UnixNano())
		_, err := s.sendCommand(soakRoom, servicesChannel, echoCommand, params, func(env client.Envelope, err error) {
			if ctx.Err() != nil {
				return // answers cut short by the end of the run count for nothing
			}
			switch code := errorCode(env); {
			case errors.Is(err, errNoAnswer):
				r.c.fail(cCmdLost, "command to handler never answered")
			case code == "TIMEOUT":
				r.c.fail(cCmdTimeouts, "command to handler answered TIMEOUT")
			case code != "":
				r.c.fail(cCmdErrors, "command to handler answered "+code)
			default:
				r.c.inc(cCmdOK)
				r.command.record(time.Since(sent))
			}
		})
		if err != nil {
			return // the connection is going; the caller sees it
		}
		r.c.inc(cCmdSent)
	}
}
