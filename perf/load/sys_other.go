//go:build !linux

package load

import (
	"syscall"
	"time"
)

// bindNoPortControl does nothing off Linux: the option it sets is Linux-only.
func bindNoPortControl(network, address string, rc syscall.RawConn) error { return nil }

// fdLimit is unknown off Linux; Config.Normalize then relies on MaxConnsPerProcess alone.
func fdLimit() (uint64, bool) { return 0, false }

// selfCPU is not read off Linux: the run reports no generator CPU there.
func selfCPU() (time.Duration, bool) { return 0, false }
