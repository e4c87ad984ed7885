package main

import (
	"io"
	"os"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/mqtls/mqtls/internal/config"
	"github.com/mqtls/mqtls/internal/supervisor"
)

// serveFlags are serve's (and check's) flags, one per entry of config.Settings.
func serveFlags() []cli.Flag {
	var flags []cli.Flag
	for _, s := range config.Settings {
		env := []string{config.EnvVar(s.Flag)}
		switch d := s.Default.(type) {
		case string:
			flags = append(flags, &cli.StringFlag{Name: s.Flag, Value: d, Usage: s.Usage, EnvVars: env})
		case []string:
			flags = append(flags, &cli.StringSliceFlag{Name: s.Flag, Usage: s.Usage, EnvVars: env})
		case int:
			flags = append(flags, &cli.IntFlag{Name: s.Flag, Value: d, Usage: s.Usage, EnvVars: env})
		case float64:
			flags = append(flags, &cli.Float64Flag{Name: s.Flag, Value: d, Usage: s.Usage, EnvVars: env})
		case bool:
			flags = append(flags, &cli.BoolFlag{Name: s.Flag, Value: d, Usage: s.Usage, EnvVars: env})
		case time.Duration:
			flags = append(flags, &cli.DurationFlag{Name: s.Flag, Value: d, Usage: s.Usage, EnvVars: env})
		default:
			panic("serve flag --" + s.Flag + ": no cli flag for its type")
		}
	}
	return flags
}

func serveCommand(stdout io.Writer, sig signals) *cli.Command {
	return &cli.Command{
		Name:  "serve",
		Usage: "accept TLS sessions and proxy them to the broker",
		Description: "Every flag can also be set with an environment variable: --client-id is MQTLS_CLIENT_ID.\n" +
			"A list flag (--crl, --allow, --deny) set from the environment takes one value.",
		Flags: serveFlags(),
		Action: func(c *cli.Context) error {
			cfg, err := configFromFlags(c)
			if err != nil {
				return err
			}
			return supervisor.Serve(c.Context, cfg, supervisor.Options{
				Stdout: stdout, Hup: sig.hup, HardStop: sig.hardStop, Version: buildVersion(),
			})
		},
	}
}

// checkCommand validates what serve would be given, and every file it names, without
// serving: the exit status says whether serve would start, and the output lists what the
// files hold and when each expires.
func checkCommand(stdout io.Writer) *cli.Command {
	return &cli.Command{
		Name:  "check",
		Usage: "validate serve's flags and the files they name, print each certificate's and CRL's validity, and exit",
		Flags: serveFlags(),
		Action: func(c *cli.Context) error {
			cfg, err := configFromFlags(c)
			if err != nil {
				return err
			}
			return supervisor.Check(stdout, cfg, time.Now())
		},
	}
}

// configFromFlags is what serve and check both start from: the flags (and MQTLS_*
// variables, an unknown one warned about) as a validated config.
func configFromFlags(c *cli.Context) (config.Config, error) {
	warnUnknownEnv(c.App.ErrWriter, os.Environ())
	return config.FromFlags(c)
}
