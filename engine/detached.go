package engine

import (
	"context"
	"io"
	"log/slog"
	"time"

	"github.com/panjf2000/gnet/v2"
)

// NewDetachedLoop returns an event loop with no sockets behind it: what is
// posted to it runs at once on the posting goroutine, and its connections
// discard what they are sent. It lets benchmarks and tests drive a Handler and
// the whole write path (inbox, backlog checks) without a network;
// it is not for serving. It does not coalesce writes: the coalescing timer
// would run the loop's work on the timer's goroutine, beside the caller's.
func NewDetachedLoop() *Loop {
	srv := New(Config{WriteCoalesce: -1, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, nil)
	return newLoop(srv, inlineLoop{})
}

// NewConn returns an open connection on a detached loop.
func (l *Loop) NewConn(remote string) *Conn {
	c := &Conn{gc: discardConn{}, loop: l, state: stateOpen, remote: remote}
	c.reader.maxMessage = int64(l.srv.cfg.MaxMessageSize)
	l.conns[c] = struct{}{}
	return c
}

// inlineLoop runs posted work on the caller's goroutine.
type inlineLoop struct{ gnet.EventLoop }

func (inlineLoop) Execute(ctx context.Context, r gnet.Runnable) error { return r.Run(ctx) }

func (inlineLoop) Schedule(context.Context, gnet.Runnable, time.Duration) error { return nil }

// discardConn is the socket of a detached connection: writes vanish. The
// methods the write path does not use are left to the embedded interface.
type discardConn struct{ gnet.Conn }

func (discardConn) Write(p []byte) (int, error) { return len(p), nil }

func (discardConn) Writev(bs [][]byte) (int, error) {
	n := 0
	for _, b := range bs {
		n += len(b)
	}
	return n, nil
}

func (discardConn) OutboundBuffered() int { return 0 }
func (discardConn) Fd() int               { return -1 }
func (discardConn) Close() error          { return nil }
