package handshake

import (
	"net"
	"net/netip"
)

// ListenNetwork returns the network to listen on addr with: base ("tcp" or "udp") with a
// 4 for an IPv4 literal host and a 6 for an IPv6 one, so that 0.0.0.0:8883 listens on
// IPv4 only and [::]:8883 on IPv6 (dual-stack only where the system makes it so), as the
// address says; a host name or no host (:8883, every address) keeps base.
func ListenNetwork(base, addr string) string {
	host, _, err := net.SplitHostPort(addr)
	if err != nil || host == "" {
		return base
	}
	ip, err := netip.ParseAddr(host)
	switch {
	case err != nil:
		return base
	case ip.Is4():
		return base + "4"
	case ip.Is6() && !ip.Is4In6():
		return base + "6"
	}
	return base
}
