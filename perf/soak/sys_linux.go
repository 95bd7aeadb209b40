//go:build linux

package soak

import "syscall"

// stalledRcvBuf is the receive buffer asked for by clients that stop reading. A small one makes
// the server's backlog build at the rate the bus sends, instead of first filling megabytes of
// kernel buffers that the server cannot see (the kernel doubles the value asked for).
const stalledRcvBuf = 16 << 10

// smallRcvBuf sets SO_RCVBUF before connect, which bounds the window the client advertises.
func smallRcvBuf(network, address string, rc syscall.RawConn) error {
	var serr error
	err := rc.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, stalledRcvBuf)
	})
	if err != nil {
		return err
	}
	return serr
}
