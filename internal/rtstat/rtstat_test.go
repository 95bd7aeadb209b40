package rtstat

import (
	"runtime"
	"testing"
)

func TestRead(t *testing.T) {
	f := Read()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	if f.MemoryBytes == 0 || f.MemoryBytes > ms.Sys {
		t.Errorf("memory %d, want more than 0 and at most Sys %d", f.MemoryBytes, ms.Sys)
	}
	if f.Goroutines < 1 {
		t.Errorf("goroutines %d", f.Goroutines)
	}
}
