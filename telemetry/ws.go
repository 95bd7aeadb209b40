package telemetry

import (
	"time"

	"github.com/arqonbus/arqonbus/codec"
	"github.com/arqonbus/arqonbus/engine"
)

// wsHandler serves the telemetry WebSocket: read-only, a welcome, then every
// telemetry envelope. Its connections are the members of the emitter's wsCh,
// so fan-out is one delivery per event loop, no goroutine per connection.
type wsHandler struct {
	e   *Emitter
	max int64
}

// refused marks a connection closed for being over the limit.
type refusedMark struct{}

var refused = &refusedMark{}

// WSHandler is the engine.Handler for the telemetry port's engine.Server.
// Connections beyond maxConnections (<= 0: no limit of its own) are upgraded
// and then closed with 1013 (try again later), without a welcome. The
// engine's own Config.MaxConnections should be above maxConnections, or the
// engine refuses the extra connections with HTTP 503 before this handler
// sees them.
func (e *Emitter) WSHandler(maxConnections int) engine.Handler {
	return &wsHandler{e: e, max: int64(maxConnections)}
}

// WSConnections is the number of telemetry WebSocket connections being served.
func (e *Emitter) WSConnections() int64 { return e.wsConns.Load() }

func (h *wsHandler) Upgrade(*engine.Conn, *engine.Request) error { return nil }

func (h *wsHandler) Open(c *engine.Conn) {
	e := h.e
	if n := e.wsConns.Add(1); h.max > 0 && n > h.max {
		e.wsConns.Add(-1)
		c.Value = refused
		c.CloseNow(engine.CloseTryAgainLater, "telemetry connection limit reached")
		return
	}
	c.Write(e.welcome())
	// Written here, on the loop, ahead of anything delivered to the loop's
	// inbox after the join below.
	if last := e.lastSnapshot.Load(); last != nil {
		c.Write(*last)
	}
	_, _, _ = e.wsHub.Join(wsKey, c, nil, nil)
}

func (h *wsHandler) Message(*engine.Conn, []byte) {} // read-only

func (h *wsHandler) Close(c *engine.Conn) {
	if c.Value == refused {
		return
	}
	h.e.wsHub.Leave(h.e.wsCh, c)
	h.e.wsConns.Add(-1)
}

// welcome is the system envelope that opens a telemetry connection.
func (e *Emitter) welcome() []byte {
	p := append(make([]byte, 0, 160), `{"event":"welcome","node_id":`...)
	p = codec.AppendString(p, e.o.NodeID)
	p = append(p, `,"stream":[`...)
	p = codec.AppendString(p, e.o.StreamChannel.String())
	p = append(p, ',')
	p = codec.AppendString(p, e.o.DashboardChannel.String())
	p = append(p, "]}"...)
	buf := make([]byte, engine.HeaderRoom, engine.HeaderRoom+256+len(p))
	buf = codec.AppendEnvelope(buf, codec.Out{
		ID: e.ids.Next("sys"), Type: "system", Room: "*", Channel: "welcome",
		From: codec.ServerFrom, Timestamp: time.Now(),
	}, p, nil)
	return engine.FinishText(buf)
}
