// Command mqtls is a reverse TLS proxy for plaintext MQTT brokers: it terminates TLS,
// mutual TLS and TLS-PSK sessions, binds the identity the handshake proved to the MQTT
// client ID and user name, and pipes the session to an unmodified broker.
//
// This package turns flags and environment variables into the plain config structs of
// handshake, policy and proxy, validates them, and runs. It holds no globals but the
// version stamped at build time.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"syscall"

	"github.com/urfave/cli/v2"
)

// version is stamped by the release build: -ldflags "-X main.version=v1.2.3".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := newApp(os.Stdout, os.Stderr).RunContext(ctx, os.Args)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "mqtls:", err)
		os.Exit(1)
	}
}

// newApp builds the command line. Logs and command output go to stdout, usage errors to
// stderr; RunContext returns when ctx is cancelled (what SIGINT and SIGTERM do in main).
//
// urfave/cli's own help flag and help command are package globals that every App writes to
// while it parses, so two Apps cannot run at once (the tests run many). Each App therefore
// hides them and carries a --help flag of its own.
func newApp(stdout, stderr io.Writer) *cli.App {
	commands := []*cli.Command{
		serveCommand(stdout),
		pskCommand(stdout),
		{
			Name:  "version",
			Usage: "print the version",
			Action: func(c *cli.Context) error {
				_, err := fmt.Fprintf(stdout, "mqtls %s %s %s/%s\n", version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
				return err
			},
		},
	}
	for _, cmd := range commands {
		withHelp(cmd)
	}
	return &cli.App{
		Name:                      "mqtls",
		Usage:                     "TLS, mutual TLS and TLS-PSK front end for plaintext MQTT brokers",
		Writer:                    stdout,
		ErrWriter:                 stderr,
		HideVersion:               true,
		HideHelp:                  true,
		HideHelpCommand:           true,
		DisableSliceFlagSeparator: true, // --allow 'a{1,3}' is one expression, not two
		Flags:                     []cli.Flag{newHelpFlag()},
		Commands:                  commands,
		Action: func(c *cli.Context) error {
			if c.Args().Present() {
				return fmt.Errorf("unknown command %q: run mqtls --help", c.Args().First())
			}
			return cli.ShowAppHelp(c)
		},
	}
}

func newHelpFlag() cli.Flag {
	return &cli.BoolFlag{Name: "help", Aliases: []string{"h"}, Usage: "show help"}
}

// withHelp gives cmd (and its subcommands) a --help flag of its own; see newApp.
func withHelp(cmd *cli.Command) {
	cmd.HideHelp, cmd.HideHelpCommand = true, true
	cmd.Flags = append(cmd.Flags, newHelpFlag())
	action := cmd.Action
	cmd.Action = func(c *cli.Context) error {
		if c.Bool("help") || action == nil {
			return cli.ShowSubcommandHelp(c)
		}
		return action(c)
	}
	for _, sub := range cmd.Subcommands {
		withHelp(sub)
	}
}
