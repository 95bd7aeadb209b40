package telemetry

import (
	"context"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/arqonbus/arqonbus/codec"
	"github.com/arqonbus/arqonbus/engine"
	"github.com/arqonbus/arqonbus/fanout"
)

// Default channels and settings.
var (
	DefaultStreamChannel    = fanout.Key{Room: "integriguard", Channel: "telemetry-stream"}
	DefaultDashboardChannel = fanout.Key{Room: "integriguard", Channel: "dashboard-events"}
)

const (
	DefaultQueueSize       = 8192
	DefaultSnapshotEvery   = 5 * time.Second
	DefaultAgentFlushEvery = time.Second
)

// Event types the emitter produces itself.
const (
	EventMetricsSnapshot = "metrics_snapshot"
	EventAgentActivity   = "agent_activity"
)

// Options configure an Emitter. Zero values take the defaults.
type Options struct {
	NodeID           string
	Hub              *fanout.Hub // the client bus's hub: events are published on its channels (nil: WebSocket only)
	StreamChannel    fanout.Key  // default integriguard:telemetry-stream
	DashboardChannel fanout.Key  // default integriguard:dashboard-events
	QueueSize        int         // default 8192
	SnapshotEvery    time.Duration
	AgentFlushEvery  time.Duration
	// Snapshot returns the fields of a metrics_snapshot payload; called on
	// the emitter goroutine. Nil: snapshots carry only the emitter's own
	// "telemetry" counters.
	Snapshot func() map[string]any
	Logger   *slog.Logger
}

// itemKind says what a queued item is.
type itemKind uint8

const (
	kindEvent   itemKind = iota // an Emit
	kindForward                 // a client telemetry frame for the WebSocket
	kindRelease                 // an agent handle's final flush
)

// item is one queue entry. Kept small: the queue holds QueueSize of them.
type item struct {
	kind   itemKind
	at     int64 // unix nanos at Emit
	typ    string
	fields map[string]any
	frame  []byte
	agent  *AgentHandle
}

// Emitter queues, encodes and fans out telemetry. Make it with New, start Run
// on its own goroutine.
type Emitter struct {
	o     Options
	log   *slog.Logger
	ids   *codec.IDGen
	queue *queue
	spare []item // emitter goroutine: the buffer handed back to queue.take

	dropped   atomic.Uint64
	published atomic.Uint64
	forwarded atomic.Uint64

	// The telemetry WebSocket: its connections are the members of wsCh.
	wsHub   *fanout.Hub
	wsCh    *fanout.Channel
	wsConns atomic.Int64
	// lastSnapshot is the latest metrics_snapshot frame, sent to a new
	// telemetry WebSocket connection right after its welcome.
	lastSnapshot atomic.Pointer[[]byte]

	agentsMu sync.Mutex
	agents   map[*AgentHandle]struct{}

	// Emitter goroutine only.
	payloadBuf []byte
	envBuf     []byte
	agentList  []*AgentHandle
	lastWindow time.Time
	lastDrops  uint64
}

// wsKey is the one channel of the emitter's own hub, holding the telemetry
// WebSocket connections.
var wsKey = fanout.Key{Room: "*", Channel: "telemetry"}

// New makes an emitter; it does nothing until Run.
func New(o Options) *Emitter {
	if o.StreamChannel == (fanout.Key{}) {
		o.StreamChannel = DefaultStreamChannel
	}
	if o.DashboardChannel == (fanout.Key{}) {
		o.DashboardChannel = DefaultDashboardChannel
	}
	if o.QueueSize <= 0 {
		o.QueueSize = DefaultQueueSize
	}
	if o.SnapshotEvery <= 0 {
		o.SnapshotEvery = DefaultSnapshotEvery
	}
	if o.AgentFlushEvery <= 0 {
		o.AgentFlushEvery = DefaultAgentFlushEvery
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	wsHub := fanout.NewHub(fanout.Options{Bootstrap: []fanout.Key{wsKey}})
	return &Emitter{
		o:          o,
		log:        o.Logger.With("component", "telemetry"),
		ids:        codec.NewIDGen(o.NodeID),
		queue:      newQueue(o.QueueSize),
		wsHub:      wsHub,
		wsCh:       wsHub.Channel(wsKey),
		agents:     make(map[*AgentHandle]struct{}),
		payloadBuf: make([]byte, 0, 1024),
		envBuf:     make([]byte, 0, 2048),
		lastWindow: time.Now(),
	}
}

// Emit queues an event whose payload is {"eventType": eventType, ...fields,
// "node_id": ...}. It never blocks: it returns false, and counts a drop, when
// the queue is full. Safe from any goroutine, event loops included. fields
// are encoded later on the emitter goroutine, so the caller must not modify
// the map (or anything in it) afterwards; keys "eventType" and "node_id" in
// fields are ignored. An event nobody watches (no member of the stream
// channel, no telemetry WebSocket) is counted as published and dropped at
// once, as publish would drop it.
func (e *Emitter) Emit(eventType string, fields map[string]any) bool {
	if !e.watched() {
		// publish would drop it: queueing it would only wake the emitter
		// goroutine, a thread woken and put back to sleep for every
		// command at a thousand commands a second.
		e.published.Add(1)
		return true
	}
	if e.queue.push(item{kind: kindEvent, at: time.Now().UnixNano(), typ: eventType, fields: fields}) {
		return true
	}
	e.dropped.Add(1)
	return false
}

// watched reports whether an event emitted now reaches anyone: a member of
// the stream channel or a telemetry WebSocket connection.
func (e *Emitter) watched() bool {
	if e.wsCh.Members() > 0 {
		return true
	}
	if e.o.Hub == nil {
		return false
	}
	ch := e.o.Hub.Channel(e.o.StreamChannel)
	return ch != nil && ch.Members() > 0
}

// Forward hands a client's telemetry frame (a complete text frame, already
// re-broadcast by the bus on the stream channel) to the telemetry WebSocket
// connections. It never blocks: with the queue full the frame is dropped and
// counted. The frame must not be modified afterwards.
func (e *Emitter) Forward(frame []byte) {
	if e.wsConns.Load() <= 0 {
		return
	}
	if !e.queue.push(item{kind: kindForward, frame: frame}) {
		e.dropped.Add(1)
	}
}

// Dropped is how many events, forwards and releases were refused because the
// queue was full.
func (e *Emitter) Dropped() uint64 { return e.dropped.Load() }

// Published is how many telemetry envelopes the emitter has sent out: events,
// metrics snapshots and agent activity (forwards are not counted).
func (e *Emitter) Published() uint64 { return e.published.Load() }

// Forwarded is how many client telemetry frames went to the telemetry WebSocket.
func (e *Emitter) Forwarded() uint64 { return e.forwarded.Load() }

// QueueLen is the number of items waiting in the queue.
func (e *Emitter) QueueLen() int { return e.queue.len() }

// Run drains the queue and ticks metrics snapshots and agent flushes until ctx
// ends; then it sends what is still queued, flushes every agent and returns.
// Call it once, on its own goroutine.
func (e *Emitter) Run(ctx context.Context) {
	snap := time.NewTicker(e.o.SnapshotEvery)
	defer snap.Stop()
	flush := time.NewTicker(e.o.AgentFlushEvery)
	defer flush.Stop()
	e.lastWindow = time.Now()
	for {
		if batch := e.queue.take(e.spare); len(batch) > 0 {
			e.handleBatch(batch)
			// Busy: look at the clocks and ctx without waiting, then take more.
			select {
			case <-snap.C:
				e.snapshot()
			case <-flush.C:
				e.flushAgents()
			case <-ctx.Done():
				e.stop()
				return
			default:
			}
			continue
		}
		select {
		case <-e.queue.wake:
		case <-snap.C:
			e.snapshot()
		case <-flush.C:
			e.flushAgents()
		case <-ctx.Done():
			e.stop()
			return
		}
	}
}

// stop sends what is queued and flushes every agent. Producers that keep
// going cannot hold it: it takes a few rounds at most.
func (e *Emitter) stop() {
	for range 4 {
		batch := e.queue.take(e.spare)
		if len(batch) == 0 {
			break
		}
		e.handleBatch(batch)
	}
	e.flushAgents()
}

func (e *Emitter) handleBatch(batch []item) {
	for i := range batch {
		e.handle(batch[i])
	}
	clear(batch) // drop references to fields and frames
	e.spare = batch[:0]
}

func (e *Emitter) handle(it item) {
	defer e.recover("event")
	switch it.kind {
	case kindEvent:
		e.publish(e.o.StreamChannel, it.typ, time.Unix(0, it.at), func(p []byte) []byte {
			return appendFields(p, it.fields, e.log)
		})
	case kindForward:
		e.wsCh.Publish(fanout.Frame{Data: it.frame}, nil)
		e.forwarded.Add(1)
	case kindRelease:
		e.flushAgent(it.agent, time.Now(), true)
	}
}

// recover keeps a bad field value or Snapshot func from killing the emitter.
func (e *Emitter) recover(where string) {
	if r := recover(); r != nil {
		e.log.Error("telemetry panic", "where", where, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
	}
}

// publish encodes one telemetry envelope for channel k and sends it to the
// members of k in the bus hub and to the telemetry WebSocket connections. body
// appends the payload fields that come between eventType and node_id, each
// followed by a comma. It returns the frame, nil when nobody was listening
// (then nothing is encoded).
func (e *Emitter) publish(k fanout.Key, eventType string, at time.Time, body func([]byte) []byte) []byte {
	e.published.Add(1)
	var ch *fanout.Channel
	if e.o.Hub != nil {
		ch = e.o.Hub.Channel(k)
	}
	if (ch == nil || ch.Members() == 0) && e.wsCh.Members() == 0 && eventType != EventMetricsSnapshot {
		return nil
	}
	p := append(e.payloadBuf[:0], `{"eventType":`...)
	p = codec.AppendString(p, eventType)
	p = append(p, ',')
	p = body(p)
	p = append(p, `"node_id":`...)
	p = codec.AppendString(p, e.o.NodeID)
	p = append(p, '}')
	e.payloadBuf = p

	env := codec.AppendEnvelope(e.envBuf[:0], codec.Out{
		ID: e.ids.Next("tel"), Type: "telemetry", Room: k.Room, Channel: k.Channel,
		From: codec.ServerFrom, Timestamp: at,
	}, p, nil)
	e.envBuf = env
	frame := engine.TextFrame(env) // exact size: shared by every recipient, never reused

	if ch != nil {
		ch.Publish(fanout.Frame{Data: frame}, nil)
	}
	e.wsCh.Publish(fanout.Frame{Data: frame}, nil)
	return frame
}

// snapshot publishes a metrics_snapshot with the Snapshot fields plus the
// emitter's own counters, and logs drops since the last one.
func (e *Emitter) snapshot() {
	defer e.recover("snapshot")
	var fields map[string]any
	if e.o.Snapshot != nil {
		fields = e.o.Snapshot()
	}
	dropped := e.dropped.Load()
	if d := dropped - e.lastDrops; d > 0 {
		e.log.Warn("telemetry events dropped: queue full", "dropped", d, "total", dropped)
	}
	e.lastDrops = dropped
	frame := e.publish(e.o.StreamChannel, EventMetricsSnapshot, time.Now(), func(p []byte) []byte {
		p = appendFields(p, fields, e.log)
		if _, ok := fields["telemetry"]; !ok {
			p = append(p, `"telemetry":{"dropped":`...)
			p = appendUint(p, dropped)
			p = append(p, `,"published":`...)
			p = appendUint(p, e.published.Load())
			p = append(p, `,"queue":`...)
			p = appendInt(p, int64(e.queue.len()))
			p = append(p, `,"connections":`...)
			p = appendInt(p, e.wsConns.Load())
			p = append(p, "},"...)
		}
		return p
	})
	if frame != nil {
		e.lastSnapshot.Store(&frame)
	}
}
