package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/mqtls/mqtls/handshake"
)

// SNI serves several tenants on one listener, each with its own handshake material,
// policy and upstream, chosen by the server name of the connection's ClientHello.
type SNI struct {
	// Tenants maps a lower-case server name to the tenant's configuration. Its Name labels
	// the tenant's logs and metrics; its Handshaker must be a HelloHandshaker; its limits
	// and timeouts other than the handshake's apply to its sessions (the listener's own
	// MaxConnections, MaxHandshakes and per-address rate apply at accept, before the
	// name is known).
	Tenants map[string]*Config
	// Default serves a name no tenant has, and a ClientHello without one; nil refuses
	// them with a fatal unrecognized_name alert.
	Default *Config
}

// HelloHandshaker is a handshaker that can take over after the ClientHello was read
// (handshake.TLSServer, PSKServer and Mixed are).
type HelloHandshaker interface {
	HandshakeHello(ctx context.Context, c net.Conn, hello []byte) (net.Conn, handshake.Identity, error)
}

func (s *SNI) validate() error {
	for name, t := range s.Tenants {
		if err := t.Validate(); err != nil {
			return fmt.Errorf("proxy: tenant %s: %w", name, err)
		}
		if _, ok := t.Handshaker.(HelloHandshaker); !ok {
			return fmt.Errorf("proxy: tenant %s: handshaker %T cannot take over after the ClientHello", name, t.Handshaker)
		}
		if t.SNI != nil || t.Uplink != nil || t.Datagram {
			return fmt.Errorf("proxy: tenant %s: a tenant is a TLS listener's entry; it has no tenants, uplink or datagrams of its own", name)
		}
	}
	if d := s.Default; d != nil {
		if _, ok := d.Handshaker.(HelloHandshaker); !ok {
			return fmt.Errorf("proxy: default tenant: handshaker %T cannot take over after the ClientHello", d.Handshaker)
		}
	}
	return nil
}

// route reads the ClientHello under the handshake deadline and makes the tenant its server
// name chooses the connection's configuration; an unknown name without a default is
// refused with unrecognized_name.
func (c *conn) route() bool {
	sni := c.cfg.SNI
	_ = c.device.SetDeadline(c.start.Add(orDuration(c.cfg.HandshakeTimeout, DefaultHandshakeTimeout)))
	hello, name, err := handshake.ReadClientHello(c.device)
	if err != nil {
		c.outcome, c.reason, c.err = OutcomeHandshakeFailed, handshake.Reason(err), err
		c.handshakeHook("", time.Since(c.start))
		return false
	}
	t, ok := sni.Tenants[name]
	if !ok {
		t = sni.Default
	}
	if t == nil {
		handshake.RefuseUnrecognizedName(c.device)
		c.outcome, c.reason = OutcomeHandshakeFailed, handshake.ReasonUnrecognizedName
		c.err = fmt.Errorf("no tenant serves the server name %q", name)
		if name == "" {
			c.err = errors.New("the ClientHello names no server, and this listener has no default tenant")
		}
		c.handshakeHook("", time.Since(c.start))
		return false
	}
	c.mu.Lock() // CloseTenantMatching reads it
	c.cfg, c.hello = t, hello
	if ok { // the default entry is the listener's own: its sessions have no tenant
		c.tenant = t.name()
	}
	c.mu.Unlock()
	return true
}

// handshakeHook tells the metrics a handshake ended (kind "" for a failure).
func (c *conn) handshakeHook(kind string, took time.Duration) {
	if h := c.cfg.Hooks.Handshake; h != nil {
		h(c.cfg.name(), kind, c.reason, took)
	}
}

// CloseTenantMatching is CloseMatching for the sessions SNI routed to the tenant whose
// Config is named tenant; CloseMatching itself covers only the listener's own sessions.
func (s *Server) CloseTenantMatching(tenant string, match func(handshake.Identity) bool) int {
	if tenant == "" {
		return 0
	}
	return s.closeMatching(tenant, match)
}

// tenantOf returns the tenant route chose. The caller holds the server's lock; c.mu
// orders it with the serving goroutine, which sets it before the handshake.
func (c *conn) tenantOf() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.tenant
}
