package soak

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/arqonbus/arqonbus/client"
)

// session is one client connection with one dispatching goroutine: answers to the session's own
// commands (command_response or error with their request_id) go to whoever waits for them,
// everything else to the session's handler. client.Conn's Expect would keep every envelope it
// skips in memory until someone reads it, which a long run cannot afford.
type session struct {
	c  *client.Conn
	id string

	mu      sync.Mutex
	waiting map[string]waiter // by command id

	done chan struct{} // closed when the dispatcher ended (the connection is gone)
}

// waiter is one command waiting for its answer.
type waiter struct {
	sent time.Time
	cb   func(env client.Envelope, err error)
}

// errNoAnswer is given to waiters when the connection ends or they expire.
var errNoAnswer = errors.New("no answer")

// dialSession connects as client id (empty: the server picks one) and starts dispatching.
// onOther gets every envelope that is not an answer to one of the session's commands, on the
// dispatching goroutine; it must not block for long (the client's queue then fills and TCP
// pushes back on the server, which is exactly what a healthy client must not do).
func dialSession(ctx context.Context, url, id string, onOther func(*session, client.Envelope), opts ...client.Option) (*session, error) {
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if id != "" {
		opts = append(opts, client.WithClientID(id))
	}
	opts = append(opts, client.WithParam("client_type", "service"))
	c, err := client.Dial(dctx, url, opts...)
	if err != nil {
		return nil, err
	}
	s := &session{c: c, id: c.ClientID(), waiting: make(map[string]waiter), done: make(chan struct{})}
	go s.dispatch(onOther)
	return s, nil
}

func (s *session) dispatch(onOther func(*session, client.Envelope)) {
	defer close(s.done)
	defer s.failAll()
	for {
		env, err := s.c.Next(context.Background())
		if errors.Is(err, client.ErrClosed) {
			return
		}
		if err != nil {
			// Not an envelope: the server sent garbage to a healthy client.
			if onOther != nil {
				onOther(s, client.Envelope{Type: "<undecodable>", Raw: env.Raw})
			}
			continue
		}
		if env.Type == "command_response" || env.Type == "error" {
			if rid := env.RequestID(); rid != "" {
				s.mu.Lock()
				w, ok := s.waiting[rid]
				delete(s.waiting, rid)
				s.mu.Unlock()
				if ok {
					w.cb(env, nil)
					continue
				}
			}
		}
		if onOther != nil {
			onOther(s, env)
		}
	}
}

// failAll ends every waiter with errNoAnswer (the connection is gone).
func (s *session) failAll() {
	s.mu.Lock()
	ws := s.waiting
	s.waiting = make(map[string]waiter)
	s.mu.Unlock()
	for _, w := range ws {
		w.cb(client.Envelope{}, errNoAnswer)
	}
}

// expire ends waiters older than maxAge with errNoAnswer, so that a lost answer cannot keep a
// waiter forever.
func (s *session) expire(maxAge time.Duration) {
	cut := time.Now().Add(-maxAge)
	var old []waiter
	s.mu.Lock()
	for id, w := range s.waiting {
		if w.sent.Before(cut) {
			old = append(old, w)
			delete(s.waiting, id)
		}
	}
	s.mu.Unlock()
	for _, w := range old {
		w.cb(client.Envelope{}, errNoAnswer)
	}
}

// sendCommand sends command name with params (raw JSON object, nil for {}) to room:channel and
// calls cb with its answer (or errNoAnswer) on the dispatching goroutine.
func (s *session) sendCommand(room, channel, name string, params json.RawMessage, cb func(client.Envelope, error)) (string, error) {
	if params == nil {
		params = json.RawMessage(`{}`)
	}
	payload, err := json.Marshal(struct {
		Command    string          `json:"command"`
		Parameters json.RawMessage `json:"parameters"`
	}{name, params})
	if err != nil {
		return "", err
	}
	id := client.NewID("cmd")
	s.mu.Lock()
	s.waiting[id] = waiter{sent: time.Now(), cb: cb}
	s.mu.Unlock()
	err = s.c.Send(client.Envelope{ID: id, Type: "command", Room: room, Channel: channel, Payload: payload})
	if err != nil {
		s.forget(id)
		return "", err
	}
	return id, nil
}

// forget drops the waiter of command id (one given up on).
func (s *session) forget(id string) {
	s.mu.Lock()
	delete(s.waiting, id)
	s.mu.Unlock()
}

// command sends a command and waits for its answer; an error answer comes back as *client.Error.
func (s *session) command(ctx context.Context, room, channel, name string, params json.RawMessage) (client.Envelope, error) {
	type answer struct {
		env client.Envelope
		err error
	}
	ch := make(chan answer, 1)
	id, err := s.sendCommand(room, channel, name, params, func(env client.Envelope, err error) {
		ch <- answer{env, err}
	})
	if err != nil {
		return client.Envelope{}, fmt.Errorf("%s: sending %s: %w", s.id, name, err)
	}
	select {
	case a := <-ch:
		if a.err != nil {
			return a.env, fmt.Errorf("%s: %s: %w", s.id, name, a.err)
		}
		if e := client.AsError(a.env); e != nil {
			return a.env, e
		}
		return a.env, nil
	case <-ctx.Done():
		s.forget(id)
		return client.Envelope{}, fmt.Errorf("%s: %s: %w", s.id, name, ctx.Err())
	case <-s.done:
		return client.Envelope{}, fmt.Errorf("%s: %s: connection lost", s.id, name)
	}
}

// close ends the connection politely and waits for the dispatcher.
func (s *session) close() {
	s.c.Close()
	<-s.done
}

// abort drops the connection without a close handshake (a network failure, as the server sees
// it) and waits for the dispatcher.
func (s *session) abort() {
	s.c.Abort()
	<-s.done
}

// isNotice tells the server's broadcast notices (system envelopes on room "*"), which any client
// may receive at any time.
func isNotice(env client.Envelope) bool { return env.Type == "system" }

// errorCode is the code of an error answer ("" if env is none).
func errorCode(env client.Envelope) string {
	if e := client.AsError(env); e != nil {
		return e.Code
	}
	return ""
}
