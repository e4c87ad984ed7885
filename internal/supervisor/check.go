package supervisor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/mqtls/mqtls/handshake"
	"github.com/mqtls/mqtls/internal/config"
	"github.com/mqtls/mqtls/policy"
	"github.com/mqtls/mqtls/proxy"
)

// Check loads what cfg names, every file, without serving, and writes what the files
// hold and when each expires. It reports every problem in one run, each naming the flag
// or key of its file: anything serve would refuse to start with, a certificate that has
// expired or is not valid yet, a CRL past its next update, and what clients will refuse
// (a server certificate without serverAuth or a SAN, a client CA that is not a CA). Files
// others can read and a broker that cannot be reached now are warnings.
func Check(w io.Writer, cfg config.Config, now time.Time) error {
	var problems []error
	mats := map[string]*material{}
	failed := map[string]bool{}
	seen := map[any]bool{}
	dialed := map[string]bool{}
	warn := func(msg string) { fmt.Fprintf(w, "  warning: %s\n", msg) }
	for _, sp := range cfg.Listeners {
		fmt.Fprintf(w, "listener %s: %s %s -> %s\n", sp.Name, sp.Transport, sp.Listen, sp.Proxy.Upstream)
		if _, err := policy.New(sp.Policy); err != nil {
			problems = append(problems, fmt.Errorf("listener %s: %w", sp.Name, err))
		}
		shared := mats[sp.ShareWith]
		if shared == nil && sp.ShareWith != "" && failed[sp.ShareWith] {
			failed[sp.Name] = true // its files were reported with the listener it shares them with
			continue
		}
		load := sp
		if shared == nil {
			problems = append(problems, tlsFileProblems(sp, now, true)...)
			if len(tlsFileProblems(sp, now, false)) > 0 {
				load.TLS = handshake.TLSConfig{} // reported above; the PSK side is still checked
			}
			for _, l := range loosePermissions(sp) {
				warn("listener " + sp.Name + ": " + l.String())
			}
		}
		mat, err := loadMaterial(load, shared)
		if err != nil {
			problems = append(problems, err)
			failed[sp.Name] = true
			continue
		}
		if load.TLS.CertFile == "" && sp.TLS.CertFile != "" {
			failed[sp.Name] = true
		} else {
			mats[sp.Name] = mat
		}
		if mat.tls != nil && !seen[mat.tls] {
			seen[mat.tls] = true
			for _, f := range mat.tls.Files() {
				problems = append(problems, describeFile(w, f, now, cfg.Admin.ExpiryWarning)...)
			}
		}
		if mat.psk != nil && !seen[mat.psk.Store()] {
			seen[mat.psk.Store()] = true
			fmt.Fprintf(w, "  %-9s %s  %d identities\n", "psk", mat.psk.Store().File(), mat.psk.Store().Len())
		}
		problems = append(problems, describeExtra(w, sp, mat, now, cfg.Admin.ExpiryWarning)...) // client mode, SNI tenants
		if !dialed[sp.Proxy.Upstream] {
			dialed[sp.Proxy.Upstream] = true
			if _, err := upstreamProblem(context.Background(), sp, min(orDefault(sp.Proxy.DialTimeout, proxy.DefaultDialTimeout), checkDialTimeout)); err != nil {
				warn(err.Error() + " (it may start later)")
			}
		}
	}
	if len(problems) > 0 {
		return errors.Join(problems...) // one line each
	}
	fmt.Fprintln(w, "ok")
	return nil
}

// checkDialTimeout bounds check's look at the broker: it only says whether it is there.
const checkDialTimeout = 2 * time.Second

// describeFile prints one certificate or CRL and returns what is wrong with it.
func describeFile(w io.Writer, f handshake.FileInfo, now time.Time, warn time.Duration) []error {
	var problems []error
	state := "valid until"
	switch {
	case f.Role == "crl" && f.NotAfter.IsZero():
		state = "no next update"
	case f.Role == "crl" && !now.Before(f.NotAfter):
		state = "STALE since"
		problems = append(problems, fmt.Errorf("CRL %s (issuer %s) is past its next update %s: publish a new one",
			f.File, f.Subject, f.NotAfter.Format(time.RFC3339)))
	case f.Role == "crl":
		state = "next update"
	case !now.Before(f.NotAfter):
		state = "EXPIRED"
		problems = append(problems, fmt.Errorf("%s certificate %q in %s expired %s",
			roleName(f.Role), f.Subject, f.File, f.NotAfter.Format(time.RFC3339)))
	case warn > 0 && f.NotAfter.Sub(now) < warn:
		state = "EXPIRES SOON:"
	}
	when := ""
	if !f.NotAfter.IsZero() {
		when = f.NotAfter.UTC().Format(time.RFC3339)
	}
	extra := ""
	if f.Role == "crl" {
		// A PEM file may hold several CRLs: say which one this is, and when it was issued.
		extra = fmt.Sprintf("  (CRL %d, issued %s)", f.Block, f.ThisUpdate.UTC().Format(time.RFC3339))
	}
	fmt.Fprintf(w, "  %-9s %s  %s  %s %s%s\n", f.Role, f.File, f.Subject, state, when, extra)
	return problems
}

func roleName(role string) string {
	switch role {
	case "client_ca":
		return "client CA"
	default:
		return role
	}
}
