// Command handler is the quickstart's Scenario 4 database service: it joins
// services:database as db_service (client type service), declares that it
// handles the "status" command there, and answers each one with its
// connection-pool figures. It prints "ready" on its own line once the server
// has registered it, and runs until SIGINT or SIGTERM.
//
// For the audit trail, each answered command is also published as an event
// on the same channel (payload event "command_handled"): commands and their
// responses are not kept in history, events are, so `history` of
// services:database lists who asked what and when (with Redis storage, across
// restarts). -audit=false turns it off.
//
//	go run ./examples/service/handler -url ws://127.0.0.1:9100/
//
// The client.Bus it uses reconnects by itself (backoff with jitter, same id,
// resume token) and declares the handler again on every new connection, so
// the service survives a server restart without any code here.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/arqonbus/arqonbus/client"
)

// poolStatus is what the service reports. The figures are made up, as in
// the quickstart: a real service would read its connection pool.
type poolStatus struct {
	ActiveConnections int     `json:"active_connections"`
	MaxConnections    int     `json:"max_connections"`
	AvgResponseTimeMS float64 `json:"avg_response_time_ms"`
}

func main() {
	url := flag.String("url", "ws://127.0.0.1:9100/", "ArqonBus WebSocket URL")
	room := flag.String("room", "services", "room of the service channel")
	channel := flag.String("channel", "database", "service channel")
	id := flag.String("id", "db_service", "client id")
	audit := flag.Bool("audit", true, "publish an audit event on the channel for each command answered")
	flag.Parse()
	log.SetFlags(0)
	log.SetPrefix("handler: ")

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	bus, err := client.Connect(cctx, *url, client.Config{
		ClientID:   *id,
		ClientType: "service",
		OnState: func(s client.State, err error) {
			if err != nil {
				log.Printf("%s: %v", s, err)
			} else {
				log.Printf("%s", s)
			}
		},
	})
	cancel()
	if err != nil {
		log.Fatalf("connect %s: %v", *url, err)
	}
	defer bus.Close()

	name := *room + ":" + *channel
	status := func(ctx context.Context, params json.RawMessage, env client.Envelope) (any, error) {
		log.Printf("status from %s (%s) params %s", env.From, env.ID, params)
		if *audit {
			// Acked, so that the entry is in history (persisted, with
			// ARQONBUS_PERSIST=sync) before the requester has its answer.
			_, err := bus.Publish(ctx, name, map[string]any{
				"event": "command_handled", "command": "status", "request_id": env.ID,
				"requester": env.From, "requested_at": env.Timestamp,
			}, client.PublishOptions{Ack: true, Metadata: map[string]any{"audit": true}})
			if err != nil {
				// The answer matters more than its audit line: report, answer.
				log.Printf("audit event for %s: %v", env.ID, err)
			}
		}
		return poolStatus{ActiveConnections: 15, MaxConnections: 100, AvgResponseTimeMS: 2.3}, nil
	}
	hctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	err = bus.Handle(hctx, name, "status", status)
	cancel()
	if err != nil {
		log.Fatalf("register status on %s: %v", name, err)
	}
	fmt.Println("ready")

	select {
	case <-ctx.Done():
		log.Printf("stopping")
	case <-bus.Done():
		log.Fatalf("bus closed: %v", bus.Err())
	}
}
