//go:build race

package server_test

// raceEnabled: the race detector changes memory use, so memory budgets are only reported.
const raceEnabled = true
