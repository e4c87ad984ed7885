package policy

import (
	"testing"

	"github.com/mqtls/mqtls/handshake"
)

func BenchmarkParseFixedHeader(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		ParseFixedHeader(connect5)
	}
}

func BenchmarkParseConnect(b *testing.B) {
	for _, bb := range []struct {
		name string
		pkt  []byte
	}{{"3.1.1", connect311}, {"5.0", connect5}} {
		b.Run(bb.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(bb.pkt)))
			for b.Loop() {
				if _, err := ParseConnect(bb.pkt); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkBind(b *testing.B) {
	dev1 := certID("dev1")
	tests := []struct {
		name string
		cfg  Config
		id   handshake.Identity
		pkt  []byte
	}{
		// The common case: the device already uses its identity; Raw is forwarded.
		{"accept/enforce/3.1.1", Config{ClientID: ClientIDEnforce}, dev1, connect311},
		{"accept/enforce/5.0", Config{ClientID: ClientIDEnforce}, dev1, connect5},
		{"accept/enforce-tenant/3.1.1", Config{Identity: "tenant-{o}-{cn}", ClientID: ClientIDRewrite},
			handshake.Identity{Kind: handshake.KindCertificate, CommonName: "dev1", Organization: []string{"acme"}},
			packet(header(Level311, 0x02), s16("tenant-acme-dev1"))},
		{"accept/enforce+allow/3.1.1", Config{ClientID: ClientIDEnforce, Allow: []string{"dev[0-9]+"}}, dev1, connect311},
		// A fresh CONNECT is encoded.
		{"rewrite/client-id/3.1.1", Config{ClientID: ClientIDRewrite}, certID("device-7"), connect311},
		{"rewrite/all/5.0", Config{Identity: "t-{cn}", ClientID: ClientIDRewrite, Username: UsernameIdentity,
			Password: PasswordStrip, IdentityProperty: "mqtls-identity"}, dev1, connect5},
	}
	for _, tt := range tests {
		b.Run(tt.name, func(b *testing.B) {
			p, err := New(tt.cfg)
			if err != nil {
				b.Fatal(err)
			}
			c, err := ParseConnect(tt.pkt)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := p.Bind(tt.id, &c); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkAppendConnack(b *testing.B) {
	buf := make([]byte, 0, 64)
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendConnack(buf[:0], Level5, CodeClientIDNotValid, ReasonClientIDMismatch)
	}
}
