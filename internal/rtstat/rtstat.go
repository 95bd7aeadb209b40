// Package rtstat reads the Go runtime's figures that status and metrics
// report, through runtime/metrics: unlike runtime.ReadMemStats it does not
// stop the world, so any client may ask for them as often as its command
// rate allows.
package rtstat

import "runtime/metrics"

// Figures are the runtime's memory and goroutines.
type Figures struct {
	// MemoryBytes is what the Go runtime has mapped from the OS and not
	// released back (its share of the process's memory).
	MemoryBytes uint64
	Goroutines  int
}

// Read reads the figures now.
func Read() Figures {
	samples := [3]metrics.Sample{
		{Name: "/memory/classes/total:bytes"},
		{Name: "/memory/classes/heap/released:bytes"},
		{Name: "/sched/goroutines:goroutines"},
	}
	metrics.Read(samples[:])
	var f Figures
	total, released := samples[0].Value, samples[1].Value
	if total.Kind() == metrics.KindUint64 && released.Kind() == metrics.KindUint64 {
		f.MemoryBytes = total.Uint64() - min(released.Uint64(), total.Uint64())
	}
	if g := samples[2].Value; g.Kind() == metrics.KindUint64 {
		f.Goroutines = int(g.Uint64())
	}
	return f
}
