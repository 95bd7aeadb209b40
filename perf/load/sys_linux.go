//go:build linux

package load

import (
	"syscall"
	"time"
)

// ipBindAddressNoPort is IP_BIND_ADDRESS_NO_PORT (linux/in.h), missing from package syscall.
const ipBindAddressNoPort = 24

// bindNoPortControl defers port choice from bind() to connect() when a source address is given.
// Without it each bind reserves an ephemeral port for every destination, so one source address
// would be exhausted after about 28,000 connections in total (TIME_WAIT included) instead of per
// destination.
func bindNoPortControl(network, address string, rc syscall.RawConn) error {
	var serr error
	err := rc.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, ipBindAddressNoPort, 1)
	})
	if err != nil {
		return err
	}
	return serr
}

// fdLimit is the soft RLIMIT_NOFILE (the Go runtime raises it to the hard limit at start).
func fdLimit() (uint64, bool) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0, false
	}
	return rl.Cur, true
}

// selfCPU is the generator's own user + system CPU time so far (all its threads).
func selfCPU() (time.Duration, bool) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, false
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), true
}
