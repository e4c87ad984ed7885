package main

import (
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/mqtls/mqtls/policy"
)

// checkCommand validates what serve would be given, and every file it names, without
// serving: the exit status says whether serve would start, and the output lists what the
// files hold and when each expires.
func checkCommand(stdout io.Writer) *cli.Command {
	return &cli.Command{
		Name:  "check",
		Usage: "validate serve's flags and the files they name, print each certificate's and CRL's validity, and exit",
		Flags: serveFlags(),
		Action: func(c *cli.Context) error {
			cfg, err := serveConfigFrom(c)
			if err != nil {
				return err
			}
			return check(stdout, cfg, time.Now())
		},
	}
}

func check(w io.Writer, cfg serveConfig, now time.Time) error {
	hs, err := newHandshaker(cfg)
	if err != nil {
		return err
	}
	if _, err := policy.New(cfg.policy); err != nil {
		return err
	}
	var problems []error
	if hs.tls != nil {
		for _, f := range hs.tls.Files() {
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
			case cfg.admin.expiryWarning > 0 && f.NotAfter.Sub(now) < cfg.admin.expiryWarning:
				state = "EXPIRES SOON:"
			}
			when := ""
			if !f.NotAfter.IsZero() {
				when = f.NotAfter.UTC().Format(time.RFC3339)
			}
			fmt.Fprintf(w, "%-9s %s  %s  %s %s\n", f.Role, f.File, f.Subject, state, when)
		}
	}
	if hs.psk != nil {
		fmt.Fprintf(w, "%-9s %s  %d identities\n", "psk", hs.psk.Store().File(), hs.psk.Store().Len())
	}
	if len(problems) > 0 {
		return errors.Join(problems...)
	}
	fmt.Fprintln(w, "ok")
	return nil
}

func roleName(role string) string {
	switch role {
	case "client_ca":
		return "client CA"
	default:
		return role
	}
}
