package fanout

import (
	"strconv"
	"testing"

	"github.com/arqonbus/arqonbus/engine"
)

// bigChannel is a channel of members members spread over two detached loops.
func bigChannel(tb testing.TB, members int) (*Hub, *Channel, []*engine.Loop) {
	tb.Helper()
	h := NewHub(Options{AutoCreate: true})
	loops := []*engine.Loop{engine.NewDetachedLoop(), engine.NewDetachedLoop()}
	var ch *Channel
	for i := range members {
		ch, _, _ = h.Join(general, loops[i%2].NewConn(""), nil, nil)
	}
	if ch.Members() != members {
		tb.Fatalf("%d members, want %d", ch.Members(), members)
	}
	return h, ch, loops
}

// BenchmarkJoinLeave is one member joining and leaving a channel of 20,000:
// what each connection of a reconnect storm costs the channel (and holds its
// lock for).
func BenchmarkJoinLeave(b *testing.B) {
	for _, members := range []int{100, 20000} {
		b.Run("members="+strconv.Itoa(members), func(b *testing.B) {
			h, ch, loops := bigChannel(b, members)
			c := loops[0].NewConn("")
			b.ReportAllocs()
			for b.Loop() {
				h.Join(general, c, nil, nil)
				h.Leave(ch, c)
			}
		})
	}
}

// BenchmarkJoinStorm is 20,000 connections joining one channel, with a
// publish after every 100 joins (per op: the whole storm).
func BenchmarkJoinStorm(b *testing.B) {
	const members = 20000
	loops := []*engine.Loop{engine.NewDetachedLoop(), engine.NewDetachedLoop()}
	conns := make([]*engine.Conn, members)
	for i := range conns {
		conns[i] = loops[i%2].NewConn("")
	}
	frame := engine.TextFrame([]byte(`{}`))
	b.ReportAllocs()
	for b.Loop() {
		h := NewHub(Options{AutoCreate: true})
		var ch *Channel
		for i, c := range conns {
			ch, _, _ = h.Join(general, c, nil, nil)
			if i%100 == 99 {
				ch.Publish(Frame{Data: frame}, nil)
			}
		}
		for _, c := range conns {
			h.Leave(ch, c)
		}
	}
}

// BenchmarkPublish is a publish to a channel of 20,000 whose membership did
// not change: the snapshot is handed to the loops as is.
func BenchmarkPublish(b *testing.B) {
	_, ch, _ := bigChannel(b, 20000)
	frame := engine.TextFrame([]byte(`{}`))
	b.ReportAllocs()
	for b.Loop() {
		ch.Publish(Frame{Data: frame}, nil)
	}
}
