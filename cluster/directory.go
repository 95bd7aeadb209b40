package cluster

import (
	"context"
	"fmt"
	"strconv"
	"time"
)

// The client-id directory: which live instance holds each client id. An entry whose instance is no
// longer live counts as free, so a client whose node died can claim its id elsewhere as soon as the
// registry sees the node dead (NodeTTL).

// directoryTimeout bounds one directory round trip.
const directoryTimeout = 3 * time.Second

// ClaimID binds id to this node unless a live node holds it; with replace it takes the id anyway and
// names the instance it took it from (whose connection must be closed). On refusal, holder is the live
// instance holding it. Blocks on Redis: never call it on an event loop.
func (n *Node) ClaimID(ctx context.Context, id string, replace bool) (ok bool, holder string, err error) {
	c := n.client()
	if c == nil || !n.Up() {
		return false, "", ErrUnreachable
	}
	ctx, cancel := context.WithTimeout(ctx, directoryTimeout)
	defer cancel()
	rep := "0"
	if replace {
		rep = "1"
	}
	res, err := claimScript.do(ctx, c, []string{n.k.clients, n.k.nodes, n.k.owned(n.instance)},
		id, n.instance, n.ttlMs(), rep).ToArray()
	if err != nil {
		n.failed(err)
		return false, "", fmt.Errorf("cluster: claim client id %q: %w", id, err)
	}
	if len(res) != 2 {
		return false, "", fmt.Errorf("cluster: claim client id %q: unexpected reply", id)
	}
	won, _ := res[0].AsInt64()
	other, _ := res[1].ToString()
	return won == 1, other, nil
}

// ReleaseID unbinds id if this node holds it. Blocks on Redis.
func (n *Node) ReleaseID(ctx context.Context, id string) error {
	c := n.client()
	if c == nil {
		return ErrUnreachable
	}
	ctx, cancel := context.WithTimeout(ctx, directoryTimeout)
	defer cancel()
	if err := releaseScript.do(ctx, c, []string{n.k.clients, n.k.owned(n.instance)}, id, n.instance).Error(); err != nil {
		n.failed(err)
		return fmt.Errorf("cluster: release client id %q: %w", id, err)
	}
	return nil
}

// failed reports connection trouble (not Redis's refusals) as lost reachability.
func (n *Node) failed(err error) {
	if !isRedisErr(err) && !isRedisNil(err) && err != context.Canceled {
		n.lost(err)
	}
}

func (n *Node) ttlMs() string { return strconv.FormatInt(n.o.NodeTTL.Milliseconds(), 10) }
