package handshake

import (
	"bytes"
	"testing"

	"github.com/pion/dtls/v3"

	"github.com/mqtls/mqtls/handshake/dtlsflood"
)

// FuzzClientHelloCookie feeds the front's ClientHello parser (the only parse of peer input
// before any state exists) arbitrary datagrams: it must not panic, and a cookie it returns
// lies inside the datagram, at most 255 bytes.
func FuzzClientHelloCookie(f *testing.F) {
	hello := dtlsflood.Hello()
	f.Add(hello)
	f.Add(hello[:40])
	f.Add([]byte{23, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 1, 0, 0})
	f.Add([]byte{25, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		cookie, ok := clientHelloCookie(b)
		version, cookie2, rest, ok2 := clientHelloFields(b)
		if ok2 != ok || !bytes.Equal(cookie, cookie2) || (!ok && (version != 0 || rest != nil)) {
			t.Fatalf("clientHelloFields disagrees with clientHelloCookie")
		}
		switch v := helloVerdict(b, dtlsPSKSuites); {
		case !ok && v != "":
			t.Fatalf("verdict %q for a datagram that is not a ClientHello", v)
		case v != "" && v != "protocol_version" && v != "no_shared_cipher":
			t.Fatalf("verdict %q", v)
		}
		if !ok {
			if cookie != nil {
				t.Fatal("a cookie from a datagram that is not a ClientHello")
			}
			return
		}
		if len(cookie) > 255 || (len(cookie) > 0 && !bytes.Contains(b, cookie)) {
			t.Fatalf("cookie % x not in the datagram", cookie)
		}
		_, _, _ = recordSeq(b)
		_ = hvrCookie(b)
		_, _ = serverHelloCID(b)
	})
}

// TestHelloVerdict: the front names a hello older than DTLS 1.2 protocol_version, and one
// offering none of the server's suites no_shared_cipher; a hello that passes both, or
// that does not parse, gets no verdict.
func TestHelloVerdict(t *testing.T) {
	// A ClientHello: version, random, empty session_id, empty cookie, then rest.
	hello := func(version uint16, rest ...byte) []byte {
		body := append([]byte{byte(version >> 8), byte(version)}, make([]byte, 32)...)
		body = append(body, 0, 0)
		body = append(body, rest...)
		n := len(body)
		hs := append([]byte{hsClientHello, 0, 0, byte(n), 0, 0, 0, 0, 0, 0, 0, byte(n)}, body...)
		m := len(hs)
		return append([]byte{ctHandshake, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, byte(m >> 8), byte(m)}, hs...)
	}
	psk := []dtls.CipherSuiteID{dtls.TLS_PSK_WITH_AES_128_CCM_8}
	for _, tc := range []struct {
		name string
		b    []byte
		want string
	}{
		{"DTLS 1.2, shared suite", hello(0xfefd, 0, 4, 0xc0, 0xff, 0xc0, 0xa8, 1, 0), ""},
		{"DTLS 1.0", hello(0xfeff, 0, 2, 0xc0, 0xa8, 1, 0), "protocol_version"},
		{"DTLS 1.3 offered (newer)", hello(0xfefc, 0, 2, 0xc0, 0xa8, 1, 0), ""},
		{"no shared suite", hello(0xfefd, 0, 2, 0xc0, 0x0a, 1, 0), "no_shared_cipher"},
		{"empty suite list", hello(0xfefd, 0, 0, 1, 0), "no_shared_cipher"},
		{"odd suite list", hello(0xfefd, 0, 3, 0xc0, 0xa8, 0, 1, 0), ""},
		{"suite list cut short", hello(0xfefd, 0, 8, 0xc0, 0x0a), ""},
		{"no suite list", hello(0xfefd), ""},
		{"not a hello", []byte{23, 0xfe, 0xfd, 0, 1}, ""},
	} {
		if got := helloVerdict(tc.b, psk); got != tc.want {
			t.Errorf("%s: verdict %q, want %q", tc.name, got, tc.want)
		}
	}
	b := hello(0xfefd, 0, 2, 0xc0, 0x0a)
	if n := testing.AllocsPerRun(100, func() { helloVerdict(b, psk) }); n != 0 {
		t.Errorf("helloVerdict allocates %v times, want 0", n)
	}
}
