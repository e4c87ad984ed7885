package main

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/urfave/cli/v2"

	"github.com/mqtls/mqtls/handshake"
	"github.com/mqtls/mqtls/internal/config"
)

// keysCommand manages a pinned-key file: keys add and keys list, as psk does a PSK file.
func keysCommand(stdout io.Writer) *cli.Command {
	fileFlag := &cli.StringFlag{Name: "file", Usage: "the pinned-key `file` (what serve's --client-keys names)", Required: true, EnvVars: []string{config.EnvVar("client-keys")}}
	return &cli.Command{
		Name:  "keys",
		Usage: "manage the pinned public keys of devices trusted without a CA",
		Subcommands: []*cli.Command{
			{
				Name:      "add",
				Usage:     "pin the public key of a device's certificate (or of a PEM public key) under a name; the file is created 0600",
				ArgsUsage: "NAME CERT_OR_PUBKEY.pem",
				Flags:     []cli.Flag{fileFlag},
				Action: func(c *cli.Context) error {
					if c.NArg() != 2 {
						return errors.New("keys add takes exactly two arguments: the device's name and its certificate or public key (PEM)")
					}
					name, pemFile := c.Args().Get(0), c.Args().Get(1)
					data, err := os.ReadFile(pemFile)
					if err != nil {
						return fmt.Errorf("reading the device's certificate or key: %w", err)
					}
					hash, err := handshake.SPKIHash(data)
					if err != nil {
						return fmt.Errorf("%s: %w", pemFile, err)
					}
					if err := handshake.AddKey(c.String("file"), name, hash); err != nil {
						return err
					}
					_, err = fmt.Fprintf(stdout, "added %s to %s (sha256 of its public key %s)\n", name, c.String("file"), hash)
					return err
				},
			},
			{
				Name:  "list",
				Usage: "print the names and key hashes in the file, one per line",
				Flags: []cli.Flag{fileFlag},
				Action: func(c *cli.Context) error {
					store, err := handshake.LoadKeyFile(c.String("file"))
					if err != nil {
						return err
					}
					for _, k := range store.Keys() {
						if _, err := fmt.Fprintf(stdout, "%s %s\n", k.Name, k.Hash); err != nil {
							return err
						}
					}
					return nil
				},
			},
		},
	}
}
