// Command mqtls-bench is the load tool behind BENCHMARKS.md: it measures a TLS front end
// for an MQTT broker (mqtls, or a peer such as stunnel, HAProxy, nginx or Mosquitto's own
// TLS listener) from the device side, over loopback.
//
//	mqtls-bench conns  N sessions at concurrency C: handshake + CONNECT→CONNACK latency,
//	                   sessions per second; --hold keeps them idle and samples the
//	                   target's RSS and PSS
//	mqtls-bench pub    P publishers and S subscribers through the target, QoS 0 or 1;
//	                   checks every subscriber received every message
//	mqtls-bench ping   PINGREQ→PINGRESP round trips over one session
//	mqtls-bench bulk   a stream of large PUBLISH packets, then one PINGREQ as a barrier
//	mqtls-bench sink   an upstream for bulk: answers CONNECT and PINGREQ, discards the rest
//	mqtls-bench dtls-flood  cookieless ClientHellos from spoofed 127.0.0.0/8 addresses at
//	                   a DTLS listener while real DTLS-PSK devices connect: their success
//	                   rate, the target's memory and CPU per hello
//	mqtls-bench report medians of result lines → the markdown of BENCHMARKS.md
//
// Each measurement prints one JSON line on stdout. Given --pid (the target's process, or
// several, summed), it includes the CPU time the target used during the measurement, from
// /proc/<pid>/stat, so CPU per handshake, per message and per gigabyte can be computed.
// Every loop is bounded by a count and by --timeout.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newApp(os.Stdout).RunContext(ctx, os.Args)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "mqtls-bench:", err)
		os.Exit(1)
	}
}

func newApp(stdout io.Writer) *cli.App {
	out := &output{w: stdout}
	return &cli.App{
		Name:  "mqtls-bench",
		Usage: "load and measure a TLS front end for an MQTT broker (loopback only)",
		Commands: []*cli.Command{
			connsCommand(out),
			pubCommand(out),
			pingCommand(out),
			bulkCommand(out),
			sinkCommand(out),
			floodCommand(out),
			reportCommand(),
		},
	}
}

// output writes one JSON object per line; safe for concurrent use.
type output struct {
	mu sync.Mutex
	w  io.Writer
}

func (o *output) emit(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	_, err = o.w.Write(append(b, '\n'))
	return err
}

// header starts every result line.
type header struct {
	Cmd   string `json:"cmd"`
	Label string `json:"label,omitempty"`
	Tag   string `json:"tag,omitempty"`
	Mode  string `json:"mode,omitempty"`
	Addr  string `json:"addr,omitempty"`
	Time  string `json:"time"`
}

func newHeader(c *cli.Context, cmd string) header {
	return header{Cmd: cmd, Label: c.String("label"), Tag: c.String("tag"), Mode: c.String("mode"),
		Addr: c.String("addr"), Time: time.Now().UTC().Format(time.RFC3339)}
}

// clientFlags are shared by every command that connects to a target.
func clientFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "addr", Usage: "target `host:port` (TCP, or UDP for dtls-psk)", Required: true},
		&cli.StringFlag{Name: "mode", Value: modeMTLS, Usage: "plain, tls, mtls, psk or dtls-psk"},
		&cli.StringFlag{Name: "ca", Usage: "PEM `file` of the CA that issued the target's certificate"},
		&cli.StringFlag{Name: "cert", Usage: "client certificate PEM `file` (mtls)"},
		&cli.StringFlag{Name: "key", Usage: "client key PEM `file` (mtls)"},
		&cli.StringFlag{Name: "server-name", Value: "localhost", Usage: "TLS server name to send and verify"},
		&cli.BoolFlag{Name: "insecure", Usage: "do not verify the target's certificate"},
		&cli.StringFlag{Name: "tls-version", Value: "1.3", Usage: "TLS version for tls and mtls: 1.2 or 1.3"},
		&cli.StringFlag{Name: "curve", Value: "x25519", Usage: "the one key exchange group offered: x25519, p256 or x25519mlkem768"},
		&cli.StringFlag{Name: "psk-identity", Usage: "PSK identity (psk, dtls-psk)"},
		&cli.StringFlag{Name: "psk-key", Usage: "PSK key in hex (psk, dtls-psk)"},
		&cli.StringFlag{Name: "psk-suite", Value: "TLS_PSK_WITH_AES_128_GCM_SHA256", Usage: "the one TLS-PSK suite offered; a TLS 1.3 suite (TLS_AES_128_GCM_SHA256, TLS_CHACHA20_POLY1305_SHA256, TLS_AES_128_CCM_SHA256, TLS_AES_128_CCM_8_SHA256) makes it a TLS 1.3 external-PSK handshake (psk_dhe_ke, X25519)"},
		&cli.StringFlag{Name: "dtls-suite", Value: "TLS_PSK_WITH_AES_128_CCM_8", Usage: "the one DTLS-PSK suite offered"},
		&cli.StringFlag{Name: "source-ips", Value: "127.0.0.2-127.0.0.254", Usage: "local addresses to bind, round-robin (`A-B`, one address, or none)"},
		&cli.DurationFlag{Name: "op-timeout", Value: 10 * time.Second, Usage: "bound on one dial, handshake or packet exchange"},
		&cli.DurationFlag{Name: "timeout", Value: time.Minute, Usage: "bound on the whole command"},
		&cli.IntSliceFlag{Name: "pid", Usage: "target process to measure (repeatable: CPU and memory are summed)"},
		&cli.StringFlag{Name: "label", Usage: "copied into the result line (the target's name)"},
		&cli.StringFlag{Name: "tag", Usage: "copied into the result line (the measurement's name)"},
		&cli.StringFlag{Name: "client-id-prefix", Value: "bench", Usage: "client IDs are PREFIX-<run>-<n>"},
	}
}

func dialFrom(c *cli.Context) (*dialConfig, error) {
	return tlsOptions{
		mode: c.String("mode"), addr: c.String("addr"), serverName: c.String("server-name"),
		ca: c.String("ca"), cert: c.String("cert"), key: c.String("key"), insecure: c.Bool("insecure"),
		tlsVersion: c.String("tls-version"), curve: c.String("curve"),
		pskIdentity: c.String("psk-identity"), pskKey: c.String("psk-key"),
		pskSuite: c.String("psk-suite"), dtlsSuite: c.String("dtls-suite"),
		sourceIPs: c.String("source-ips"), opTimeout: c.Duration("op-timeout"),
		resume: c.Bool("resume"),
	}.build()
}

// runID tells this run's client IDs and topics from any other run's.
func runID() string { return fmt.Sprintf("%x", time.Now().UnixNano()&0xffffffffff) }

func withTimeout(c *cli.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(c.Context, c.Duration("timeout"))
}

func perUnit(total float64, n int, scale float64) *float64 {
	if n <= 0 {
		return nil
	}
	v := round(total*scale/float64(n), 2)
	return &v
}
