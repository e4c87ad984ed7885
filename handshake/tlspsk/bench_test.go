package tlspsk

import (
	"net"
	"syscall"
	"testing"
	"time"
)

// BenchmarkHandshake measures full handshakes of the package's client against its server
// over loopback TCP, one connection per iteration (both sides' CPU on this machine).
func BenchmarkHandshake(b *testing.B) {
	for _, bc := range []struct {
		name  string
		suite uint16
		group uint16
		pskKE bool // TLS 1.3 psk_ke (no ECDHE)
	}{
		{"PSK/AES-128-GCM", TLS_PSK_WITH_AES_128_GCM_SHA256, 0, false},
		{"PSK/CCM-8", TLS_PSK_WITH_AES_128_CCM_8, 0, false},
		{"ECDHE-PSK/X25519/ChaCha20", TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256, groupX25519, false},
		{"ECDHE-PSK/X25519/AES-128-GCM", TLS_ECDHE_PSK_WITH_AES_128_GCM_SHA256, groupX25519, false},
		{"ECDHE-PSK/P-256/AES-128-GCM", TLS_ECDHE_PSK_WITH_AES_128_GCM_SHA256, groupP256, false},
		{"TLS1.3/psk_dhe_ke/X25519/AES-128-GCM", TLS_AES_128_GCM_SHA256, groupX25519, false},
		{"TLS1.3/psk_dhe_ke/P-256/AES-128-GCM", TLS_AES_128_GCM_SHA256, groupP256, false},
		{"TLS1.3/psk_ke/AES-128-GCM", TLS_AES_128_GCM_SHA256, 0, true},
		{"TLS1.3/psk_dhe_ke/X25519/CCM-8", TLS_AES_128_CCM_8_SHA256, groupX25519, false},
	} {
		b.Run(bc.name, func(b *testing.B) {
			srv := startServer(b, &Config{Lookup: testLookup, AllowPSKKE: bc.pskKE}, nil)
			cfg := &ClientConfig{Identity: testIdentity, Key: testKey, Suites: []uint16{bc.suite}}
			if bc.group != 0 {
				cfg.groups = []uint16{bc.group}
			}
			if bc.pskKE {
				cfg.t13.pskModes = []uint8{pskModeKE}
			}
			b.ReportAllocs()
			b.ResetTimer()
			cpu0 := processCPU()
			for b.Loop() {
				nc, err := net.Dial("tcp", srv.addr())
				if err != nil {
					b.Fatal(err)
				}
				nc.SetDeadline(time.Now().Add(10 * time.Second))
				c := Client(nc, cfg)
				if err := c.Handshake(); err != nil {
					b.Fatal(err)
				}
				c.Close()
				if r := srv.result(); r.err != nil {
					b.Fatal(r.err)
				}
			}
			// CPU time of both ends (this process), less sensitive than ns/op to other
			// load on the machine.
			b.ReportMetric(float64((processCPU()-cpu0).Microseconds())/float64(b.N), "cpu-µs/op")
		})
	}
}

// processCPU is the user and system CPU time this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkRecord measures sealing and opening full 16 KiB records and small 64-byte ones
// (a typical MQTT PUBLISH) per suite, in memory.
func BenchmarkRecord(b *testing.B) {
	for _, s := range allSuites {
		for _, size := range []int{64, maxPlaintext} {
			key := make([]byte, s.keyLen)
			rc, _ := newRecordCipher(s, make([]byte, s.macLen), key, make([]byte, s.ivLen))
			oc, _ := newRecordCipher(s, make([]byte, s.macLen), key, make([]byte, s.ivLen))
			pt := make([]byte, size)
			w := &Conn{}
			w.out.cipher = rc
			b.Run(s.name+"/seal/"+sizeName(size), func(b *testing.B) {
				b.ReportAllocs()
				b.SetBytes(int64(size))
				buf := make([]byte, 0, maxRecordBufferLen)
				for b.Loop() {
					buf = w.appendRecord(buf[:0], recordTypeApplicationData, pt)
				}
			})
			b.Run(s.name+"/open/"+sizeName(size), func(b *testing.B) {
				w.out.seq = 0
				rec := w.appendRecord(nil, recordTypeApplicationData, pt)
				frag := make([]byte, len(rec)-recordHeaderLen)
				b.ReportAllocs()
				b.SetBytes(int64(size))
				for b.Loop() {
					copy(frag, rec[recordHeaderLen:])
					if _, err := oc.open(0, rec[:recordHeaderLen], frag); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkRecord13 measures TLS 1.3 record sealing and opening per suite, as
// BenchmarkRecord does for TLS 1.2.
func BenchmarkRecord13(b *testing.B) {
	for _, s := range tls13Suites {
		for _, size := range []int{64, maxPlaintext} {
			secret := make([]byte, hashLen)
			wc, _ := newCipher13(s, secret)
			rc, _ := newCipher13(s, secret)
			pt := make([]byte, size)
			w := &Conn{tls13: true}
			w.out.cipher = wc
			b.Run(s.name+"/seal/"+sizeName(size), func(b *testing.B) {
				b.ReportAllocs()
				b.SetBytes(int64(size))
				buf := make([]byte, 0, maxRecordBufferLen)
				for b.Loop() {
					buf = w.appendRecord(buf[:0], recordTypeApplicationData, pt)
				}
			})
			b.Run(s.name+"/open/"+sizeName(size), func(b *testing.B) {
				w.out.seq = 0
				rec := w.appendRecord(nil, recordTypeApplicationData, pt)
				frag := make([]byte, len(rec)-recordHeaderLen)
				b.ReportAllocs()
				b.SetBytes(int64(size))
				for b.Loop() {
					copy(frag, rec[recordHeaderLen:])
					if _, err := rc.open(0, rec[:recordHeaderLen], frag); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

func sizeName(n int) string {
	if n == maxPlaintext {
		return "16KiB"
	}
	return "64B"
}
