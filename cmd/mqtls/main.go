// Command mqtls is a reverse TLS proxy for plaintext MQTT brokers: it terminates TLS,
// mutual TLS and TLS-PSK sessions, binds the identity the handshake proved to the MQTT
// client ID and user name, and pipes the session to an unmodified broker.
//
// This package is the command line only: its commands (serve, check, convert, psk, keys,
// version), their flags, and the wiring from them to the packages that do the work:
// internal/config (every setting: flags, config file, validation), internal/supervisor
// (running listeners, reload, drain), internal/admin (metrics and the admin endpoints),
// internal/stunnel (convert stunnel) and internal/pskfile (psk add, psk list). It holds no
// globals but the version stamped at build time.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"syscall"

	"github.com/urfave/cli/v2"
)

// version is stamped by the release build: -ldflags "-X main.version=v1.2.3". A plain
// go build leaves it empty and buildVersion reads the module's build info instead.
var version = ""

// buildVersion is the version to report: the stamp, else the module version (go install
// ...@v1.2.3), else the VCS revision go build recorded (with "-dirty" for uncommitted
// changes), else "dev".
func buildVersion() string {
	if version != "" {
		return version
	}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "dev"
	}
	return versionFrom(info)
}

func versionFrom(info *debug.BuildInfo) string {
	if v := info.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	var rev, modified string
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			modified = s.Value
		}
	}
	if rev == "" {
		return "dev"
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if modified == "true" {
		rev += "-dirty"
	}
	return "dev-" + rev
}

func main() {
	ctx, sig, stop := notify()
	err := newAppWith(os.Stdout, os.Stderr, sig).RunContext(ctx, os.Args)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "mqtls:", err)
		os.Exit(1)
	}
}

// signals are what serve hears from the process's signals besides the first SIGTERM or
// SIGINT, which cancels its context. A nil channel never fires.
type signals struct {
	hup      <-chan struct{} // SIGHUP: reload certificates, CAs, CRLs and PSKs now
	hardStop <-chan struct{} // a second SIGTERM or SIGINT: stop draining, close everything
}

// notify turns the process's signals into a context and signals.
func notify() (context.Context, signals, func()) {
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan os.Signal, 4)
	signal.Notify(ch, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	hup := make(chan struct{}, 1)
	hard := make(chan struct{})
	done := make(chan struct{})
	go func() {
		terms := 0
		for {
			select {
			case s := <-ch:
				if s == syscall.SIGHUP {
					select {
					case hup <- struct{}{}:
					default: // a reload is already pending
					}
					continue
				}
				terms++
				switch terms {
				case 1:
					cancel()
				case 2:
					close(hard)
				}
			case <-done:
				return
			}
		}
	}()
	return ctx, signals{hup: hup, hardStop: hard}, func() {
		signal.Stop(ch)
		close(done)
		cancel()
	}
}

// newApp builds the command line. Logs and command output go to stdout, usage errors to
// stderr; RunContext returns when ctx is cancelled (what SIGINT and SIGTERM do in main).
//
// urfave/cli's own help flag and help command are package globals that every App writes to
// while it parses, so two Apps cannot run at once (the tests run many). Each App therefore
// hides them and carries a --help flag of its own.
func newApp(stdout, stderr io.Writer) *cli.App { return newAppWith(stdout, stderr, signals{}) }

// newAppWith is newApp with the signals serve listens to besides its context.
func newAppWith(stdout, stderr io.Writer, sig signals) *cli.App {
	commands := []*cli.Command{
		serveCommand(stdout, sig),
		checkCommand(stdout),
		convertCommand(stdout, stderr),
		pskCommand(stdout),
		keysCommand(stdout),
		initCommand(stdout),
		{
			Name:  "version",
			Usage: "print the version",
			Action: func(c *cli.Context) error {
				return printVersion(stdout)
			},
		},
		{
			Name:      "help",
			Usage:     "show the commands, or one command's flags",
			ArgsUsage: "[COMMAND]",
			Action: func(c *cli.Context) error {
				if c.Args().Present() {
					return c.App.Run([]string{"mqtls", c.Args().First(), "--help"})
				}
				return cli.ShowAppHelp(c.Lineage()[1])
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
		Flags:                     []cli.Flag{newHelpFlag(), &cli.BoolFlag{Name: "version", Aliases: []string{"v"}, Usage: "print the version"}},
		Commands:                  commands,
		Action: func(c *cli.Context) error {
			if c.Bool("version") {
				return printVersion(stdout)
			}
			if c.Args().Present() {
				return fmt.Errorf("unknown command %q: run mqtls --help", c.Args().First())
			}
			return cli.ShowAppHelp(c)
		},
	}
}

func printVersion(w io.Writer) error {
	_, err := fmt.Fprintf(w, "mqtls %s %s %s/%s\n", buildVersion(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
	return err
}

func newHelpFlag() cli.Flag {
	return &cli.BoolFlag{Name: "help", Aliases: []string{"h"}, Usage: "show help"}
}

// withHelp gives cmd (and its subcommands) a --help flag of its own; see newApp.
func withHelp(cmd *cli.Command) {
	cmd.HideHelp, cmd.HideHelpCommand = true, true
	cmd.OnUsageError = usageError
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
