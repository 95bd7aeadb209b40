package client

// Unit tests against a scripted in-process WebSocket peer, for the client
// behaviour the real server rarely exercises (fragmented server messages,
// pings, close codes). The e2e package tests the client against the server.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
)

// peer accepts one connection, upgrades it, sends a welcome for clientID,
// and hands the connection to script.
func peer(t *testing.T, clientID string, script func(t *testing.T, c net.Conn)) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() {
		l.Close()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Error("peer script did not finish")
		}
	})
	go func() {
		defer close(done)
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := ws.Upgrade(c); err != nil {
			t.Errorf("upgrade: %v", err)
			return
		}
		welcome := `{"version":"1.0","id":"arq_sys_1","type":"system","room":"*","channel":"welcome","from":"arqonbus_server","timestamp":"2025-01-01T12:00:00.000Z","payload":{"client_id":"` + clientID + `","server_version":"test","protocol_version":"1.0","node_id":"n1"}}`
		if err := wsutil.WriteServerText(c, []byte(welcome)); err != nil {
			t.Errorf("welcome: %v", err)
			return
		}
		script(t, c)
	}()
	return "ws://" + l.Addr().String()
}

// readEnvelope reads one client text message; wsutil checks it was masked.
func readEnvelope(t *testing.T, c net.Conn) map[string]json.RawMessage {
	t.Helper()
	b, err := wsutil.ReadClientText(c)
	if err != nil {
		t.Errorf("read client message: %v", err)
		return nil
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		t.Errorf("client sent non-JSON %q", b)
	}
	return m
}

func str(raw json.RawMessage) string {
	var s string
	_ = json.Unmarshal(raw, &s)
	return s
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	return c
}

func TestSendFillsEnvelope(t *testing.T) {
	got := make(chan map[string]json.RawMessage, 1)
	url := peer(t, "alice", func(t *testing.T, c net.Conn) {
		got <- readEnvelope(t, c)
	})
	c, err := Dial(ctx(t), url)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.ClientID() != "alice" {
		t.Errorf("ClientID %q, want alice", c.ClientID())
	}
	id, err := c.Publish("science", "general", map[string]string{"message": "hi"})
	if err != nil {
		t.Fatal(err)
	}
	m := <-got
	if str(m["id"]) != id || !strings.HasPrefix(id, "arq_msg_") {
		t.Errorf("id %s, Publish returned %q", m["id"], id)
	}
	if str(m["version"]) != "1.0" || str(m["type"]) != "event" || str(m["from"]) != "alice" ||
		str(m["room"]) != "science" || str(m["channel"]) != "general" {
		t.Errorf("envelope fields: %v", m)
	}
	if _, err := time.Parse(time.RFC3339Nano, str(m["timestamp"])); err != nil {
		t.Errorf("timestamp %s: %v", m["timestamp"], err)
	}
	if string(m["payload"]) != `{"message":"hi"}` {
		t.Errorf("payload %s", m["payload"])
	}
}

func TestFragmentsPingAndClose(t *testing.T) {
	pong := make(chan []byte, 1)
	url := peer(t, "bob", func(t *testing.T, c net.Conn) {
		msg := []byte(`{"version":"1.0","id":"arq_e_1","type":"event","room":"r","channel":"c","from":"x","timestamp":"2025-01-01T12:00:00Z","payload":{"n":1}}`)
		var b bytes.Buffer
		_ = ws.WriteFrame(&b, ws.NewFrame(ws.OpText, false, msg[:20]))
		_ = ws.WriteFrame(&b, ws.NewPingFrame([]byte("mid")))
		_ = ws.WriteFrame(&b, ws.NewFrame(ws.OpContinuation, true, msg[20:]))
		_ = ws.WriteFrame(&b, ws.NewCloseFrame(ws.NewCloseFrameBody(ws.StatusGoingAway, "bye")))
		if _, err := c.Write(b.Bytes()); err != nil {
			t.Error(err)
			return
		}
		// Expect the pong, then the echoed close.
		for i := 0; i < 2; i++ {
			f, err := ws.ReadFrame(c)
			if err != nil {
				t.Errorf("read: %v", err)
				return
			}
			if !f.Header.Masked {
				t.Errorf("client frame not masked")
			}
			f = ws.UnmaskFrameInPlace(f)
			switch f.Header.OpCode {
			case ws.OpPong:
				pong <- f.Payload
			case ws.OpClose:
				if code, _ := ws.ParseCloseFrameData(f.Payload); code != ws.StatusGoingAway {
					t.Errorf("close echoed %d, want 1001", code)
				}
			}
		}
	})
	c, err := Dial(ctx(t), url)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	env, err := c.Next(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if env.ID != "arq_e_1" || string(env.Payload) != `{"n":1}` || !bytes.HasPrefix(env.Raw, []byte(`{"version"`)) {
		t.Errorf("assembled envelope: %+v", env)
	}
	select {
	case p := <-pong:
		if string(p) != "mid" {
			t.Errorf("pong payload %q", p)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no pong")
	}
	if _, err := c.Next(ctx(t)); !errors.Is(err, ErrClosed) {
		t.Errorf("Next after close: %v, want ErrClosed", err)
	}
	if code, reason := c.CloseCode(); code != ws.StatusGoingAway || reason != "bye" {
		t.Errorf("CloseCode %d %q", code, reason)
	}
}

func TestCommandKeepsOtherEnvelopes(t *testing.T) {
	url := peer(t, "carol", func(t *testing.T, c net.Conn) {
		for _, status := range []string{"success", "error"} {
			m := readEnvelope(t, c)
			var p struct {
				Command string `json:"command"`
			}
			_ = json.Unmarshal(m["payload"], &p)
			if p.Command != "join_channel" || str(m["type"]) != "command" {
				t.Errorf("want a join_channel command, got %v", m)
			}
			// An event overtakes the answer; Join must not swallow it.
			ev := `{"version":"1.0","id":"arq_ev_` + status + `","type":"event","room":"r","channel":"c","from":"x","timestamp":"2025-01-01T12:00:00Z","payload":{}}`
			var resp string
			if status == "success" {
				resp = `{"version":"1.0","id":"arq_r","type":"command_response","room":"r","channel":"c","from":"arqonbus_server","timestamp":"2025-01-01T12:00:00Z","payload":{"request_id":` + string(m["id"]) + `,"status":"success","result":{}}}`
			} else {
				resp = `{"version":"1.0","id":"arq_r2","type":"error","room":"r","channel":"c","from":"arqonbus_server","timestamp":"2025-01-01T12:00:00Z","payload":{"request_id":` + string(m["id"]) + `,"code":"FORBIDDEN","status":403,"message":"no","field":"room"}}`
			}
			_ = wsutil.WriteServerText(c, []byte(ev))
			_ = wsutil.WriteServerText(c, []byte(resp))
		}
		_, _, _ = wsutil.ReadClientData(c) // wait for the client's close
	})
	c, err := Dial(ctx(t), url)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Join(ctx(t), "r", "c"); err != nil {
		t.Fatalf("Join: %v", err)
	}
	err = c.Join(ctx(t), "r", "c")
	var e *Error
	if !errors.As(err, &e) || e.Code != "FORBIDDEN" || e.Status != 403 || e.Field != "room" {
		t.Fatalf("Join error: %v, want FORBIDDEN 403 on room", err)
	}
	for _, want := range []string{"arq_ev_success", "arq_ev_error"} {
		env, err := c.Next(ctx(t))
		if err != nil || env.ID != want {
			t.Errorf("Next: %s (%v), want %s", env.Raw, err, want)
		}
	}
}

func TestDialRefusedByErrorEnvelope(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := ws.Upgrade(c); err != nil {
			return
		}
		_ = wsutil.WriteServerText(c, []byte(`{"version":"1.0","id":"arq_err_1","type":"error","room":"*","channel":"welcome","from":"arqonbus_server","timestamp":"2025-01-01T12:00:00Z","payload":{"code":"CONFLICT","status":409,"message":"client id in use"}}`))
		_, _, _ = wsutil.ReadClientData(c)
	}()
	_, err = Dial(ctx(t), "ws://"+l.Addr().String(), WithClientID("dup"))
	var e *Error
	if !errors.As(err, &e) || e.Code != "CONFLICT" {
		t.Fatalf("Dial: %v, want CONFLICT", err)
	}
}

func TestNewID(t *testing.T) {
	seen := map[string]bool{}
	for i := 0; i < 1000; i++ {
		id := NewID("msg")
		if !strings.HasPrefix(id, "arq_msg_") || len(id) > 128 || seen[id] {
			t.Fatalf("bad or repeated id %q", id)
		}
		seen[id] = true
	}
}
