package handshake

import (
	"bytes"
	"testing"

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
