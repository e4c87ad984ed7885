package tlspsk

import (
	"crypto/tls"
	"encoding/hex"
	"io"
	"net"
	"os/exec"
	"testing"
	"time"
)

// captureHello accepts one connection, lets dial connect to it, and returns the first TLS
// record(s) the client sent (up to 64 KiB or the first read pause).
func captureHello(t *testing.T, dial func(addr string)) []byte {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan []byte, 1)
	go func() { // captureFirstRecord
		nc, err := ln.Accept()
		if err != nil {
			got <- nil
			return
		}
		defer nc.Close()
		nc.SetReadDeadline(time.Now().Add(10 * time.Second))
		hdr := make([]byte, 5)
		if _, err := io.ReadFull(nc, hdr); err != nil {
			got <- nil
			return
		}
		body := make([]byte, int(hdr[3])<<8|int(hdr[4]))
		io.ReadFull(nc, body)
		got <- append(hdr, body...)
	}()
	dial(ln.Addr().String())
	select {
	case b := <-got:
		if b == nil {
			t.Fatal("no ClientHello captured")
		}
		return b
	case <-time.After(15 * time.Second):
		t.Fatal("no ClientHello captured in 15 s")
		return nil
	}
}

// dialAndDrop dials addr with a client that sends its hello and gives up quickly.
func dialAndDrop(hs func(net.Conn) error) func(string) {
	return func(addr string) {
		nc, err := net.Dial("tcp", addr)
		if err != nil {
			return
		}
		defer nc.Close()
		nc.SetDeadline(time.Now().Add(2 * time.Second))
		hs(nc)
	}
}

func opensslHello(t *testing.T, args ...string) func(string) {
	openssl := needPeer(t, "openssl")
	return func(addr string) {
		cmd := exec.Command(openssl, append([]string{"s_client", "-connect", addr}, args...)...)
		cmd.Run() // fails once the capture closes; only the hello matters
	}
}

func TestOffersPSK(t *testing.T) {
	key := hex.EncodeToString(testKey)
	tests := []struct {
		name string
		dial func(t *testing.T) func(string)
		want bool
	}{
		{"own client", func(t *testing.T) func(string) {
			return dialAndDrop(func(nc net.Conn) error { return Client(nc, &ClientConfig{Identity: "x", Key: testKey}).Handshake() })
		}, true},
		{"own client CBC with EtM", func(t *testing.T) func(string) {
			return dialAndDrop(func(nc net.Conn) error {
				return Client(nc, &ClientConfig{Identity: "x", Key: testKey, Suites: []uint16{TLS_PSK_WITH_AES_128_CBC_SHA256}, OfferETM: true}).Handshake()
			})
		}, true},
		{"own client CBC without EtM", func(t *testing.T) func(string) {
			return dialAndDrop(func(nc net.Conn) error {
				return Client(nc, &ClientConfig{Identity: "x", Key: testKey, Suites: []uint16{TLS_PSK_WITH_AES_128_CBC_SHA256}}).Handshake()
			})
		}, false},
		{"crypto/tls", func(t *testing.T) func(string) {
			return dialAndDrop(func(nc net.Conn) error { return tls.Client(nc, &tls.Config{ServerName: "x"}).Handshake() })
		}, false},
		{"openssl -psk (TLS 1.3 and 1.2)", func(t *testing.T) func(string) {
			return opensslHello(t, "-psk", key, "-psk_identity", "x")
		}, true},
		{"openssl -tls1_3 -psk (external PSK only)", func(t *testing.T) func(string) {
			return opensslHello(t, "-tls1_3", "-psk", key, "-psk_identity", "x")
		}, true},
		{"own client TLS 1.3", func(t *testing.T) func(string) {
			return dialAndDrop(func(nc net.Conn) error {
				return Client(nc, &ClientConfig{Identity: "x", Key: testKey, Versions: []uint16{VersionTLS13}}).Handshake()
			})
		}, true},
		{"openssl certificates only", func(t *testing.T) func(string) { return opensslHello(t) }, false},
		{"openssl CBC PSK with EtM", func(t *testing.T) func(string) {
			return opensslHello(t, "-tls1_2", "-psk", key, "-cipher", "PSK-AES128-CBC-SHA256")
		}, true},
		{"openssl CBC PSK without EtM", func(t *testing.T) func(string) {
			return opensslHello(t, "-tls1_2", "-psk", key, "-cipher", "PSK-AES128-CBC-SHA256", "-no_etm")
		}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hello := captureHello(t, tt.dial(t))
			if got := OffersPSK(hello); got != tt.want {
				t.Errorf("OffersPSK = %v, want %v for %x", got, tt.want, hello)
			}
			// Cut short anywhere, it must not panic, and never say yes when the full
			// hello says no.
			for i := range hello {
				if OffersPSK(hello[:i]) && !tt.want {
					t.Fatalf("OffersPSK(first %d bytes) = true, full hello false", i)
				}
			}
		})
	}
}

func TestOffersPSKSplitRecords(t *testing.T) {
	msg := marshalClientHello(baseHello())
	var recs []byte
	for i := 0; i < len(msg); i += 20 {
		recs = append(recs, record(22, 0x0301, msg[i:min(i+20, len(msg))])...)
	}
	if !OffersPSK(recs) {
		t.Error("a ClientHello split over records was not recognized")
	}
	for _, junk := range [][]byte{nil, {22}, {22, 3, 1, 0, 0}, {22, 3, 1, 0xff, 0xff, 1}, []byte("GET / HTTP/1.1\r\n")} {
		if OffersPSK(junk) {
			t.Errorf("OffersPSK(%x) = true", junk)
		}
	}
}
