//go:build !linux

package proxy

import (
	"fmt"
	"net"
	"time"
)

// parkedPipe exists on Linux only (park_linux.go); elsewhere every session is piped by two
// goroutines.
type parkedPipe struct{}

func (*parkedPipe) wake() {}

func (c *conn) parkPipe(device, up net.Conn) bool { return false }

// SetBusyPoll is for Linux only: elsewhere sessions are not parked, so there is nothing to
// poll.
func SetBusyPoll(d time.Duration) error {
	if d != 0 {
		return fmt.Errorf("busy poll %v: needs Linux (sessions are parked in epoll there only)", d)
	}
	return nil
}
