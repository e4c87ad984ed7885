package supervisor

import (
	"fmt"
	"io"
	"time"

	"github.com/mqtls/mqtls/handshake"
	"github.com/mqtls/mqtls/internal/config"
	"github.com/mqtls/mqtls/proxy"
)

// loadTenants loads the material of each SNI tenant of sp into m.
func loadTenants(sp config.ListenerSpec, m *material) error {
	for _, t := range sp.SNI.Tenants {
		tm, err := loadMaterial(t.Spec, nil)
		if err != nil {
			return err
		}
		m.tenants = append(m.tenants, tm)
	}
	return nil
}

// sniProxyConfig gives pc the tenants of sp, each with its own policy, upstream and
// handshaker; pc itself (without them) is the default entry unless unknown names are
// refused.
func (v *supervisor) sniProxyConfig(sp config.ListenerSpec, mat *material, pc *proxy.Config) error {
	if len(sp.SNI.Tenants) == 0 {
		return nil
	}
	sni := &proxy.SNI{Tenants: map[string]*proxy.Config{}}
	if !sp.SNI.RefuseUnknown {
		def := *pc
		sni.Default = &def
	}
	for i, t := range sp.SNI.Tenants {
		tpc, err := v.proxyConfig(t.Spec, mat.tenants[i])
		if err != nil {
			return fmt.Errorf("listener %s: %w", sp.Name, err)
		}
		for _, name := range t.ServerNames {
			sni.Tenants[name] = &tpc
		}
	}
	pc.SNI = sni
	return nil
}

// withTenants is m and the materials of its SNI tenants, for reloading and reporting.
func (m *material) withTenants() []*material {
	return append([]*material{m}, m.tenants...)
}

// materials lists the material of every running listener and of its SNI tenants.
func (v *supervisor) materials() []*material {
	var out []*material
	for _, l := range v.all() {
		out = append(out, l.mat.withTenants()...)
	}
	return out
}

// describeExtra is Check's report on what client mode and SNI tenants add to a listener:
// the uplink's credential and files, and each tenant's certificates and PSKs.
func describeExtra(w io.Writer, sp config.ListenerSpec, mat *material, now time.Time, warn time.Duration) []error {
	var problems []error
	if c := mat.client; c != nil {
		id := c.Identity()
		name := id.CommonName
		if id.Kind == handshake.KindPSK {
			name = id.PSKIdentity
		}
		fmt.Fprintf(w, "  %-9s %s as %s %q  files %v\n", "remote", sp.Proxy.Upstream, id.Kind, name, c.Files())
	}
	for i, tm := range mat.tenants {
		t := sp.SNI.Tenants[i]
		fmt.Fprintf(w, "  tenant %s %v -> %s\n", t.Spec.Name, t.ServerNames, t.Spec.Proxy.Upstream)
		if tm.tls != nil {
			for _, f := range tm.tls.Files() {
				problems = append(problems, describeFile(w, f, now, warn)...)
			}
		}
		if tm.psk != nil {
			fmt.Fprintf(w, "  %-9s %s  %d identities\n", "psk", tm.psk.Store().File(), tm.psk.Store().Len())
		}
	}
	return problems
}

// sessionOwner is a listener, or one of its SNI tenants, with the material that
// authenticated its sessions and a way to close those that no longer pass.
type sessionOwner struct {
	mat           *material
	closeMatching func(match func(handshake.Identity) bool) int
}

// sessionOwners lists every listener and SNI tenant: a tenant's sessions are judged by
// the tenant's files, never the listener's.
func (v *supervisor) sessionOwners() []sessionOwner {
	var out []sessionOwner
	for _, l := range v.all() {
		out = append(out, sessionOwner{mat: l.mat, closeMatching: l.srv.CloseMatching})
		for i, tm := range l.mat.tenants {
			name := l.spec.SNI.Tenants[i].Spec.Name
			out = append(out, sessionOwner{mat: tm, closeMatching: func(match func(handshake.Identity) bool) int {
				return l.srv.CloseTenantMatching(name, match)
			}})
		}
	}
	return out
}
