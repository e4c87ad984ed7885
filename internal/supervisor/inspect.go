package supervisor

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/asn1"
	"encoding/pem"
	"fmt"
	"io/fs"
	"net"
	"os"
	"strings"
	"time"

	"github.com/mqtls/mqtls/handshake"
	"github.com/mqtls/mqtls/internal/config"
	"github.com/mqtls/mqtls/proxy"
)

// Each file a listener names is looked at on its own before the handshake packages load
// them together, so that a problem is reported against that file's flag or key only, all
// problems at once, and in the terms of what clients will do with it.

// tlsFileProblems returns what is wrong with sp's certificate, key, client CA and CRL
// files, each error naming the flag or key of its file: files that do not load (in a
// format mqtls does not read, with the command that converts them), and with clients
// also what loading accepts but clients refuse: a server certificate without serverAuth
// or a SAN, a client CA that is not a CA, certificates not valid yet.
func tlsFileProblems(sp config.ListenerSpec, now time.Time, clients bool) []error {
	c := sp.TLS
	if c.CertFile == "" {
		return nil
	}
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("listener %s: %s: %s", sp.Name, sp.Key(key), fmt.Sprintf(format, args...)))
	}

	certs, certErr := readPEMCerts(c.CertFile)
	if certErr != nil {
		bad("tls.cert", "%v", certErr)
	}
	key, keyErr := readKey(c.KeyFile)
	if keyErr != nil {
		bad("tls.key", "%v", keyErr)
	}
	if certErr == nil && clients {
		leaf := certs[0]
		if now.Before(leaf.NotBefore) {
			bad("tls.cert", "certificate %q in %s is not valid before %s: clients refuse it until then (is this machine's clock right?)",
				leaf.Subject, c.CertFile, leaf.NotBefore.UTC().Format(time.RFC3339))
		}
		if len(leaf.ExtKeyUsage) > 0 && !hasEKU(leaf, x509.ExtKeyUsageServerAuth) {
			bad("tls.cert", "certificate %q in %s has extended key usage without serverAuth: TLS clients refuse it as a server certificate; issue it with extendedKeyUsage = serverAuth",
				leaf.Subject, c.CertFile)
		}
		if len(leaf.DNSNames) == 0 && len(leaf.IPAddresses) == 0 {
			bad("tls.cert", "certificate %q in %s has no subjectAltName: clients match the host they dial against its DNS and IP SANs only, never the CN; issue it with subjectAltName = DNS:your.host (mqtls init does)",
				leaf.Subject, c.CertFile)
		}
	}
	if certErr == nil && keyErr == nil {
		pub, priv := keyType(certs[0].PublicKey), keyType(key)
		switch {
		case pub != priv:
			bad("tls.key", "%s is %s key but the certificate in %s (%s) holds %s key: give the key the certificate was issued for",
				c.KeyFile, priv, c.CertFile, sp.Key("tls.cert"), pub)
		default:
			certPEM, _ := os.ReadFile(c.CertFile)
			keyPEM, _ := os.ReadFile(c.KeyFile)
			if _, err := tls.X509KeyPair(certPEM, keyPEM); err != nil {
				bad("tls.key", "%s does not match the certificate in %s (%s): %v", c.KeyFile, c.CertFile, sp.Key("tls.cert"), err)
			}
		}
	}

	if c.ClientCAFile != "" {
		cas, err := readPEMCerts(c.ClientCAFile)
		if err != nil {
			bad("tls.client_ca", "%v", err)
		}
		for i, ca := range cas {
			if !clients {
				break
			}
			if !ca.IsCA {
				bad("tls.client_ca", "certificate %d (%q) in %s is not a CA (no basicConstraints CA:TRUE), so no device certificate can chain to it; put the CA that issued the devices there",
					i+1, ca.Subject, c.ClientCAFile)
			}
			if now.Before(ca.NotBefore) {
				bad("tls.client_ca", "certificate %d (%q) in %s is not valid before %s: devices it issued are refused until then",
					i+1, ca.Subject, c.ClientCAFile, ca.NotBefore.UTC().Format(time.RFC3339))
			}
		}
	}
	for _, f := range c.CRLFiles {
		data, err := os.ReadFile(f)
		if err == nil {
			_, err = handshake.ParseCRLFile(f, data)
		}
		if err != nil {
			bad("tls.crls", "%v", err)
		}
	}
	if c.ClientKeysFile != "" {
		if _, err := handshake.LoadKeyFile(c.ClientKeysFile); err != nil {
			bad("tls.client_keys", "%v", err)
		}
	}
	return errs
}

func hasEKU(c *x509.Certificate, want x509.ExtKeyUsage) bool {
	for _, u := range c.ExtKeyUsage {
		if u == want || u == x509.ExtKeyUsageAny {
			return true
		}
	}
	return false
}

// readPEMCerts reads the PEM certificates of file, or says what the file is instead.
func readPEMCerts(file string) ([]*x509.Certificate, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var certs []*x509.Certificate
	for rest := data; ; {
		var block *pem.Block
		if block, rest = pem.Decode(rest); block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parsing certificate %d in %s: %w", len(certs)+1, file, err)
		}
		certs = append(certs, c)
	}
	if len(certs) > 0 {
		return certs, nil
	}
	switch {
	case isPKCS12(data):
		return nil, fmt.Errorf("%s is a PKCS#12 bundle; mqtls reads PEM: openssl pkcs12 -in %s -clcerts -nokeys -out cert.pem (and -nocerts -nodes -out key.pem for its key)", file, file)
	case isDERCert(data):
		return nil, fmt.Errorf("%s is a DER certificate; mqtls reads PEM: openssl x509 -inform der -in %s -out %s.pem", file, file, file)
	}
	return nil, fmt.Errorf("%s holds no PEM certificate", file)
}

// readKey reads the private key of file, or says why it cannot be used as it is.
func readKey(file string) (any, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	for rest := data; ; {
		var block *pem.Block
		if block, rest = pem.Decode(rest); block == nil {
			break
		}
		if block.Type == "ENCRYPTED PRIVATE KEY" || strings.Contains(block.Headers["Proc-Type"], "ENCRYPTED") {
			return nil, fmt.Errorf("%s is protected by a passphrase, which mqtls cannot ask for: openssl pkey -in %s -out %s.plain (then chmod 600 it and use that)", file, file, file)
		}
		if !strings.HasSuffix(block.Type, "PRIVATE KEY") {
			continue
		}
		if k, err := parseKey(block.Bytes); err == nil {
			return k, nil
		}
		return nil, fmt.Errorf("%s: the %s block does not parse", file, block.Type)
	}
	switch {
	case isPKCS12(data):
		return nil, fmt.Errorf("%s is a PKCS#12 bundle; mqtls reads PEM: openssl pkcs12 -in %s -nocerts -nodes -out key.pem", file, file)
	case isDERKey(data):
		return nil, fmt.Errorf("%s is a DER key; mqtls reads PEM: openssl pkey -inform der -in %s -out %s.pem", file, file, file)
	}
	return nil, fmt.Errorf("%s holds no PEM private key", file)
}

func parseKey(der []byte) (any, error) {
	if k, err := x509.ParsePKCS8PrivateKey(der); err == nil {
		return k, nil
	}
	if k, err := x509.ParseECPrivateKey(der); err == nil {
		return k, nil
	}
	return x509.ParsePKCS1PrivateKey(der)
}

func isDERCert(data []byte) bool {
	_, err := x509.ParseCertificate(data)
	return err == nil
}

func isDERKey(data []byte) bool {
	_, err := parseKey(data)
	return err == nil
}

// isPKCS12 recognises a PFX (RFC 7292 §4): SEQUENCE { version INTEGER (3), authSafe
// ContentInfo, ... }.
func isPKCS12(data []byte) bool {
	var pfx struct {
		Version  int
		AuthSafe asn1.RawValue
		MacData  asn1.RawValue `asn1:"optional"`
	}
	rest, err := asn1.Unmarshal(data, &pfx)
	return err == nil && len(rest) == 0 && pfx.Version == 3
}

// keyType names the algorithm of a public or private key.
func keyType(k any) string {
	switch k.(type) {
	case *ecdsa.PublicKey, *ecdsa.PrivateKey:
		return "an ECDSA"
	case *rsa.PublicKey, *rsa.PrivateKey:
		return "an RSA"
	case ed25519.PublicKey, ed25519.PrivateKey:
		return "an Ed25519"
	}
	return fmt.Sprintf("a %T", k)
}

// looseFile is a file that holds secrets (the server key, the PSK file) or says who may
// connect (the pinned-key file) and that others can read or write.
type looseFile struct {
	key, file string // key as the listener spells it: "--key", "listeners[0].tls.key"
	mode      fs.FileMode
}

func (l looseFile) String() string {
	return fmt.Sprintf("%s %s is readable or writable by others (mode %04o): chmod 600 %s", l.key, l.file, l.mode, l.file)
}

// loosePermissions lists sp's loose files. They are warnings, not errors: Kubernetes
// mounts Secrets 0644 by default, readable by the pod only.
func loosePermissions(sp config.ListenerSpec) []looseFile {
	var out []looseFile
	for _, f := range []struct{ key, file string }{
		{"tls.key", sp.TLS.KeyFile}, {"psk.file", sp.PSKFile}, {"tls.client_keys", sp.TLS.ClientKeysFile},
	} {
		if f.file == "" {
			continue
		}
		if mode, loose, err := handshake.LoosePermissions(f.file); err == nil && loose {
			out = append(out, looseFile{key: sp.Key(f.key), file: f.file, mode: mode})
		}
	}
	return out
}

// upstreamProblem dials sp's broker once; it may start later, so failing is a warning.
// local is the address the dial came from, for whoever counts the broker's connections.
func upstreamProblem(ctx context.Context, sp config.ListenerSpec, timeout time.Duration) (local string, err error) {
	network, addr := "tcp", sp.Proxy.Upstream
	if p, ok := strings.CutPrefix(addr, "unix:"); ok {
		network, addr = "unix", p
	}
	d := net.Dialer{Timeout: timeout}
	c, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return "", fmt.Errorf("listener %s: the broker at %s (%s) cannot be reached now: %w", sp.Name, sp.Proxy.Upstream, sp.Key("upstream"), err)
	}
	if sp.SendProxy != "" {
		hdr, err := proxy.LocalProxyHeader(sp.SendProxy)
		if err == nil {
			_ = c.SetWriteDeadline(time.Now().Add(timeout))
			_, err = c.Write(hdr)
		}
		if err != nil {
			c.Close()
			return "", fmt.Errorf("listener %s: sending the broker at %s (%s) a PROXY header: %w", sp.Name, sp.Proxy.Upstream, sp.Key("upstream"), err)
		}
	}
	local = c.LocalAddr().String()
	return local, c.Close()
}
