package procnet

import (
	"net"
	"os"
	"testing"
)

func TestListensOn(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	if !ListensOn(os.Getpid(), port) {
		t.Errorf("this process listens on %d, ListensOn says no", port)
	}
	if ListensOn(1, port) {
		t.Errorf("pid 1 does not listen on %d, ListensOn says it does", port)
	}
	l.Close()
	if ListensOn(os.Getpid(), port) {
		t.Errorf("closed listener on %d still reported", port)
	}
}
