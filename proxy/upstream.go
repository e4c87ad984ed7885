package proxy

import (
	"context"
	"fmt"
	"net"
	"strings"
)

// parseUpstream splits "unix:/path" and "host:port" into a network and an address.
func parseUpstream(s string) (network, addr string, err error) {
	if path, ok := strings.CutPrefix(s, "unix:"); ok {
		if path == "" {
			return "", "", fmt.Errorf("upstream %q: unix socket path is empty", s)
		}
		return "unix", path, nil
	}
	if _, _, err := net.SplitHostPort(s); err != nil {
		return "", "", fmt.Errorf("upstream %q: want host:port or unix:/path: %w", s, err)
	}
	return "tcp", s, nil
}

func dialUpstream(ctx context.Context, cfg *Config) (net.Conn, error) {
	network, addr, _ := parseUpstream(cfg.Upstream) // validated in New
	timeout := orDuration(cfg.DialTimeout, DefaultDialTimeout)
	if cfg.Uplink != nil { // the timeout covers the remote's handshake too
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		c, err := cfg.Uplink.Dial(ctx, network, addr)
		if err != nil {
			return nil, fmt.Errorf("connecting to remote broker %s: %w", cfg.Upstream, err)
		}
		return c, nil
	}
	d := net.Dialer{Timeout: timeout}
	c, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, fmt.Errorf("dialing upstream %s: %w", cfg.Upstream, err)
	}
	return c, nil
}

// ValidateUpstream reports whether s is an upstream address Config accepts:
// "host:port" or "unix:/path".
func ValidateUpstream(s string) error {
	_, _, err := parseUpstream(s)
	return err
}
