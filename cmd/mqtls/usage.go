package main

import (
	"fmt"
	"io"

	"strings"

	"github.com/urfave/cli/v2"

	"github.com/mqtls/mqtls/internal/config"
)

// flagHabits map the flags of ghostunnel and stunnel users' fingers to mqtls's.
var flagHabits = map[string]string{
	"target":        "--upstream",
	"keystore":      "--cert and --key (PEM files; a PKCS#12 keystore converts with openssl pkcs12)",
	"storepass":     "nothing: mqtls reads unencrypted PEM keys (openssl pkey -in KEY -out KEY.plain)",
	"allow-cn":      "--allow (over the identity, --identity '{cn}')",
	"allow-ou":      "--allow with --identity '{ou}'",
	"allow-uri":     "--allow with --identity '{uri}'",
	"allow-dns":     "--allow with --identity '{dns}'",
	"cacert":        "--client-ca",
	"cafile":        "--client-ca",
	"crlfile":       "--crl",
	"accept":        "--listen",
	"connect":       "--upstream",
	"unsafe-target": "--upstream (a broker on loopback or a unix socket needs nothing more)",
	"status":        "--admin-listen",
	"metrics-url":   "--admin-listen (/metrics)",
}

const unknownFlag = "flag provided but not defined: -"

// usageError rewrites urfave/cli's usage errors in mqtls's terms: an unknown flag names
// the nearest one (or the mqtls flag for a ghostunnel or stunnel habit), and a bad
// duration says the format.
func usageError(c *cli.Context, err error, _ bool) error {
	msg := err.Error()
	if name, ok := strings.CutPrefix(msg, unknownFlag); ok {
		name = strings.TrimLeft(name, "-")
		if hint, ok := flagHabits[name]; ok {
			return fmt.Errorf("unknown flag --%s: mqtls calls it %s", name, hint)
		}
		if near := nearest(name, c.Command.Flags); near != "" {
			return fmt.Errorf("unknown flag --%s: did you mean --%s?", name, near)
		}
		return fmt.Errorf("unknown flag --%s: mqtls %s --help lists them", name, c.Command.Name)
	}
	if strings.Contains(msg, "invalid value") && strings.Contains(msg, "parse error") {
		for _, f := range c.Command.Flags {
			if _, ok := f.(*cli.DurationFlag); ok && strings.Contains(msg, "for flag -"+f.Names()[0]+":") {
				value := between(msg, `invalid value "`, `"`)
				return fmt.Errorf("--%s %q: not a duration like 10s, 5m or 720h", f.Names()[0], value)
			}
		}
	}
	return err
}

func between(s, start, end string) string {
	_, rest, _ := strings.Cut(s, start)
	v, _, _ := strings.Cut(rest, end)
	return v
}

// nearest returns the flag name of flags closest to name, if it is close enough to be a
// typo; "" otherwise.
func nearest(name string, flags []cli.Flag) string {
	var names []string
	for _, f := range flags {
		names = append(names, f.Names()...)
	}
	return config.Nearest(name, names)
}

// warnUnknownEnv warns on w about MQTLS_ variables that set nothing: a typo there would
// otherwise be ignored silently.
func warnUnknownEnv(w io.Writer, environ []string) {
	known := map[string]bool{}
	var names []string
	for _, s := range config.Settings {
		known[config.EnvVar(s.Flag)] = true
		names = append(names, config.EnvVar(s.Flag))
	}
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(name, "MQTLS_") || known[name] || strings.HasPrefix(name, "MQTLS_TEST") || strings.HasPrefix(name, "MQTLS_SOAK") {
			continue
		}
		hint := ""
		if near := config.Nearest(name, names); near != "" {
			hint = ": did you mean " + near + "?"
		}
		fmt.Fprintf(w, "mqtls: warning: environment variable %s sets nothing%s\n", name, hint)
	}
}
