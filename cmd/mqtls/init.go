package main

import (
	"errors"
	"io"

	"github.com/urfave/cli/v2"

	"github.com/mqtls/mqtls/internal/devpki"
)

// initCommand writes a development PKI and configuration: mqtls init DIR.
func initCommand(stdout io.Writer) *cli.Command {
	return &cli.Command{
		Name:      "init",
		Usage:     "write a development PKI, PSK and pinned-key files, mqtls.yaml and a Mosquitto conf and ACL into DIR",
		ArgsUsage: "DIR",
		Description: "Makes an ECDSA CA, a server certificate for --san, device certificates (dev-N), PSKs (psk-N), a\n" +
			"pinned-key device (key-1), mqtls.yaml, mosquitto.conf and an ACL using %c, then prints the\n" +
			"mosquitto_pub lines to try. Keys are written 0600. It never overwrites a file.",
		Flags: []cli.Flag{
			&cli.StringSliceFlag{Name: "san", Usage: "DNS name or IP address of the server certificate (repeatable; default localhost, 127.0.0.1, ::1)"},
			&cli.IntFlag{Name: "devices", Value: devpki.DefaultDevices, Usage: "how many device certificates and PSK identities to make"},
			&cli.StringFlag{Name: "listen", Value: devpki.DefaultListen, Usage: "mqtls's `address` in mqtls.yaml"},
			&cli.StringFlag{Name: "upstream", Value: devpki.DefaultUpstream, Usage: "Mosquitto's plaintext listener, `host:port`, in mosquitto.conf and mqtls.yaml"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return errors.New("init takes exactly one argument: the directory to write to (mqtls init DIR)")
			}
			return devpki.Init(stdout, devpki.Options{
				Dir: c.Args().First(), SANs: c.StringSlice("san"), Devices: c.Int("devices"),
				Listen: c.String("listen"), Upstream: c.String("upstream"),
			})
		},
	}
}
