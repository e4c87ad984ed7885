package main

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/urfave/cli/v2"

	"github.com/mqtls/mqtls/internal/stunnel"
)

// convertCommand translates another program's configuration into an mqtls config file.
// Today that is stunnel's: gateways that ran stunnel in front of Mosquitto move to mqtls
// with one command, and every option that has no mqtls equivalent is listed with the
// reason and what to do instead.
func convertCommand(stdout, stderr io.Writer) *cli.Command {
	return &cli.Command{
		Name:  "convert",
		Usage: "translate another program's configuration into an mqtls config file",
		Subcommands: []*cli.Command{{
			Name:      "stunnel",
			Usage:     "print the mqtls config file equivalent to a stunnel.conf; options not translated are listed on stderr",
			ArgsUsage: "FILE (- for stdin)",
			Action: func(c *cli.Context) error {
				if c.NArg() != 1 {
					return errors.New("convert stunnel takes one argument: the stunnel.conf file (- for stdin)")
				}
				file := c.Args().First()
				var data []byte
				var err error
				if file == "-" {
					file = "stdin"
					data, err = io.ReadAll(c.App.Reader)
				} else {
					data, err = os.ReadFile(file)
				}
				if err != nil {
					return fmt.Errorf("reading stunnel config: %w", err)
				}
				out, notes, err := stunnel.Convert(file, data)
				for _, n := range notes {
					fmt.Fprintln(stderr, n)
				}
				if err != nil {
					return err
				}
				_, err = stdout.Write(out)
				return err
			},
		}},
	}
}
