package proxy_test

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/mqtls/mqtls/policy"
	"github.com/mqtls/mqtls/proxy"
)

// quietLog keeps the audit line's cost in the benchmarks without keeping its output.
func quietLog(c *proxy.Config) { c.Logger = zerolog.New(io.Discard) }

// BenchmarkPipeTLS measures throughput through one session over loopback: a crypto/tls
// device writes chunks that an echoing broker sends back through mqtls. SetBytes counts
// one direction; every byte crosses mqtls twice (device → broker → device).
func BenchmarkPipeTLS(b *testing.B) {
	for _, size := range []int{1 << 10, 16 << 10} {
		b.Run(fmt.Sprintf("%dKiB", size>>10), func(b *testing.B) {
			br := startBroker(b, "tcp", "", ackThenEcho)
			p := startProxy(b, br.upstream(), policy.Config{}, quietLog)
			dev := dialDevice(b, p.addr, deviceConfig())
			mustWrite(b, dev, connectPacket(4, deviceCN))
			if got := mustReadPacket(b, dev); !bytes.Equal(got, connackAccepted) {
				b.Fatalf("CONNACK % x", got)
			}
			_ = dev.SetDeadline(time.Time{})

			out, in := make([]byte, size), make([]byte, size)
			for i := range out {
				out[i] = byte(i)
			}
			b.SetBytes(int64(size))
			b.ReportAllocs()
			b.ResetTimer()
			written := make(chan error, 1)
			go func() {
				for range b.N {
					if _, err := dev.Write(out); err != nil {
						written <- err
						return
					}
				}
				written <- nil
			}()
			for range b.N {
				if _, err := io.ReadFull(dev, in); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			if err := <-written; err != nil {
				b.Fatal(err)
			}
			if !bytes.Equal(in, out) {
				b.Fatal("the echo differs from what was sent")
			}
		})
	}
}

// BenchmarkConnect measures whole connections over loopback, one after another: the mutual
// TLS handshake, CONNECT, the policy, the upstream dial, the broker's CONNACK back to the
// device, and the close. Both ends of the handshake run in this process.
func BenchmarkConnect(b *testing.B) {
	for _, tc := range []struct {
		name    string
		version uint16
		mode    policy.ClientIDMode
	}{
		{name: "tls1.3", version: tls.VersionTLS13},
		{name: "tls1.3-rewrite", version: tls.VersionTLS13, mode: policy.ClientIDRewrite},
		{name: "tls1.2", version: tls.VersionTLS12},
	} {
		b.Run(tc.name, func(b *testing.B) {
			br := startBroker(b, "tcp", "", ackThenEcho)
			p := startProxy(b, br.upstream(), policy.Config{ClientID: tc.mode}, quietLog)
			cfg := deviceConfig()
			cfg.MinVersion, cfg.MaxVersion = tc.version, tc.version
			connect := connectPacket(4, "sensor-7")
			b.ReportAllocs()
			for b.Loop() {
				dev, err := dial(p.addr, cfg)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := dev.Write(connect); err != nil {
					b.Fatal(err)
				}
				got, err := readPacket(dev)
				dev.Close()
				if err != nil || !bytes.Equal(got, connackAccepted) {
					b.Fatalf("CONNACK % x, %v", got, err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "conns/s")
		})
	}
}
