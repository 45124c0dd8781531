//go:build race

package upstream

// raceAllocs is the allocations the race detector adds to an exchange (TestExchangeWireAllocs).
const raceAllocs = 2
