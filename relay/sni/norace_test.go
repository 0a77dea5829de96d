//go:build !race

package sni_test

// raceEnabled is set under -race, whose instrumentation adds allocations.
const raceEnabled = false
