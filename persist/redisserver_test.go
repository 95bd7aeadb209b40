package persist

import (
	"context"
	"testing"
	"time"

	"github.com/redis/rueidis"
)

// readStream reads a whole stream straight from Redis.
func readStream(t testing.TB, c rueidis.Client, key string) []Entry {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	es, err := parseEntries(c.Do(ctx, c.B().Xrange().Key(key).Start("-").End("+").Build()), false)
	if err != nil {
		t.Fatalf("XRANGE %s: %v", key, err)
	}
	return es
}

// waitFor polls cond every 10ms until it holds or timeout passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
