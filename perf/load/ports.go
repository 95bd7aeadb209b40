package load

import (
	"fmt"
	"io"
	"net"
	"strconv"
)

// PrintFreePorts writes n distinct free loopback ports, one a line, for scripts that start servers:
// it asks the kernel for n distinct free ports by holding n listeners at once.
func PrintFreePorts(n int, w io.Writer) error {
	ls := make([]net.Listener, 0, n)
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		ls = append(ls, l)
		fmt.Fprintln(w, strconv.Itoa(l.Addr().(*net.TCPAddr).Port))
	}
	return nil
}
