package proxy

import (
	"net"
	"net/netip"
	"sync"
	"time"
)

// ipLimiter is a token bucket per source address: rate new connections per second,
// bursts of up to burst. It forgets addresses whose bucket has refilled, so a scan from
// many addresses costs memory only while they are active.
type ipLimiter struct {
	rate  float64
	burst float64

	mu      sync.Mutex
	buckets map[netip.Addr]*bucket
	swept   time.Time
}

type bucket struct {
	tokens float64
	last   time.Time
}

func newIPLimiter(rate float64, burst int) *ipLimiter {
	if burst < 1 {
		burst = 1
	}
	return &ipLimiter{rate: rate, burst: float64(burst), buckets: map[netip.Addr]*bucket{}}
}

// allow takes a token for addr's host, reporting false when its bucket is empty.
func (l *ipLimiter) allow(addr net.Addr, now time.Time) bool {
	ip, ok := hostOf(addr)
	if !ok {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.swept) > time.Minute {
		l.sweep(now)
	}
	b := l.buckets[ip]
	if b == nil {
		b = &bucket{tokens: l.burst, last: now}
		l.buckets[ip] = b
	}
	b.tokens = min(l.burst, b.tokens+now.Sub(b.last).Seconds()*l.rate)
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// sweep drops buckets that would be full by now: they hold no information.
func (l *ipLimiter) sweep(now time.Time) {
	l.swept = now
	for ip, b := range l.buckets {
		if b.tokens+now.Sub(b.last).Seconds()*l.rate >= l.burst {
			delete(l.buckets, ip)
		}
	}
}

// hasIP reports whether addr names an IP host.
func hasIP(addr net.Addr) bool {
	_, ok := hostOf(addr)
	return ok
}

func hostOf(addr net.Addr) (netip.Addr, bool) {
	switch a := addr.(type) {
	case *net.TCPAddr:
		ip, ok := netip.AddrFromSlice(a.IP)
		return ip.Unmap(), ok
	case *net.UDPAddr:
		ip, ok := netip.AddrFromSlice(a.IP)
		return ip.Unmap(), ok
	}
	ap, err := netip.ParseAddrPort(addr.String())
	if err != nil {
		return netip.Addr{}, false
	}
	return ap.Addr().Unmap(), true
}

// identityCounter counts forwarded sessions per identity.
type identityCounter struct {
	mu sync.Mutex
	n  map[string]int
}

// acquire takes a slot for id unless it already holds max.
func (c *identityCounter) acquire(id string, max int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n = map[string]int{}
	}
	if c.n[id] >= max {
		return false
	}
	c.n[id]++
	return true
}

func (c *identityCounter) release(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n[id] <= 1 {
		delete(c.n, id)
		return
	}
	c.n[id]--
}
