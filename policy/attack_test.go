package policy

// Issue #14's rendering attacks, each as the broker would see it behind
// "pattern write devices/%c/#": a refusal names its stable reason and the CONNACK code.

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"math/big"
	"testing"
	"time"

	"github.com/mqtls/mqtls/handshake"
)

// oidCN is the subject attribute commonName (X.520).
var oidCN = asn1.ObjectIdentifier{2, 5, 4, 3}

// subjectIdentity returns the Identity handshake derives from a leaf whose subject is
// names, in order: the bytes Go's x509 parser really reads, not a hand-filled struct.
func subjectIdentity(tb testing.TB, names ...pkix.AttributeTypeAndValue) handshake.Identity {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{ExtraNames: names},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		tb.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		tb.Fatal(err)
	}
	return handshake.FromCertificate(leaf)
}

func cn(v string) pkix.AttributeTypeAndValue {
	return pkix.AttributeTypeAndValue{Type: oidCN, Value: v}
}

func orgID(cn string, o ...string) handshake.Identity {
	id := certID(cn)
	id.Organization = o
	return id
}

func TestBindRefusesRenderingAttacks(t *testing.T) {
	rewrite := Config{ClientID: ClientIDRewrite}
	prefix := Config{ClientID: ClientIDPrefix}
	tenant := Config{Identity: "tenant-{o}-{cn}", ClientID: ClientIDRewrite}
	tests := []struct {
		name   string
		cfg    Config
		id     handshake.Identity
		pkt    []byte
		reason string
	}{
		// devices/%c/#: identity "dev-1/x" would write into devices/dev-1/x/..., dev-1's tree.
		{"slash escapes into another device's tree", rewrite, certID("dev-1/x"), connect311, ReasonIdentityUnsafe},
		{"plus is a topic wildcard", rewrite, certID("dev+"), connect311, ReasonIdentityUnsafe},
		{"hash is a topic wildcard", rewrite, certID("dev#"), connect311, ReasonIdentityUnsafe},
		{"control character", rewrite, certID("dev\x01"), connect311, ReasonIdentityUnsafe},
		{"DEL", rewrite, certID("dev\x7f"), connect311, ReasonIdentityUnsafe},
		{"C1 control", rewrite, certID("dev\u0085"), connect311, ReasonIdentityUnsafe},
		{"invalid UTF-8", rewrite, certID("dev\xff"), connect311, ReasonIdentityUnsafe},
		{"unsafe even when only matched by deny", Config{Deny: []string{"root"}}, certID("a/b"), connect311, ReasonIdentityUnsafe},
		{"unsafe even with the client ID off", Config{}, certID("a/b"), connect311, ReasonIdentityUnsafe},
		{"unsafe PSK identity", Config{Identity: "{psk}", ClientID: ClientIDEnforce}, pskID("a/b"), id311("a/b"), ReasonIdentityUnsafe},

		// prefix: identity "a" must not claim "a/b/x", which is a session of identity "a/b".
		{"prefix suffix holding the separator", prefix, certID("a"), id311("a/b/x"), ReasonClientIDMismatch},
		{"prefix takeover with another separator", Config{ClientID: ClientIDPrefix, ClientIDSeparator: "-"}, certID("dev"), id311("dev-1-x"), ReasonClientIDMismatch},
		{"prefix takeover under allow_slash", Config{Identity: "{uri}", ClientID: ClientIDPrefix, AllowSlash: true}, uriID("spiffe://td/a"), id311("spiffe://td/a/b/x"), ReasonClientIDMismatch},

		// tenant-{o}-{cn}: O=acme/CN=x-y and O=acme-x/CN=y would both be "tenant-acme-x-y".
		{"field holding the literal after it", tenant, orgID("y", "acme-x"), connect311, ReasonIdentityAmbiguous},
		// "{o}aa{cn}": O "a", CN "x" and O "", CN "ax" are both "aaax".
		{"field making the literal early", Config{Identity: "{o}aa{cn}", ClientID: ClientIDRewrite}, orgID("x", "a"), connect311, ReasonIdentityAmbiguous},

		// Repeated attributes: Mosquitto reads the first CN, Go (and so mqtls) the last.
		{"two common names", rewrite, subjectIdentity(t, cn("attacker"), cn("victim")), connect311, ReasonIdentityMultivalued},
		{"two organizations", tenant, orgID("x", "acme", "other"), connect311, ReasonIdentityMultivalued},
		{"two URIs", Config{Identity: "{uri}", ClientID: ClientIDRewrite, AllowSlash: true},
			handshake.Identity{Kind: handshake.KindCertificate, URIs: []string{"spiffe://td/a", "spiffe://td/b"}}, connect311, ReasonIdentityMultivalued},

		// Certificates and PSKs on one listener: a CN must not pass for the PSK namespace.
		{"certificate posing as a PSK identity", Config{Identity: "{cn}psk-{psk}", ClientID: ClientIDRewrite}, certID("psk-dev-1"), connect311, ReasonIdentityAmbiguous},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, d, err := bind(t, tt.cfg, tt.id, tt.pkt)
			rej, ok := err.(*Reject)
			if !ok {
				t.Fatalf("Bind accepted identity %q, forwarding client ID %q; want refusal %s", d.Identity, d.ClientID, tt.reason)
			}
			if rej.Reason != tt.reason {
				t.Fatalf("refused with %v, want reason %s", rej, tt.reason)
			}
			if tt.reason != ReasonClientIDMismatch && rej.Code != CodeNotAuthorized {
				t.Errorf("code %v, want not authorized", rej.Code)
			}
		})
	}
}

// id311 is a 3.1.1 CONNECT with clean session and the given client ID.
func id311(clientID string) []byte { return packet(header(Level311, 0x02), s16(clientID)) }

func uriID(uri string) handshake.Identity {
	return handshake.Identity{Kind: handshake.KindCertificate, URIs: []string{uri}}
}

// The safe cases next to the attacks: what must keep working.
func TestBindAcceptsSafeIdentities(t *testing.T) {
	tests := []struct {
		name     string
		cfg      Config
		id       handshake.Identity
		pkt      []byte
		clientID string
	}{
		{"tenant with a dash in the last field", Config{Identity: "tenant-{o}-{cn}", ClientID: ClientIDRewrite}, orgID("x-y", "acme"), connect311, "tenant-acme-x-y"},
		{"prefix session", Config{ClientID: ClientIDPrefix}, certID("a"), id311("a/s1"), "a/s1"},
		{"prefix session of a slash identity", Config{Identity: "{uri}", ClientID: ClientIDPrefix, AllowSlash: true}, uriID("spiffe://td/a/b"), id311("spiffe://td/a/b/x"), "spiffe://td/a/b/x"},
		{"URI under allow_slash", Config{Identity: "{uri}", ClientID: ClientIDRewrite, AllowSlash: true}, uriID("spiffe://td/dev-1"), connect311, "spiffe://td/dev-1"},
		{"unicode", Config{ClientID: ClientIDRewrite}, certID("gerät-ü"), connect311, "gerät-ü"},
		{"single CN via x509", Config{ClientID: ClientIDRewrite}, subjectIdentity(t, cn("dev-1")), connect311, "dev-1"},
		{"PSK identity on a mixed listener", Config{Identity: "{cn}psk-{psk}", ClientID: ClientIDRewrite}, pskID("dev-1"), connect311, "psk-dev-1"},
		{"certificate on a mixed listener", Config{Identity: "{cn}psk-{psk}", ClientID: ClientIDRewrite}, certID("dev-1"), connect311, "dev-1"},
		{"pinned key name", Config{Identity: "{name}", ClientID: ClientIDRewrite},
			handshake.Identity{Kind: handshake.KindPinnedKey, KeyName: "gw-1", Fingerprint: "ab"}, connect311, "gw-1"},
		{"pinned key fingerprint", Config{Identity: "{fingerprint}", ClientID: ClientIDRewrite},
			handshake.Identity{Kind: handshake.KindPinnedKey, KeyName: "gw-1", Fingerprint: "ab"}, connect311, "ab"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, d, err := bind(t, tt.cfg, tt.id, tt.pkt)
			if err != nil {
				t.Fatal(err)
			}
			if string(d.ClientID) != tt.clientID {
				t.Errorf("client ID %q, want %q", d.ClientID, tt.clientID)
			}
		})
	}
}

// A template that can render one string for two devices is refused at load, naming the key
// and the fix.
func TestConfigRefusesCollidingTemplates(t *testing.T) {
	tests := []struct {
		cfg  Config
		want []string
	}{
		{Config{Identity: "{cn}{psk}"}, []string{"policy: identity", "{cn}{psk}", "certificate", "psk", "{cn}psk-{psk}"}},
		{Config{Identity: "{o}{cn}"}, []string{"policy: identity", "{o}", "{cn}", "separator"}},
		{Config{Identity: "{cn}{name}"}, []string{"policy: identity", "pinned_key"}},
		{Config{Identity: "dev/{cn}"}, []string{"policy: identity", `"/"`, "allow_slash"}},
		{Config{Identity: "dev+{cn}"}, []string{"policy: identity", `"+"`}},
	}
	for _, tt := range tests {
		err := tt.cfg.Validate()
		for _, w := range tt.want {
			if !contains(err, w) {
				t.Errorf("Validate(%q) = %v, want it to mention %q", tt.cfg.Identity, err, w)
			}
		}
	}
	if err := (Config{Identity: "dev/{uri}", AllowSlash: true}).Validate(); err != nil {
		t.Errorf("a slash literal under allow_slash: %v", err)
	}
}

// MQTT 5: a device must not plant the identity property in its will message either, where
// the broker would hand it to every subscriber of the will topic.
func TestBindStripsIdentityPropertyFromWill(t *testing.T) {
	pkt := packet(header(Level5, 0x06), // clean start, will flag
		props(),
		s16("dev-1"), // client ID
		props(userProp("mqtls-identity", "victim"), userProp("other", "kept")), // will properties
		s16("devices/dev-1/status"), s16("gone"))
	_, _, d, err := bind(t, Config{IdentityProperty: "mqtls-identity"}, certID("dev-1"), pkt)
	if err != nil {
		t.Fatal(err)
	}
	out, err := ParseConnect(d.Packet)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(out.WillProperties, []byte("victim")) {
		t.Errorf("will properties still carry the forged identity property: %q", out.WillProperties)
	}
	if !bytes.Equal(out.WillProperties, userProp("other", "kept")) {
		t.Errorf("will properties %q, want only the other user property", out.WillProperties)
	}
	if !bytes.Contains(out.Properties, userProp("mqtls-identity", "dev-1")) {
		t.Errorf("CONNECT properties %q lack the identity property", out.Properties)
	}
}
