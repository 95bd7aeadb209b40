package ops

import (
	"net"
	"testing"
	"time"
)

// The HTTP listener holds at most its bound of connections; the next waits
// (in the backlog, holding no descriptor of ours) until one closes.
func TestLimitListener(t *testing.T) {
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := newLimitListener(tcp, 2)
	defer ln.Close()
	accepted := make(chan net.Conn, 3)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				close(accepted)
				return
			}
			accepted <- c
		}
	}()
	for range 3 {
		c, err := net.Dial("tcp", tcp.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	first, second := <-accepted, <-accepted
	select {
	case <-accepted:
		t.Fatal("a third connection was accepted over the bound of two")
	case <-time.After(200 * time.Millisecond):
	}
	first.Close()
	first.Close() // closing twice must neither block nor free a second slot
	select {
	case c := <-accepted:
		defer c.Close()
	case <-time.After(5 * time.Second):
		t.Fatal("the waiting connection was not accepted once a slot was free")
	}
	second.Close()
	ln.Close()
	for range accepted {
	}
}
