// Command check is the self-test of examples/cluster/run.sh --check: through
// the load balancer, clients land on different nodes of the cluster and
// still reach each other (an event on a shared channel, a private message).
//
//	go run ./examples/cluster/check -url ws://127.0.0.1:9100/ \
//	    -nodes http://127.0.0.1:8081,http://127.0.0.1:8082,http://127.0.0.1:8083
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/arqonbus/arqonbus/client"
)

func main() {
	wsURL := flag.String("url", "ws://127.0.0.1:9100/", "the load balancer's client WebSocket URL")
	nodes := flag.String("nodes", "http://127.0.0.1:8081,http://127.0.0.1:8082,http://127.0.0.1:8083", "comma-separated HTTP base URLs of the nodes")
	timeout := flag.Duration("timeout", 30*time.Second, "give up after this long")
	flag.Parse()
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	if err := check(ctx, *wsURL, strings.Split(*nodes, ",")); err != nil {
		fmt.Fprintln(os.Stderr, "check: FAILED:", err)
		os.Exit(1)
	}
	fmt.Println("check: OK")
}

type health struct {
	Status string `json:"status"`
	NodeID string `json:"node_id"`
	Checks struct {
		Storage struct {
			Mode   string `json:"mode"`
			Status string `json:"status"`
		} `json:"storage"`
		Cluster struct {
			Status string `json:"status"`
			Nodes  int    `json:"nodes"`
		} `json:"cluster"`
	} `json:"checks"`
}

func getHealth(ctx context.Context, base string) (health, error) {
	var h health
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/health", nil)
	if err != nil {
		return h, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return h, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return h, fmt.Errorf("%s/health: %d %s", base, resp.StatusCode, body)
	}
	return h, json.Unmarshal(body, &h)
}

func check(ctx context.Context, wsURL string, nodes []string) error {
	// 1. Every node is healthy, on Redis, and sees all the others.
	ids := map[string]bool{}
	for _, base := range nodes {
		for {
			h, err := getHealth(ctx, base)
			if err == nil && h.Checks.Cluster.Nodes == len(nodes) {
				if h.Checks.Storage.Mode != "redis" || h.Checks.Storage.Status != "ok" {
					return fmt.Errorf("%s: storage %s %s, want redis ok", base, h.Checks.Storage.Mode, h.Checks.Storage.Status)
				}
				fmt.Printf("check: %s is %s: status %s, storage redis, sees %d cluster nodes\n", base, h.NodeID, h.Status, h.Checks.Cluster.Nodes)
				ids[h.NodeID] = true
				break
			}
			if ctx.Err() != nil {
				return fmt.Errorf("%s: not healthy with %d cluster nodes in time (last: %+v, %v)", base, len(nodes), h, err)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	if len(ids) != len(nodes) {
		return fmt.Errorf("the nodes share node ids: %v", ids)
	}

	// 2. Clients through the balancer, until one sits on each node (leastconn
	// hands each new connection to the node holding the fewest).
	byNode := map[string]*client.Conn{}
	var order []string
	defer func() {
		for _, c := range byNode {
			c.Close()
		}
	}()
	for i := 0; len(byNode) < len(nodes) && i < 4*len(nodes); i++ {
		c, err := client.Dial(ctx, wsURL+"?client_type=service", client.WithClientID(fmt.Sprintf("arq_check_%d_%d", os.Getpid(), i)))
		if err != nil {
			return fmt.Errorf("connect through %s: %w", wsURL, err)
		}
		var node string
		c.Welcome().PayloadField("node_id", &node)
		if byNode[node] != nil {
			c.Close()
			continue
		}
		byNode[node] = c
		order = append(order, node)
		fmt.Printf("check: client %s connected through the balancer to %s\n", c.ClientID(), node)
	}
	if len(byNode) < 2 {
		return errors.New("every client landed on the same node: is the balancer in front of all nodes?")
	}
	if len(byNode) < len(nodes) {
		fmt.Printf("check: clients on %d of %d nodes only\n", len(byNode), len(nodes))
	}

	// 3. All join one channel; an event from the first node's client reaches
	// the clients on every other node.
	const room, channel = "demo", "cluster"
	for _, n := range order {
		if err := byNode[n].Join(ctx, room, channel); err != nil {
			return fmt.Errorf("join %s:%s on %s: %w", room, channel, n, err)
		}
	}
	sender := byNode[order[0]]
	id := client.NewID("msg")
	payload, _ := json.Marshal(map[string]any{"text": "hello from " + order[0]})
	if err := sender.Send(client.Envelope{ID: id, Type: "event", Room: room, Channel: channel, Payload: payload, Metadata: json.RawMessage(`{"ack":true}`)}); err != nil {
		return err
	}
	ack, err := sender.Expect(ctx, func(e client.Envelope) bool {
		return (e.Type == "command_response" || e.Type == "error") && e.RequestID() == id
	})
	if err != nil {
		return fmt.Errorf("no ack for the event: %w", err)
	}
	if e := client.AsError(ack); e != nil {
		return fmt.Errorf("event refused: %w", e)
	}
	for _, n := range order[1:] {
		env, err := byNode[n].Expect(ctx, func(e client.Envelope) bool { return e.Type == "event" && e.ID == id })
		if err != nil {
			return fmt.Errorf("the event from %s did not reach the client on %s: %w", order[0], n, err)
		}
		var pos struct {
			Position string `json:"position"`
		}
		_ = json.Unmarshal(env.Metadata, &pos)
		fmt.Printf("check: event %s from %s delivered on %s (position %s)\n", id, order[0], n, pos.Position)
	}

	// 4. A private message from the last node's client to the first's.
	last := byNode[order[len(order)-1]]
	pid := client.NewID("msg")
	payload, _ = json.Marshal(map[string]any{"target": sender.ClientID(), "text": "hi from " + order[len(order)-1]})
	if err := last.Send(client.Envelope{ID: pid, Type: "private", Room: room, Channel: channel, Payload: payload}); err != nil {
		return err
	}
	if _, err := sender.Expect(ctx, func(e client.Envelope) bool { return e.Type == "private" && e.ID == pid }); err != nil {
		return fmt.Errorf("the private message from %s did not reach %s: %w", order[len(order)-1], order[0], err)
	}
	fmt.Printf("check: private message from the client on %s delivered to the client on %s\n", order[len(order)-1], order[0])
	return nil
}
