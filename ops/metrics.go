package ops

import (
	"time"

	"github.com/arqonbus/arqonbus/codec"
	"github.com/arqonbus/arqonbus/internal/rtstat"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// ClientTypes are the client types exported as arqonbus_clients{type}; no other label value is ever
// produced.
var ClientTypes = []string{"human", "ai-agent", "dashboard", "service"}

// ErrorCodes are the codes exported as arqonbus_errors_total{code} (SPEC "Errors"); a code outside
// this set is not exported.
var ErrorCodes = []string{
	codec.CodeValidation, codec.CodeUnauthorized, codec.CodeForbidden, codec.CodeNotFound,
	codec.CodeTargetNotFound, codec.CodeCommandNotFound, codec.CodeConflict, codec.CodeRateLimited,
	codec.CodeTimeout, codec.CodeUnavailable, codec.CodeInternal,
}

func newRegistry(src Source) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		newBusCollector(src),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return reg
}

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(name, help, labels, nil)
}

// busCollector exports the bus's state from ONE Snapshot per scrape: consistent and cheap (no per-metric
// Source call, nothing on the hot path).
type busCollector struct {
	src Source

	activeClients, clients, rooms, channels, wsConns, telConns                                *prometheus.Desc
	received, sent, errors, uptime, memory, ready, draining, buildInfo                        *prometheus.Desc
	commands, commandErrors, storageWrites, storageErrors, storageDegraded                    *prometheus.Desc
	storageBacklog, persistDepth, telemetryDropped, slowConsumers, loopsAlive                 *prometheus.Desc
	limitRefusals, inboxDropped, panics, evicted                                              *prometheus.Desc
	framesWritten, socketWrites, loopWakeups                                                  *prometheus.Desc
	clusterNodes, clusterReachable, clusterEvents, clusterGaps, clusterRemote, clusterRefused *prometheus.Desc
}

func newBusCollector(src Source) *busCollector {
	return &busCollector{
		src:              src,
		activeClients:    desc("arqonbus_active_clients", "Clients currently connected on the client port."),
		clients:          desc("arqonbus_clients", "Clients currently connected, by client type.", "type"),
		rooms:            desc("arqonbus_rooms_total", "Rooms that currently exist."),
		channels:         desc("arqonbus_channels_total", "Channels that currently exist."),
		wsConns:          desc("arqonbus_websocket_connections", "Open WebSocket connections on the client port."),
		telConns:         desc("arqonbus_telemetry_connections", "Open connections on the telemetry port."),
		received:         desc("arqonbus_messages_received_total", "Envelopes received from clients."),
		sent:             desc("arqonbus_messages_sent_total", "Envelopes delivered to clients (one per recipient)."),
		errors:           desc("arqonbus_errors_total", "Error envelopes sent, by protocol error code.", "code"),
		uptime:           desc("arqonbus_uptime_seconds", "Seconds since the server started."),
		memory:           desc("arqonbus_memory_usage_bytes", "Memory obtained from the OS by the Go runtime and not released."),
		ready:            desc("arqonbus_ready", "1 when the server accepts traffic (started, not draining)."),
		draining:         desc("arqonbus_draining", "1 while the server is shutting down."),
		loopsAlive:       desc("arqonbus_event_loops_alive", "1 when the event loops are responsive."),
		buildInfo:        desc("arqonbus_build_info", "Build information; always 1.", "version", "protocol", "commit"),
		commands:         desc("arqonbus_commands_total", "Commands executed."),
		commandErrors:    desc("arqonbus_command_errors_total", "Commands that ended in an error."),
		storageWrites:    desc("arqonbus_storage_writes_total", "Messages written to storage."),
		storageErrors:    desc("arqonbus_storage_errors_total", "Storage writes that failed."),
		storageDegraded:  desc("arqonbus_storage_degraded", "1 when storage is degraded or failing, else 0."),
		storageBacklog:   desc("arqonbus_storage_backlog", "Messages waiting for storage while it is degraded."),
		persistDepth:     desc("arqonbus_persist_queue_depth", "Messages queued for persistence."),
		telemetryDropped: desc("arqonbus_telemetry_dropped_total", "Telemetry events dropped because consumers lagged."),
		slowConsumers:    desc("arqonbus_slow_consumers_total", "Connections closed because their outbound buffer overflowed."),
		evicted:          desc("arqonbus_channels_evicted_total", "Channels removed after --channel-idle-ttl without members or traffic."),
		inboxDropped: desc("arqonbus_loop_inbox_dropped_total", "Frames (one per recipient) dropped because an event loop's inbox was full; "+
			"their recipients were closed with 1013."),
		framesWritten: desc("arqonbus_frames_written_total", "Frames written to client sockets (deliveries, answers, control frames)."),
		socketWrites: desc("arqonbus_socket_writes_total", "write and writev system calls on client sockets; frames_written / socket_writes "+
			"is how many frames one call carries (see --write-coalesce)."),
		loopWakeups: desc("arqonbus_loop_wakeups_total", "Times an event loop was woken for work posted from elsewhere (deliveries from "+
			"another loop, held frames, Redis and timer callbacks)."),
		limitRefusals:    desc("arqonbus_limit_refusals_total", "Requests refused by a limit, by limit.", "limit"),
		panics:           desc("arqonbus_panics_recovered_total", "Panics recovered without ending the process (each a bug, logged with its stack)."),
		clusterNodes:     desc("arqonbus_cluster_nodes", "Live nodes of the cluster, as this node sees them (clustered nodes only)."),
		clusterReachable: desc("arqonbus_cluster_reachable", "1 while events cross nodes, 0 while Redis is unreachable (clustered nodes only)."),
		clusterEvents: desc("arqonbus_cluster_events_total", "Events by way: published through Redis, received from it, "+
			"local_only (Redis unreachable) and uncertain (its way failed midway), both routed on this node only (an uncertain one maybe elsewhere too).", "way"),
		clusterGaps:    desc("arqonbus_cluster_gaps_total", "Catch-ups that found history trimmed before this node read it."),
		clusterRemote:  desc("arqonbus_cluster_remote_sends_total", "Private messages, commands and answers sent to other nodes, by outcome.", "outcome"),
		clusterRefused: desc("arqonbus_cluster_queue_refused_total", "Publishes and messages to other nodes refused because too much was waiting for Redis."),
	}
}

func (c *busCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		c.activeClients, c.clients, c.rooms, c.channels, c.wsConns, c.telConns,
		c.received, c.sent, c.errors, c.uptime, c.memory, c.ready, c.draining, c.loopsAlive, c.buildInfo,
		c.commands, c.commandErrors, c.storageWrites, c.storageErrors, c.storageDegraded,
		c.storageBacklog, c.persistDepth, c.telemetryDropped, c.slowConsumers, c.inboxDropped, c.limitRefusals, c.panics, c.evicted,
		c.framesWritten, c.socketWrites, c.loopWakeups,
		c.clusterNodes, c.clusterReachable, c.clusterEvents, c.clusterGaps, c.clusterRemote, c.clusterRefused,
	} {
		ch <- d
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func (c *busCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.src.Snapshot()
	gauge := func(d *prometheus.Desc, v float64, lv ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, lv...)
	}
	counter := func(d *prometheus.Desc, v uint64, lv ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), lv...)
	}

	gauge(c.activeClients, float64(s.ActiveClients))
	for _, t := range ClientTypes {
		gauge(c.clients, float64(s.ClientsByType[t]), t)
	}
	gauge(c.rooms, float64(s.Rooms))
	gauge(c.channels, float64(s.Channels))
	gauge(c.wsConns, float64(s.WebSocketConnections))
	gauge(c.telConns, float64(s.TelemetryConnections))
	counter(c.received, s.MessagesReceived)
	counter(c.sent, s.MessagesSent)
	for _, code := range ErrorCodes {
		counter(c.errors, s.ErrorsByCode[code], code)
	}
	uptime := 0.0
	if !s.Started.IsZero() {
		uptime = time.Since(s.Started).Seconds()
	}
	gauge(c.uptime, uptime)
	gauge(c.memory, memoryInUse())
	gauge(c.ready, b2f(s.Ready))
	gauge(c.draining, b2f(s.Draining))
	gauge(c.loopsAlive, b2f(s.LoopsAlive))
	gauge(c.buildInfo, 1, s.Version, protocolOf(s), s.Commit)
	counter(c.panics, s.Panics)
	counter(c.commands, s.Commands)
	counter(c.commandErrors, s.CommandErrors)
	counter(c.storageWrites, s.StorageWrites)
	counter(c.storageErrors, s.StorageErrors)
	gauge(c.storageDegraded, b2f(s.Storage.Degraded()))
	gauge(c.storageBacklog, float64(s.Storage.Backlog))
	gauge(c.persistDepth, float64(s.PersistQueueDepth))
	counter(c.telemetryDropped, s.TelemetryDropped)
	counter(c.slowConsumers, s.SlowConsumers)
	counter(c.inboxDropped, s.LoopInboxDropped)
	counter(c.framesWritten, s.FramesWritten)
	counter(c.socketWrites, s.SocketWrites)
	counter(c.loopWakeups, s.LoopWakeups)
	counter(c.evicted, s.ChannelsEvicted)
	for _, l := range Limits {
		counter(c.limitRefusals, s.LimitRefusals[l], l)
	}
	if cl := s.Cluster; cl != nil {
		gauge(c.clusterNodes, float64(len(cl.Nodes)))
		gauge(c.clusterReachable, b2f(cl.Reachable))
		counter(c.clusterEvents, cl.EventsPublished, "published")
		counter(c.clusterEvents, cl.EventsReceived, "received")
		counter(c.clusterEvents, cl.LocalOnly, "local_only")
		counter(c.clusterEvents, cl.Uncertain, "uncertain")
		counter(c.clusterGaps, cl.Gaps)
		counter(c.clusterRemote, cl.RemoteSends-min(cl.RemoteFailures, cl.RemoteSends), "sent")
		counter(c.clusterRemote, cl.RemoteFailures, "failed")
		counter(c.clusterRefused, cl.QueueRefused)
	}
}

func protocolOf(s Snapshot) string {
	if s.Protocol == "" {
		return "1.0"
	}
	return s.Protocol
}

// memoryInUse is the Go runtime's mapped-and-not-released memory (rtstat: without stopping the world).
func memoryInUse() float64 { return float64(rtstat.Read().MemoryBytes) }
