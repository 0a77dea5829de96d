package main

import (
	"os"
	"runtime/debug"
	"strconv"
	"testing"
)

// TestTuneGC: kurier eps sets its own GOGC only when the operator set none.
func TestTuneGC(t *testing.T) {
	prev := debug.SetGCPercent(100)
	t.Cleanup(func() { debug.SetGCPercent(prev) })

	t.Setenv("GOGC", "150") // restores the variable afterwards
	if got := tuneGC(); got != "150" {
		t.Errorf("with GOGC=150 in the environment: %q", got)
	}
	if got := debug.SetGCPercent(100); got != 100 {
		t.Errorf("GOGC from the environment was overridden with %d", got)
	}

	os.Unsetenv("GOGC")
	if got := tuneGC(); got != strconv.Itoa(epsGOGC) {
		t.Errorf("without GOGC: %q", got)
	}
	if got := debug.SetGCPercent(100); got != epsGOGC {
		t.Errorf("GC percent is %d, want %d", got, epsGOGC)
	}
}
