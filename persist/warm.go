package persist

import (
	"context"
	"fmt"
	"strings"

	"github.com/redis/rueidis"
)

// Warmer is a store that can load what it keeps elsewhere into its memory
// rings before the bus starts serving.
type Warmer interface {
	// Warm loads every channel's newest history into its ring and returns
	// the channels it found. Call it before the first Append.
	Warm(ctx context.Context) ([]string, error)
}

var _ Warmer = (*Redis)(nil)

// warmBatch is how many streams one round trip reads.
const warmBatch = 64

// Warm scans for the channel streams and loads the newest HistorySize
// entries of each into its ring, so that after a restart replays (which
// read only the rings, under the channel lock) see what was published before
// it, and each channel's clock can be seeded above its stream's top. On Redis
// Cluster every node is scanned (a scan covers one node's keys); a stream
// found twice (a replica) is loaded once.
func (s *Redis) Warm(ctx context.Context) ([]string, error) {
	c := s.getClient()
	if c == nil || s.degraded.Load() {
		return nil, fmt.Errorf("persist: warm: %w", ErrUnavailable)
	}
	var channels []string
	seen := map[string]bool{}
	for addr, node := range c.Nodes() {
		found, err := s.warmNode(ctx, c, node, seen)
		channels = append(channels, found...)
		if err != nil {
			return channels, fmt.Errorf("persist: warm from %s: %w", addr, err)
		}
	}
	return channels, nil
}

// warmNode loads the streams one node holds (skipping those in seen).
func (s *Redis) warmNode(ctx context.Context, c, node rueidis.Client, seen map[string]bool) ([]string, error) {
	prefix := s.o.KeyPrefix + ":{"
	const suffix = "}:stream"
	var channels []string
	var cursor uint64
	for {
		res, err := node.Do(ctx, node.B().Scan().Cursor(cursor).Match(prefix+"*"+suffix).Count(1000).Type("stream").Build()).AsScanEntry()
		if err != nil {
			return channels, fmt.Errorf("scan: %w", err)
		}
		var keys, names []string
		for _, k := range res.Elements {
			if name, ok := strings.CutPrefix(k, prefix); ok {
				if name, ok = strings.CutSuffix(name, suffix); ok && name != "" && !seen[name] {
					seen[name] = true
					keys, names = append(keys, k), append(names, name)
				}
			}
		}
		for i := 0; i < len(keys); i += warmBatch {
			j := min(i+warmBatch, len(keys))
			if err := s.warmStreams(ctx, c, keys[i:j], names[i:j]); err != nil {
				return channels, err
			}
			channels = append(channels, names[i:j]...)
		}
		if cursor = res.Cursor; cursor == 0 {
			return channels, nil
		}
	}
}

func (s *Redis) warmStreams(ctx context.Context, c rueidis.Client, keys, names []string) error {
	cmds := make(rueidis.Commands, len(keys))
	for i, k := range keys {
		cmds[i] = c.B().Xrevrange().Key(k).End("+").Start("-").Count(int64(s.o.HistorySize)).Build()
	}
	for i, res := range c.DoMulti(ctx, cmds...) {
		entries, err := parseEntries(res, true)
		if err != nil {
			return fmt.Errorf("persist: warm %q: %w", names[i], err)
		}
		for _, e := range entries {
			s.channels.append(names[i], e)
		}
	}
	return nil
}
