//go:build race

package proxy_test

// raceEnabled: the race detector makes sync.Pool drop items on purpose, so memory
// measurements need more room.
const raceEnabled = true
