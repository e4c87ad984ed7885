//go:build linux

package proxy

// BusyPollState reports whether the busy poller's spinner runs, and how many passes it
// has made through the runtime's poller since busy polling was turned on.
func BusyPollState() (running bool, passes uint64) {
	s := busy.Load()
	if s == nil {
		return false, 0
	}
	return s.running.Load(), s.passes.Load()
}
