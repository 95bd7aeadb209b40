package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/arqonbus/arqonbus/client"
)

// TestManyClients runs 500 concurrent clients over 5 rooms x 4 channels.
// Client i joins 1 to 3 channels chosen by a fixed pattern and publishes 3
// events over them; every client must then receive exactly the events of its
// channels from the others: none missing, none twice, none of its own, none
// from other channels, each sender's events in order.
func TestManyClients(t *testing.T) {
	const (
		clients   = 500
		rooms     = 5
		perRoom   = 4
		channels  = rooms * perRoom
		perClient = 3 // events each client publishes
	)
	s := startServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	chanName := func(k int) (string, string) {
		return fmt.Sprintf("many%d", k/perRoom), fmt.Sprintf("ch%d", k%perRoom)
	}
	// Client i is in 1 + i%3 channels: (7i + 5j) mod 20 for j < that; the
	// steps of 5 keep them distinct.
	member := make([][]int, clients)
	inChan := make([]map[int]bool, clients)
	for i := range member {
		inChan[i] = map[int]bool{}
		for j := 0; j < 1+i%3; j++ {
			k := (7*i + 5*j) % channels
			member[i] = append(member[i], k)
			inChan[i][k] = true
		}
	}
	// Event m of client i goes to its channel m mod len(member[i]).
	target := func(i, m int) int { return member[i][m%len(member[i])] }
	want := make([]int, clients) // events client i must receive
	for sender := 0; sender < clients; sender++ {
		for m := 0; m < perClient; m++ {
			k := target(sender, m)
			for i := 0; i < clients; i++ {
				if i != sender && inChan[i][k] {
					want[i]++
				}
			}
		}
	}

	// Connect and join with bounded parallelism, so the test measures the
	// bus and not the listen backlog.
	conns := make([]*client.Conn, clients)
	t.Cleanup(func() {
		var wg sync.WaitGroup
		for _, c := range conns {
			if c != nil {
				wg.Add(1)
				go func() { defer wg.Done(); c.Abort() }()
			}
		}
		wg.Wait()
	})
	errs := make(chan error, clients)
	sem := make(chan struct{}, 50)
	var wg sync.WaitGroup
	for i := 0; i < clients; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			c, err := client.Dial(ctx, s.URL, client.WithClientID(fmt.Sprintf("many_%03d", i)))
			if err != nil {
				errs <- fmt.Errorf("client %d dial: %w", i, err)
				return
			}
			conns[i] = c
			for _, k := range member[i] {
				room, ch := chanName(k)
				if err := c.Join(ctx, room, ch); err != nil {
					errs <- fmt.Errorf("client %d join %s:%s: %w", i, room, ch, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err) // the first is enough: the rest usually say the same
	}
	t.Logf("%d clients connected and joined", clients)

	type event struct {
		Sender int `json:"sender"`
		Seq    int `json:"seq"`
		Chan   int `json:"chan"`
	}
	// Everyone publishes at once.
	start := time.Now()
	var pub sync.WaitGroup
	pubErrs := make(chan error, clients)
	for i := 0; i < clients; i++ {
		pub.Add(1)
		go func() {
			defer pub.Done()
			for m := 0; m < perClient; m++ {
				k := target(i, m)
				room, ch := chanName(k)
				if _, err := conns[i].Publish(room, ch, event{Sender: i, Seq: m, Chan: k}); err != nil {
					pubErrs <- fmt.Errorf("client %d publish: %w", i, err)
					return
				}
			}
		}()
	}

	// Each client reads until it has what it must get, then a little longer
	// to catch extras and duplicates.
	var mu sync.Mutex
	var problems []string
	report := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		if len(problems) < 30 {
			problems = append(problems, fmt.Sprintf(format, args...))
		}
	}
	var recv sync.WaitGroup
	for i := 0; i < clients; i++ {
		recv.Add(1)
		go func() {
			defer recv.Done()
			c := conns[i]
			seen := map[[2]int]bool{}
			last := map[[2]int]int{} // (sender, channel) -> last seq
			got := 0
			for got < want[i] {
				env, err := c.Next(ctx)
				if err != nil {
					report("client %d: got %d of %d events, then %v", i, got, want[i], err)
					return
				}
				if !checkMany(i, env, inChan[i], seen, last, report) {
					continue
				}
				got++
			}
			// Quiet period: anything now is an extra or a duplicate.
			qctx, qcancel := context.WithTimeout(ctx, 500*time.Millisecond)
			defer qcancel()
			for {
				env, err := c.Next(qctx)
				if err != nil {
					return
				}
				if checkMany(i, env, inChan[i], seen, last, report) {
					report("client %d: extra event beyond the %d expected: %s", i, want[i], env.Raw)
				}
			}
		}()
	}
	pub.Wait()
	close(pubErrs)
	for err := range pubErrs {
		t.Error(err)
	}
	recv.Wait()
	total := 0
	for _, w := range want {
		total += w
	}
	t.Logf("%d events published, %d deliveries checked in %v", clients*perClient, total, time.Since(start).Round(time.Millisecond))
	for _, p := range problems {
		t.Error(p)
	}
}

// checkMany validates one envelope received by client i and reports whether
// it was a correct, new event (counted toward what i must get).
func checkMany(i int, env client.Envelope, in map[int]bool, seen map[[2]int]bool, last map[[2]int]int, report func(string, ...any)) bool {
	if isNotice(env) {
		return false
	}
	if env.Type != "event" {
		report("client %d: unexpected %s envelope: %s", i, env.Type, env.Raw)
		return false
	}
	var ev struct {
		Sender int `json:"sender"`
		Seq    int `json:"seq"`
		Chan   int `json:"chan"`
	}
	if err := json.Unmarshal(env.Payload, &ev); err != nil {
		report("client %d: event payload: %v: %s", i, err, env.Raw)
		return false
	}
	switch {
	case ev.Sender == i || env.From == fmt.Sprintf("many_%03d", i):
		report("client %d: got its own event back: %s", i, env.Raw)
		return false
	case env.From != fmt.Sprintf("many_%03d", ev.Sender):
		report("client %d: from %q does not match sender %d: %s", i, env.From, ev.Sender, env.Raw)
		return false
	case !in[ev.Chan]:
		report("client %d: event of a channel it is not in: %s", i, env.Raw)
		return false
	case env.Room != fmt.Sprintf("many%d", ev.Chan/4) || env.Channel != fmt.Sprintf("ch%d", ev.Chan%4):
		report("client %d: event arrived with room:channel %s:%s: %s", i, env.Room, env.Channel, env.Raw)
		return false
	}
	key := [2]int{ev.Sender, ev.Seq}
	if seen[key] {
		report("client %d: duplicate event: %s", i, env.Raw)
		return false
	}
	seen[key] = true
	order := [2]int{ev.Sender, ev.Chan}
	if prev, ok := last[order]; ok && prev > ev.Seq {
		report("client %d: events of sender %d on channel %d out of order (%d after %d)", i, ev.Sender, ev.Chan, ev.Seq, prev)
	}
	last[order] = ev.Seq
	return true
}
