package main

import (
	"bytes"
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
				out, notes, keyFiles, err := stunnel.ConvertFiles(file, data, os.ReadFile)
				for _, n := range notes {
					fmt.Fprintln(stderr, n)
				}
				if err != nil {
					return err
				}
				for _, kf := range keyFiles {
					if err := writeNew(kf.Path, kf.Data); err != nil {
						return err
					}
					fmt.Fprintf(stderr, "wrote the pinned keys tls.client_keys names to %s\n", kf.Path)
				}
				_, err = stdout.Write(out)
				return err
			},
		}},
	}
}

// writeNew writes a file the converted config names (mode 0600). An existing file is left
// alone: the same contents are fine (convert run again), others are an error.
func writeNew(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) {
		if old, rerr := os.ReadFile(path); rerr == nil && bytes.Equal(old, data) {
			return nil
		}
		return fmt.Errorf("%s exists with other contents: not overwriting it; remove it, or move it away, and convert again", path)
	}
	if err != nil {
		return fmt.Errorf("writing pinned keys: %w", err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("writing pinned keys %s: %w", path, err)
	}
	return f.Close()
}
