package tlspsk

import (
	"bytes"
	"crypto/tls"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// -update-corpus refreshes the committed seed corpus in testdata/fuzz from real peers.
var updateCorpus = flag.Bool("update-corpus", false, "capture real ClientHellos into testdata/fuzz")

// memConn is a net.Conn that reads from a fixed input and discards what is written.
type memConn struct {
	r io.Reader
	w bytes.Buffer
}

func (m *memConn) Read(b []byte) (int, error)       { return m.r.Read(b) }
func (m *memConn) Write(b []byte) (int, error)      { return m.w.Write(b) }
func (m *memConn) Close() error                     { return nil }
func (m *memConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (m *memConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (m *memConn) SetDeadline(time.Time) error      { return nil }
func (m *memConn) SetReadDeadline(time.Time) error  { return nil }
func (m *memConn) SetWriteDeadline(time.Time) error { return nil }

// helloSeeds are ClientHello messages (with the 4-byte header) of several shapes.
func helloSeeds() [][]byte {
	var out [][]byte
	h := baseHello()
	out = append(out, marshalClientHello(h))
	h.serverName = "broker.example"
	h.etm = true
	h.hasPointFormats, h.pointFormats = true, []byte{0}
	h.suites = DefaultSuites()
	out = append(out, marshalClientHello(h))
	out = append(out, appendRawExtension(marshalClientHello(h), extSupportedVersions, []byte{4, 3, 4, 3, 3}))
	h2 := baseHello()
	h2.hasRenegInfo, h2.hasGroups, h2.ems = false, false, false
	out = append(out, marshalClientHello(h2))
	return out
}

func FuzzParseClientHello(f *testing.F) {
	for _, m := range helloSeeds() {
		f.Add(m[handshakeHeaderLen:])
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		ch, err := parseClientHello(body)
		if err != nil {
			return
		}
		// What parses must survive a round trip through the client's encoder with the
		// fields the server acts on intact.
		ch.hasRenegInfo = ch.hasRenegInfo && len(ch.renegInfo) < 256
		again, err := parseClientHello(marshalClientHello(ch)[handshakeHeaderLen:])
		if err != nil {
			t.Fatalf("re-encoded hello does not parse: %v", err)
		}
		if again.version != ch.version || !slices.Equal(again.suites, ch.suites) || again.ems != ch.ems ||
			again.etm != ch.etm || !slices.Equal(again.groups, ch.groups) || again.serverName != ch.serverName {
			t.Fatalf("round trip changed the hello: %+v vs %+v", ch, again)
		}
	})
}

func FuzzParseClientKeyExchange(f *testing.F) {
	f.Add([]byte{0, 3, 'a', 'b', 'c'}, false)
	f.Add(append([]byte{0, 1, 'x', 32}, make([]byte, 32)...), true)
	f.Add(append([]byte{0, 0, 65, 4}, make([]byte, 64)...), true)
	f.Fuzz(func(t *testing.T, body []byte, ecdhe bool) {
		cke, err := parseClientKeyExchange(body, ecdhe)
		if err != nil {
			return
		}
		if got := cke.marshal(ecdhe)[handshakeHeaderLen:]; !bytes.Equal(got, body) {
			t.Fatalf("re-encoding gives %x, want %x", got, body)
		}
	})
}

func FuzzParseFinished(f *testing.F) {
	f.Add(make([]byte, 12))
	f.Add([]byte{1})
	f.Fuzz(func(t *testing.T, body []byte) {
		v, err := parseFinished(body)
		if err == nil && len(v) != verifyDataLen {
			t.Fatalf("accepted %d bytes of verify_data", len(v))
		}
	})
}

func FuzzParseServerHello(f *testing.F) {
	sh := &serverHello{version: VersionTLS12, random: make([]byte, 32), suite: 0xCCAC, hasRenegInfo: true, ems: true, etm: true, hasPointFormats: true, pointFormats: []byte{0}}
	f.Add(sh.marshal()[handshakeHeaderLen:])
	f.Fuzz(func(t *testing.T, body []byte) {
		parseServerHello(body, func(uint16) bool { return true })
		parseServerHello(body, func(uint16) bool { return false })
	})
}

func FuzzParseServerKeyExchange(f *testing.F) {
	f.Add((&serverKeyExchange{hint: []byte("hint")}).marshal(false)[handshakeHeaderLen:], false)
	f.Add((&serverKeyExchange{hint: []byte("hint"), group: groupX25519, public: make([]byte, 32)}).marshal(true)[handshakeHeaderLen:], true)
	f.Fuzz(func(t *testing.T, body []byte, ecdhe bool) {
		ske, err := parseServerKeyExchange(body, ecdhe)
		if err != nil {
			return
		}
		if got := ske.marshal(ecdhe)[handshakeHeaderLen:]; !bytes.Equal(got, body) {
			t.Fatalf("re-encoding gives %x, want %x", got, body)
		}
	})
}

func FuzzOffersPSK(f *testing.F) {
	for _, m := range helloSeeds() {
		f.Add(record(22, 0x0301, m))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		OffersPSK(b)
	})
}

// FuzzServerHandshake feeds arbitrary bytes to the server as everything the client sends.
// Nothing may panic, and no handshake may succeed.
func FuzzServerHandshake(f *testing.F) {
	for _, m := range helloSeeds() {
		f.Add(record(22, 0x0301, m))
	}
	f.Add(append(record(22, 0x0301, helloSeeds()[0]), record(22, 0x0303, appendHandshake(nil, typeClientKeyExchange, []byte{0, 1, 'x'}))...))
	f.Fuzz(func(t *testing.T, in []byte) {
		c := Server(&memConn{r: bytes.NewReader(in)}, &Config{Lookup: testLookup, Hint: "h"})
		if err := c.Handshake(); err == nil {
			t.Fatal("a handshake succeeded on fuzz input")
		}
	})
}

// FuzzClientHandshake feeds arbitrary bytes to the client as everything the server sends.
func FuzzClientHandshake(f *testing.F) {
	sh := &serverHello{version: VersionTLS12, random: make([]byte, 32), suite: TLS_PSK_WITH_AES_128_GCM_SHA256, hasRenegInfo: true, ems: true}
	flight := append(sh.marshal(), (&serverKeyExchange{hint: []byte("h")}).marshal(false)...)
	flight = appendHandshake(flight, typeServerHelloDone, nil)
	f.Add(record(22, 0x0303, flight))
	f.Add(append(record(22, 0x0303, flight), record(20, 0x0303, []byte{1})...))
	f.Fuzz(func(t *testing.T, in []byte) {
		c := Client(&memConn{r: bytes.NewReader(in)}, &ClientConfig{Identity: "x", Key: testKey, OfferETM: true})
		if err := c.Handshake(); err == nil {
			t.Fatal("a handshake succeeded on fuzz input")
		}
	})
}

// FuzzRecordReader feeds arbitrary records to an established connection of each suite
// (fixed keys) through Read. The seeds are real records, so mutations reach open().
func FuzzRecordReader(f *testing.F) {
	for i, s := range allSuites {
		w := fixedKeyConn(s, nil)
		var recs []byte
		w.out.cipher = w.in.cipher // seal with the keys the reader opens with
		recs = w.appendRecord(recs, recordTypeApplicationData, []byte("hello"))
		recs = w.appendRecord(recs, recordTypeAlert, []byte{1, 0})
		f.Add(uint8(i), recs)
	}
	f.Add(uint8(0), []byte{23, 3, 3, 0x48, 0x01})
	f.Fuzz(func(t *testing.T, which uint8, in []byte) {
		s := allSuites[int(which)%len(allSuites)]
		c := fixedKeyConn(s, bytes.NewReader(in))
		buf := make([]byte, 1<<15)
		for range 100 {
			n, err := c.Read(buf)
			if n > maxPlaintext {
				t.Fatalf("Read returned %d bytes from one record", n)
			}
			if err != nil {
				return
			}
		}
	})
}

// fixedKeyConn is a Conn past its handshake whose read side uses fixed keys for s.
func fixedKeyConn(s *suite, r io.Reader) *Conn {
	if r == nil {
		r = bytes.NewReader(nil)
	}
	key := bytes.Repeat([]byte{0x42}, s.keyLen)
	rc, err := newRecordCipher(s, bytes.Repeat([]byte{0x24}, s.macLen), key, bytes.Repeat([]byte{0x17}, s.ivLen))
	if err != nil {
		panic(err)
	}
	c := &Conn{conn: &memConn{r: r}, isClient: true}
	c.in.cipher = rc
	c.in.sawRecord, c.in.strictVersion = true, true
	c.hsDone.Store(true)
	return c
}

// TestUpdateCorpus captures ClientHellos of real peers into the committed seed corpus
// when run with -update-corpus; otherwise it checks the corpus is there.
func TestUpdateCorpus(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz")
	if !*updateCorpus {
		for _, target := range []string{"FuzzParseClientHello", "FuzzOffersPSK", "FuzzServerHandshake"} {
			entries, err := os.ReadDir(filepath.Join(dir, target))
			if err != nil || len(entries) == 0 {
				t.Errorf("no committed corpus for %s; run go test -run TestUpdateCorpus -update-corpus", target)
			}
		}
		return
	}
	key := hex.EncodeToString(testKey)
	peers := map[string]func(t *testing.T) func(string){
		"openssl-default": func(t *testing.T) func(string) { return opensslHello(t, "-psk", key, "-psk_identity", "x") },
		"openssl-tls12":   func(t *testing.T) func(string) { return opensslHello(t, "-tls1_2", "-psk", key, "-psk_identity", "x") },
		"openssl-tls13":   func(t *testing.T) func(string) { return opensslHello(t, "-tls1_3", "-psk", key, "-psk_identity", "x") },
		"openssl-cbc-etm": func(t *testing.T) func(string) {
			return opensslHello(t, "-tls1_2", "-psk", key, "-cipher", "PSK-AES128-CBC-SHA256")
		},
		"openssl-no-etm": func(t *testing.T) func(string) {
			return opensslHello(t, "-tls1_2", "-psk", key, "-cipher", "PSK-AES128-CBC-SHA256", "-no_etm")
		},
		"openssl-certonly": func(t *testing.T) func(string) { return opensslHello(t) },
		"gnutls-cli": func(t *testing.T) func(string) {
			gnutls := needPeer(t, "gnutls-cli")
			return func(addr string) {
				host, port, _ := net.SplitHostPort(addr)
				exec.Command(gnutls, "--pskusername", "x", "--pskkey", key, "--priority", "NORMAL:+ECDHE-PSK:+PSK:+AES-128-CCM-8", "-p", port, host).Run()
			}
		},
		"crypto-tls": func(t *testing.T) func(string) {
			return dialAndDrop(func(nc net.Conn) error { return tls.Client(nc, &tls.Config{ServerName: "x"}).Handshake() })
		},
		"own-client": func(t *testing.T) func(string) {
			return dialAndDrop(func(nc net.Conn) error {
				return Client(nc, &ClientConfig{Identity: "x", Key: testKey, OfferETM: true, ServerName: "a.example"}).Handshake()
			})
		},
	}
	for name, dial := range peers {
		rec := captureHello(t, dial(t))
		write := func(target string, data []byte) {
			p := filepath.Join(dir, target, name)
			os.MkdirAll(filepath.Dir(p), 0o755)
			if err := os.WriteFile(p, []byte(fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", data)), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		write("FuzzOffersPSK", rec)
		write("FuzzServerHandshake", rec)
		if len(rec) > recordHeaderLen+handshakeHeaderLen {
			write("FuzzParseClientHello", rec[recordHeaderLen+handshakeHeaderLen:])
		}
	}
}
