package supervisor

import (
	"context"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
)

// A reconnect storm (every device at once, after a broker restart) allocates about 180 KB
// per handshake, and the Go runtime keeps the heap it grew to: without help, a fleet that
// connected in a storm and then idles costs about twice its live heap in RSS. After a
// burst of handshakes, once none has run for a while, mqtls gives the freed memory back
// (one garbage collection and a scavenge, tens of milliseconds for a large heap, once per
// burst). Steady churn never goes quiet long enough to trigger it.

// minReleaseBurst is the smallest burst worth a release: a few handshakes leave too little
// garbage to matter.
const minReleaseBurst = 256

// memRelease counts handshakes and releases memory once a burst of them is over.
type memRelease struct {
	handshakes atomic.Uint64
	last       atomic.Int64 // Unix ns of the latest handshake
}

func (r *memRelease) note() {
	r.handshakes.Add(1)
	r.last.Store(time.Now().UnixNano())
}

// run releases memory after each burst of at least minReleaseBurst handshakes that has
// been quiet for quiet, until ctx ends. quiet 0 turns it off.
func (r *memRelease) run(ctx context.Context, quiet time.Duration, log zerolog.Logger) {
	if quiet <= 0 {
		return
	}
	t := time.NewTicker(max(quiet/4, 100*time.Millisecond))
	defer t.Stop()
	var released uint64 // the handshake count at the last release
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n := r.handshakes.Load()
		if n-released < minReleaseBurst || time.Since(time.Unix(0, r.last.Load())) < quiet {
			continue
		}
		before, start := rssKiB(), time.Now()
		debug.FreeOSMemory()
		log.Debug().Uint64("handshakes", n-released).Int64("rss_kib_before", before).Int64("rss_kib_after", rssKiB()).
			Str("took", time.Since(start).Round(time.Microsecond).String()).Msg("burst of handshakes over: memory returned to the OS")
		released = n
	}
}

// rssKiB is the process's resident set from /proc (-1 where there is none), for the log.
func rssKiB() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err == nil {
				return n
			}
		}
	}
	return -1
}
