package main

import (
	"errors"
	"fmt"
	"io"

	"github.com/urfave/cli/v2"

	"github.com/mqtls/mqtls/internal/config"
	"github.com/mqtls/mqtls/internal/pskfile"
)

// pskCommand manages a PSK file: psk add, remove, rotate and list.
func pskCommand(stdout io.Writer) *cli.Command {
	fileFlag := &cli.StringFlag{Name: "file", Usage: "the PSK `file` (what serve's --psk-file names)", Required: true, EnvVars: []string{config.EnvVar("psk-file")}}
	formatFlag := &cli.StringFlag{Name: "psk-format", Value: "mosquitto", Usage: "syntax of the file: mosquitto or stunnel", EnvVars: []string{config.EnvVar("psk-format")}}
	return &cli.Command{
		Name:  "psk",
		Usage: "manage the pre-shared keys of TLS-PSK devices",
		Subcommands: []*cli.Command{
			{
				Name:      "add",
				Usage:     "make a random 32-byte key for a device and append it to the file (created 0600)",
				ArgsUsage: "IDENTITY",
				Flags:     []cli.Flag{fileFlag, formatFlag},
				Action: func(c *cli.Context) error {
					if c.NArg() != 1 {
						return errors.New("psk add takes exactly one argument: the device's identity")
					}
					return pskfile.Add(stdout, c.String("file"), c.String("psk-format"), c.Args().First())
				},
			},
			{
				Name:      "remove",
				Usage:     "remove a device's key from the file (its sessions end on the next reload with --revoke-terminates)",
				ArgsUsage: "IDENTITY",
				Flags:     []cli.Flag{fileFlag, formatFlag},
				Action: func(c *cli.Context) error {
					if c.NArg() != 1 {
						return errors.New("psk remove takes exactly one argument: the device's identity")
					}
					return pskfile.Remove(stdout, c.String("file"), c.String("psk-format"), c.Args().First())
				},
			},
			{
				Name:      "rotate",
				Usage:     "give a device a new random 32-byte key, printed once",
				ArgsUsage: "IDENTITY",
				Flags:     []cli.Flag{fileFlag, formatFlag},
				Action: func(c *cli.Context) error {
					if c.NArg() != 1 {
						return errors.New("psk rotate takes exactly one argument: the device's identity")
					}
					return pskfile.Rotate(stdout, c.String("file"), c.String("psk-format"), c.Args().First())
				},
			},
			{
				Name:  "list",
				Usage: "print the identities in the file, one per line (never the keys)",
				Flags: []cli.Flag{fileFlag, formatFlag},
				Action: func(c *cli.Context) error {
					store, err := pskfile.Load(c.String("file"), c.String("psk-format"))
					if err != nil {
						return err
					}
					for _, id := range store.Identities() {
						if _, err := fmt.Fprintln(stdout, id); err != nil {
							return err
						}
					}
					return nil
				},
			},
		},
	}
}
