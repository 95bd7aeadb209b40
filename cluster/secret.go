package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
)

// SharedSecret returns the cluster's random secret called name, made by the first node that asks and
// kept in Redis for every node after it. Blocks on Redis: never call it on an event loop.
func (n *Node) SharedSecret(ctx context.Context, name string) ([]byte, error) {
	c := n.client()
	if c == nil {
		return nil, ErrUnreachable
	}
	ctx, cancel := context.WithTimeout(ctx, directoryTimeout)
	defer cancel()
	key := n.k.prefix + ":{cluster}:secret:" + name
	fresh := make([]byte, 32)
	_, _ = rand.Read(fresh)
	// SET NX keeps the first node's secret; the GET then reads whichever won.
	if err := c.Do(ctx, c.B().Set().Key(key).Value(hex.EncodeToString(fresh)).Nx().Build()).Error(); err != nil && !isRedisNil(err) {
		return nil, fmt.Errorf("cluster: shared secret %q: %w", name, err)
	}
	v, err := c.Do(ctx, c.B().Get().Key(key).Build()).ToString()
	if err != nil {
		return nil, fmt.Errorf("cluster: shared secret %q: %w", name, err)
	}
	return []byte(v), nil
}
