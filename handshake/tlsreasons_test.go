package handshake

import (
	"crypto/tls"
	"io"
	"net"
	"testing"
	"time"
)

// serveOne accepts one connection on a fresh listener and hands it to the server's
// handshake; it returns the device's raw socket and the server's result.
func serveOne(t *testing.T, s *testServers) (net.Conn, <-chan hsResult) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	out := make(chan hsResult, 1)
	go func() {
		raw, err := ln.Accept()
		if err != nil {
			out <- hsResult{err: err}
			return
		}
		_ = raw.SetDeadline(time.Now().Add(10 * time.Second))
		c, _, err := s.tls.Handshake(handshakeCtx(t), raw)
		if err != nil {
			raw.Close()
		}
		out <- hsResult{c, err}
	}()
	raw, err := net.DialTimeout("tcp", ln.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() })
	_ = raw.SetDeadline(time.Now().Add(10 * time.Second))
	return raw, out
}

type hsResult struct {
	c   net.Conn
	err error
}

// TestCertListenerReasons: certificate listeners name a refused hello the way TLS-PSK
// listeners do, and only a first record that is not TLS at all is not_tls.
func TestCertListenerReasons(t *testing.T) {
	s := newTestServers(t)
	for _, tc := range []struct {
		name string
		dial func(raw net.Conn) // what the device sends
		want string
	}{
		{"TLS 1.0 only", func(raw net.Conn) {
			c := tls.Client(raw, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11})
			_ = c.Handshake()
		}, "protocol_version"},
		{"SSLv2 hello", func(raw net.Conn) {
			raw.Write([]byte{0x80, 0x2e, 0x01, 0x00, 0x02, 0x00, 0x15, 0x00, 0x00, 0x00, 0x10})
		}, "not_tls"},
		{"TLS 1.2 with CBC suites only", func(raw net.Conn) {
			c := tls.Client(raw, &tls.Config{InsecureSkipVerify: true, MaxVersion: tls.VersionTLS12,
				CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA}})
			_ = c.Handshake()
		}, "no_shared_cipher"},
		{"plain MQTT", func(raw net.Conn) {
			raw.Write([]byte{0x10, 0x0c, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x04, 0x02, 0x00, 0x3c, 0x00, 0x00})
		}, "not_tls"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			raw, res := serveOne(t, s)
			go tc.dial(raw)
			r := <-res
			wantReason(t, r.err, tc.want)
		})
	}
}

// TestNoCloseNotifyAfterFatalAlert: a record of the wrong version in an established
// session is protocol_version (not client_closed), and after the fatal alert it draws,
// closing the session sends nothing more: no close_notify after a fatal alert.
func TestNoCloseNotifyAfterFatalAlert(t *testing.T) {
	s := newTestServers(t)
	for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		t.Run(tls.VersionName(v), func(t *testing.T) {
			raw, res := serveOne(t, s)
			dev := s.certClient(raw, v)
			if err := dev.Handshake(); err != nil {
				t.Fatal(err)
			}
			r := <-res
			if r.err != nil {
				t.Fatal(r.err)
			}
			if v == tls.VersionTLS13 { // the server's tickets, sent after its Finished
				_ = raw.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
				io.Copy(io.Discard, raw)
				_ = raw.SetReadDeadline(time.Now().Add(10 * time.Second))
			}
			// An application-data record claiming TLS 1.0 on the raw socket.
			if _, err := raw.Write([]byte{0x17, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5}); err != nil {
				t.Fatal(err)
			}
			_, err := r.c.Read(make([]byte, 64))
			if got := SessionReason(err); got != "protocol_version" {
				t.Errorf("SessionReason(%v) = %q, want protocol_version", err, got)
			}
			r.c.Close()
			data, _ := io.ReadAll(raw)
			records := 0
			for len(data) >= 5 {
				n := int(data[3])<<8 | int(data[4])
				records++
				if len(data) < 5+n {
					break
				}
				data = data[5+n:]
			}
			if records != 1 {
				t.Errorf("the server sent %d records after the bad one, want 1 (the fatal alert, no close_notify after it)", records)
			}
		})
	}
}
