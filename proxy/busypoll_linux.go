//go:build linux

package proxy

import (
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Busy polling. When every goroutine is waiting, the Go scheduler blocks a thread in
// epoll_wait and the CPU goes idle; the next packet must wake it, which costs tens of µs
// per direction, more in a virtual machine, and a proxied round trip has four such wake-
// ups. While sessions are in conversation, a spinner goroutine keeps the scheduler from
// ever blocking: it yields through the runtime's own poller (an eventfd it signals itself),
// so each pass of the scheduler polls the network without waiting and runs whatever became
// ready. Nothing is starved: runnable goroutines run before the spinner's next pass. The
// price is a CPU kept busy until the sessions have been quiet for the busy-poll duration.

// spinner is the process's busy poller.
type spinner struct {
	d       time.Duration
	last    atomic.Int64 // Unix ns of the latest bytes read by a parked session's flow
	running atomic.Bool
	raw     syscall.RawConn // of the eventfd
	passes  atomic.Uint64   // yields through the poller, for tests
}

var (
	busyMu sync.Mutex
	busy   atomic.Pointer[spinner] // nil: off
)

// SetBusyPoll turns busy polling on for d after the last bytes any session read (0 turns
// it off, the default). It trades up to a CPU, while sessions are in conversation, for
// lower latency per round trip. Sessions parked on Linux use it (TLS and TLS-PSK over
// TCP); DTLS sessions do not.
func SetBusyPoll(d time.Duration) error {
	if d < 0 {
		return fmt.Errorf("busy poll %v: must not be negative (0 turns it off)", d)
	}
	busyMu.Lock()
	defer busyMu.Unlock()
	if d == 0 {
		busy.Store(nil)
		return nil
	}
	if s := busy.Load(); s != nil && s.d == d {
		return nil
	}
	raw, err := busyEventfd()
	if err != nil {
		return fmt.Errorf("busy poll: %w", err)
	}
	// A spinner still running for an earlier setting sees it replaced and ends by itself.
	busy.Store(&spinner{d: d, raw: raw})
	return nil
}

// busyEventfd is the eventfd every spinner yields through. It stays open for the life of
// the process, as the epoll set does.
var busyEventfd = sync.OnceValues(func() (syscall.RawConn, error) {
	fd, _, errno := syscall.Syscall(syscall.SYS_EVENTFD2, 0, syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
	if errno != 0 {
		return nil, os.NewSyscallError("eventfd2", errno)
	}
	f := os.NewFile(fd, "mqtls-busy-poll")
	raw, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, err
	}
	return raw, nil
})

// busyKick notes that a session read bytes, and starts the spinner if it is not running.
func busyKick() {
	s := busy.Load()
	if s == nil {
		return
	}
	s.last.Store(time.Now().UnixNano())
	if !s.running.Load() && s.running.CompareAndSwap(false, true) {
		go s.spin()
	}
}

func (s *spinner) quiet() bool {
	return busy.Load() != s || time.Now().UnixNano()-s.last.Load() >= int64(s.d)
}

// spin yields through the poller until sessions have been quiet for s.d.
func (s *spinner) spin() {
	one := [8]byte{1}
	armed := false
	yield := func(fd uintptr) bool {
		if armed {
			armed = false
			return true
		}
		// Each write is a new edge for the runtime's edge-triggered poller (the counter
		// is never read; it would take centuries to fill).
		_, _ = syscall.Write(int(fd), one[:])
		armed = true
		return false
	}
	for {
		for !s.quiet() {
			if s.raw.Read(yield) != nil {
				s.running.Store(false)
				return
			}
			s.passes.Add(1)
		}
		s.running.Store(false)
		// A kick between the last look and the store above saw the spinner running.
		if s.quiet() || !s.running.CompareAndSwap(false, true) {
			return
		}
	}
}
