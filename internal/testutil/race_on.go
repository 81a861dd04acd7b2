//go:build race

package testutil

// raceEnabled: the tests run with -race, so the agent binary they start is
// built with the race detector too.
const raceEnabled = true
