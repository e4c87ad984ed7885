package supervisor

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/mqtls/mqtls/internal/logbuf"
)

// TestMemRelease: memory is returned once after a burst of handshakes has gone quiet, not
// after a handful, and not while handshakes keep coming.
func TestMemRelease(t *testing.T) {
	const quiet = 100 * time.Millisecond
	const msg = "burst of handshakes over"
	start := func(t *testing.T) (*memRelease, *logbuf.Buffer) {
		var out logbuf.Buffer
		r := &memRelease{}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); r.run(ctx, quiet, zerolog.New(&out).Level(zerolog.DebugLevel)) }()
		t.Cleanup(func() { cancel(); <-done })
		return r, &out
	}
	// waitLines polls the log for up to d (the releaser says nothing else to wait on).
	waitLines := func(out *logbuf.Buffer, want int, d time.Duration) int {
		deadline := time.Now().Add(d)
		for {
			n := strings.Count(out.String(), msg)
			if n >= want || time.Now().After(deadline) {
				return n
			}
			time.Sleep(10 * time.Millisecond)
		}
	}

	t.Run("after a burst", func(t *testing.T) {
		r, out := start(t)
		for range minReleaseBurst {
			r.note()
		}
		if n := waitLines(out, 1, 5*time.Second); n != 1 {
			t.Fatalf("%d releases after a burst of %d handshakes, want 1; log:\n%s", n, minReleaseBurst, out)
		}
		if !strings.Contains(out.String(), `"handshakes":256`) || !strings.Contains(out.String(), `"rss_kib_after"`) {
			t.Errorf("the release line does not say how many handshakes and what RSS: %s", out)
		}
		// Quiet since: no second release for the same burst.
		if n := waitLines(out, 2, 5*quiet); n != 1 {
			t.Errorf("%d releases for one burst, want 1", n)
		}
	})
	t.Run("too few handshakes", func(t *testing.T) {
		r, out := start(t)
		for range minReleaseBurst - 1 {
			r.note()
		}
		if n := waitLines(out, 1, 5*quiet); n != 0 {
			t.Errorf("released after %d handshakes, want none below %d", minReleaseBurst-1, minReleaseBurst)
		}
	})
	t.Run("not while handshakes keep coming", func(t *testing.T) {
		r, out := start(t)
		for range 2 * minReleaseBurst {
			r.note()
		}
		for range 10 { // 10 × quiet/2: never quiet for quiet
			time.Sleep(quiet / 2)
			r.note()
			if strings.Contains(out.String(), msg) {
				t.Fatal("released while handshakes were still coming")
			}
		}
	})
	t.Run("off", func(t *testing.T) {
		r := &memRelease{}
		done := make(chan struct{})
		go func() { defer close(done); r.run(context.Background(), 0, zerolog.Nop()) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("run with quiet 0 did not return")
		}
	})
}
