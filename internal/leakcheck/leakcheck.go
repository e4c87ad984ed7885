// Package leakcheck is the goroutine-leak check the example and load-tool tests share: it
// counts goroutines, leaving out the one the process keeps for good once a session has
// been parked (package proxy's shared epoll loop).
package leakcheck

import (
	"runtime"
	"strings"
	"testing"
	"time"
)

// Count returns the number of goroutines, the proxy's shared epoll loop left out.
func Count() int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return runtime.NumGoroutine() - strings.Count(string(buf[:n]), "proxy.(*poller).loop(")
		}
		buf = make([]byte, 2*len(buf))
	}
}

// Check fails t if, within a few seconds, Count has not come back to before. Goroutines
// that were told to stop (an accept loop, a client's reader) may need a moment to return,
// and nothing signals that they have, so it polls, as goleak does.
func Check(t testing.TB, before int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		n := Count()
		if n <= before {
			return
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines still running, %d before:\n%s", n, before, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}
