package supervisor

import (
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/mqtls/mqtls/handshake"
	"github.com/mqtls/mqtls/internal/config"
	"github.com/mqtls/mqtls/policy"
)

// Check loads what cfg names, every file, without serving, and writes what the files
// hold and when each expires: a certificate that has expired or a CRL past its next
// update is an error, as anything serve would refuse to start with.
func Check(w io.Writer, cfg config.Config, now time.Time) error {
	var problems []error
	mats := map[string]*material{}
	seen := map[any]bool{}
	for _, sp := range cfg.Listeners {
		mat, err := loadMaterial(sp, mats[sp.ShareWith])
		if err != nil {
			return err
		}
		mats[sp.Name] = mat
		if _, err := policy.New(sp.Policy); err != nil {
			return fmt.Errorf("listener %s: %w", sp.Name, err)
		}
		fmt.Fprintf(w, "listener %s: %s %s -> %s\n", sp.Name, sp.Transport, sp.Listen, sp.Proxy.Upstream)
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
	}
	if len(problems) > 0 {
		return errors.Join(problems...)
	}
	fmt.Fprintln(w, "ok")
	return nil
}

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
	fmt.Fprintf(w, "  %-9s %s  %s  %s %s\n", f.Role, f.File, f.Subject, state, when)
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
