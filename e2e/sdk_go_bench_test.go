package e2e

// What one Go subscriber receives through the SDK (client.Bus), and the
// same through the bare client.Conn for comparison. Not part of make test:
//
//	go test -run '^$' -bench SDKGo -benchtime 100000x ./e2e/
//
// Each run publishes b.N events from one raw publisher connection to one
// channel with one subscriber, and reports events/s received and the
// publish-to-application latency (p50, p99, max; same machine clock).
// "window" keeps the publisher at most 2000 events ahead of what the
// subscriber has taken (the most the path sustains without overrunning the
// server's per-connection buffer); "rate5k" publishes at a steady 5,000/s.

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/arqonbus/arqonbus/client"
)

func BenchmarkSDKGoReceive(b *testing.B) {
	for _, sub := range []string{"bus", "conn"} {
		for _, mode := range []string{"window", "rate5k"} {
			b.Run(sub+"/"+mode, func(b *testing.B) { benchReceive(b, sub, mode) })
		}
	}
}

func benchReceive(b *testing.B, kind, mode string) {
	s := startServer(b, "ARQONBUS_RATE_LIMIT=0")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const room, channel = "bench", "receive"
	pub, err := client.Dial(ctx, s.URL, client.WithClientID("bench_pub"))
	if err != nil {
		b.Fatal(err)
	}
	defer pub.Close()
	if err := pub.Join(ctx, room, channel); err != nil {
		b.Fatal(err)
	}

	n := b.N
	var received atomic.Int64
	lat := make([]time.Duration, 0, n)
	done := make(chan error, 1)
	record := func(payload json.RawMessage) {
		var p struct {
			TS int64 `json:"ts"`
		}
		_ = json.Unmarshal(payload, &p)
		lat = append(lat, time.Duration(time.Now().UnixNano()-p.TS))
		received.Add(1)
	}
	var reconnects int
	var stopped atomic.Bool
	switch kind {
	case "bus":
		bus, err := client.Connect(ctx, s.URL, client.Config{ClientID: "bench_sub"})
		if err != nil {
			b.Fatal(err)
		}
		defer bus.Close()
		sub, err := bus.Join(ctx, room+":"+channel, client.JoinOptions{})
		if err != nil {
			b.Fatal(err)
		}
		go func() {
			for ev := range sub.Events() {
				if ev.Gap != nil {
					// Lost events would stall the window: stop here.
					stopped.Store(true)
					done <- fmt.Errorf("gap %+v after %d events, reconnects %d", *ev.Gap, len(lat), bus.Stats().Reconnects)
					return
				}
				record(ev.Payload)
				if len(lat) == n {
					reconnects = int(bus.Stats().Reconnects)
					done <- nil
					return
				}
			}
			done <- fmt.Errorf("events closed: %v", sub.Err())
		}()
	case "conn":
		c, err := client.Dial(ctx, s.URL, client.WithClientID("bench_sub"))
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		if err := c.Join(ctx, room, channel); err != nil {
			b.Fatal(err)
		}
		go func() {
			for len(lat) < n {
				env, err := c.Next(ctx)
				if err != nil {
					done <- err
					return
				}
				if env.Type == "event" {
					record(env.Payload)
				}
			}
			done <- nil
		}()
	}

	b.ResetTimer()
	start := time.Now()
	frame := func(i int) []byte {
		return fmt.Appendf(nil, `{"version":"1.0","id":"arq_b%d","type":"event","room":"%s","channel":"%s","from":"bench_pub","timestamp":"%s","payload":{"n":%d,"ts":%d}}`,
			i, room, channel, client.Now(), i, time.Now().UnixNano())
	}
	switch mode {
	case "window":
		for i := 0; i < n; i++ {
			for int64(i)-received.Load() >= 2000 && !stopped.Load() {
				time.Sleep(50 * time.Microsecond)
			}
			if err := pub.SendRaw(frame(i)); err != nil {
				b.Fatal(err)
			}
		}
	case "rate5k":
		const rate = 5000
		for i := 0; i < n; {
			due := int(time.Since(start).Seconds() * rate)
			for ; i < due && i < n; i++ {
				if err := pub.SendRaw(frame(i)); err != nil {
					b.Fatal(err)
				}
			}
			time.Sleep(time.Millisecond)
		}
	}
	select {
	case err := <-done:
		if err != nil {
			b.Fatal(err)
		}
	case <-ctx.Done():
		b.Fatalf("received %d of %d", received.Load(), n)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	slices.Sort(lat)
	q := func(f float64) float64 { return float64(lat[min(len(lat)-1, int(f*float64(len(lat))))]) / 1e6 }
	b.ReportMetric(float64(n)/elapsed.Seconds(), "events/s")
	b.ReportMetric(q(0.5), "p50-ms")
	b.ReportMetric(q(0.99), "p99-ms")
	b.ReportMetric(float64(lat[len(lat)-1])/1e6, "max-ms")
	if reconnects > 0 {
		b.Logf("reconnects %d", reconnects)
	}
}
