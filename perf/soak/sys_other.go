//go:build !linux

package soak

import "syscall"

// smallRcvBuf leaves the receive buffer as it is off Linux: stalled clients then take longer to
// be cut, since the kernel absorbs more before the server's backlog grows.
func smallRcvBuf(network, address string, rc syscall.RawConn) error { return nil }
