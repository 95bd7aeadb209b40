package engine

import (
	"context"
	"time"

	"github.com/panjf2000/gnet/v2"
)

// gnetEventLoop and discardConn stand in for gnet in benchmarks: the methods
// the write path uses are implemented, the rest are left to the embedded nil
// interface (and would panic if called).
type gnetEventLoop = gnet.EventLoop

func (*stubLoop) Execute(ctx context.Context, r gnet.Runnable) error { return r.Run(ctx) }
func (*stubLoop) Schedule(context.Context, gnet.Runnable, time.Duration) error {
	return nil
}

type discardConn struct{ gnet.Conn }

func (*discardConn) Write(p []byte) (int, error) { return len(p), nil }
func (*discardConn) Writev(bs [][]byte) (int, error) {
	n := 0
	for _, b := range bs {
		n += len(b)
	}
	return n, nil
}
func (*discardConn) OutboundBuffered() int { return 0 }
func (*discardConn) Close() error          { return nil }
