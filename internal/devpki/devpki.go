package devpki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/mqtls/mqtls/handshake"
)

// Options say what Init makes. The zero value of a field means its default.
type Options struct {
	Dir string // where the files go; created if missing (0700)
	// SANs are the server certificate's names: DNS names and IP addresses. Default
	// localhost, 127.0.0.1 and ::1.
	SANs []string
	// Devices is how many device certificates (dev-1 ...) and PSK identities (psk-1 ...)
	// to make. Default 3.
	Devices int
	// Listen is mqtls's address in mqtls.yaml (default :8883); Upstream is Mosquitto's
	// listener (default 127.0.0.1:1883).
	Listen, Upstream string
	// Now is the time certificates start from; zero means time.Now.
	Now time.Time
}

// Default values of Options.
const (
	DefaultDevices  = 3
	DefaultListen   = ":8883"
	DefaultUpstream = "127.0.0.1:1883"
	// CAValidity and LeafValidity are long enough that a development setup does not break
	// within a project's life, short enough that nobody mistakes it for a real PKI.
	CAValidity   = 5 * 365 * 24 * time.Hour
	LeafValidity = 2 * 365 * 24 * time.Hour
)

// DefaultSANs are the server certificate's names unless Options.SANs says otherwise.
var DefaultSANs = []string{"localhost", "127.0.0.1", "::1"}

// Identity is the template mqtls.yaml binds client IDs with: a certificate's CN as it is,
// a pinned key's name behind key-, a PSK identity behind PSKPrefix, so that no device of
// one kind can take another kind's name (what policy.DefaultTemplate gives for the three).
const (
	Identity  = "{cn}key-{name}psk-{psk}"
	PSKPrefix = "psk-"
)

// Files are the names Init writes, relative to Options.Dir.
const (
	CACert        = "ca.pem"
	CAKey         = "ca.key"
	ServerCert    = "server.pem"
	ServerKey     = "server.key"
	PSKFile       = "psk.txt"
	KeysFile      = "keys.txt"
	ConfigFile    = "mqtls.yaml"
	MosquittoConf = "mosquitto.conf"
	MosquittoACL  = "mosquitto.acl"
	DevicesDir    = "devices"
)

// file is one file Init writes: secret ones are written 0600.
type file struct {
	name   string
	data   []byte
	secret bool
}

// Init writes the development PKI and configuration into opts.Dir and prints to w the
// commands to start and try it. It refuses to overwrite: if any file it would write
// exists, it writes nothing.
func Init(w io.Writer, opts Options) error {
	if opts.Dir == "" {
		return errors.New("init needs a directory: mqtls init DIR")
	}
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return fmt.Errorf("init %s: %w", opts.Dir, err)
	}
	if len(opts.SANs) == 0 {
		opts.SANs = DefaultSANs
	}
	if opts.Devices == 0 {
		opts.Devices = DefaultDevices
	}
	if opts.Devices < 0 || opts.Devices > 1000 {
		return fmt.Errorf("--devices %d: want 1 to 1000", opts.Devices)
	}
	if opts.Listen == "" {
		opts.Listen = DefaultListen
	}
	if opts.Upstream == "" {
		opts.Upstream = DefaultUpstream
	}
	if opts.Now.IsZero() {
		opts.Now = time.Now()
	}
	_, listenPort, err := net.SplitHostPort(opts.Listen)
	if err != nil {
		return fmt.Errorf("--listen %q: want host:port or :port: %w", opts.Listen, err)
	}
	if _, _, err := net.SplitHostPort(opts.Upstream); err != nil {
		return fmt.Errorf("--upstream %q: want host:port (Mosquitto's listener): %w", opts.Upstream, err)
	}

	files, devices, err := build(dir, opts)
	if err != nil {
		return err
	}
	var exist []string
	for _, f := range files {
		if _, err := os.Lstat(filepath.Join(dir, f.name)); err == nil || !errors.Is(err, fs.ErrNotExist) {
			exist = append(exist, f.name)
		}
	}
	if len(exist) > 0 {
		return fmt.Errorf("init %s: not overwriting %s: choose an empty directory, or remove them first", dir, strings.Join(exist, ", "))
	}
	for _, d := range []string{dir, filepath.Join(dir, DevicesDir)} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return fmt.Errorf("init: creating %s: %w", d, err)
		}
	}
	for _, f := range files {
		mode := fs.FileMode(0o644)
		if f.secret {
			mode = 0o600
		}
		if err := writeNew(filepath.Join(dir, f.name), f.data, mode); err != nil {
			return fmt.Errorf("init: %w", err)
		}
	}

	host := opts.SANs[0] // the name mosquitto_pub checks the server certificate against
	for _, s := range opts.SANs {
		if net.ParseIP(s) == nil {
			host = s
			break
		}
	}
	p := func(name string) string { return filepath.Join(dir, name) }
	fmt.Fprintf(w, "wrote a development PKI and configuration to %s (not for production)\n\n", dir)
	fmt.Fprintf(w, "start the broker and mqtls:\n  mosquitto -c %s\n  mqtls check --config %s\n  mqtls serve --config %s\n\n",
		p(MosquittoConf), p(ConfigFile), p(ConfigFile))
	fmt.Fprintf(w, "try a device with a certificate:\n")
	for _, d := range devices {
		if d.kind != "cert" {
			continue
		}
		fmt.Fprintf(w, "  mosquitto_pub -h %s -p %s --cafile %s --cert %s --key %s -i %s -t devices/%s/hello -m hello\n",
			host, listenPort, p(CACert), p(d.cert), p(d.key), d.name, d.name)
	}
	fmt.Fprintf(w, "try a device with a pre-shared key:\n")
	for _, d := range devices {
		if d.kind != "psk" {
			continue
		}
		fmt.Fprintf(w, "  mosquitto_pub -h %s -p %s --psk \"$(sed -n 's/^%s://p' %s)\" --psk-identity %s -i %s -t devices/%s/hello -m hello\n",
			host, listenPort, d.name, p(PSKFile), d.name, d.clientID, d.clientID)
	}
	for _, d := range devices {
		if d.kind == "key" {
			fmt.Fprintf(w, "try a device trusted by its key alone:\n  mosquitto_pub -h %s -p %s --cafile %s --cert %s --key %s -i %s -t devices/%s/hello -m hello\n",
				host, listenPort, p(CACert), p(d.cert), p(d.key), d.clientID, d.clientID)
		}
	}
	fmt.Fprintf(w, "a publish outside devices/<client ID>/ is refused by the broker's ACL (%s), and a client ID that is not the device's name by mqtls\n", p(MosquittoACL))
	return nil
}

// device is one device Init made.
type device struct {
	kind      string // "cert", "psk" or "key"
	name      string
	cert, key string // file names, relative to the directory
	clientID  string // the identity mqtls renders for it; "" means name
}

// build makes every file's contents, before anything is written.
func build(dir string, opts Options) ([]file, []device, error) {
	var files []file
	var devices []device
	ca, caKey, caPEM, caKeyPEM, err := newCA(opts.Now)
	if err != nil {
		return nil, nil, err
	}
	files = append(files, file{CACert, caPEM, false}, file{CAKey, caKeyPEM, true})

	srv := &x509.Certificate{
		Subject:     pkix.Name{CommonName: opts.SANs[0], Organization: []string{"mqtls development"}},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, s := range opts.SANs {
		if ip := net.ParseIP(s); ip != nil {
			srv.IPAddresses = append(srv.IPAddresses, ip)
		} else {
			srv.DNSNames = append(srv.DNSNames, s)
		}
	}
	certPEM, keyPEM, err := issue(srv, ca, caKey, opts.Now)
	if err != nil {
		return nil, nil, err
	}
	files = append(files, file{ServerCert, certPEM, false}, file{ServerKey, keyPEM, true})

	var psk strings.Builder
	psk.WriteString("# identity:hexkey, one device a line (Mosquitto's psk_file format); add more with: mqtls psk add --file " + filepath.Join(dir, PSKFile) + " NAME\n")
	for i := 1; i <= opts.Devices; i++ {
		name := fmt.Sprintf("dev-%d", i)
		certPEM, keyPEM, err := issue(&x509.Certificate{
			Subject:     pkix.Name{CommonName: name, Organization: []string{"mqtls development"}},
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		}, ca, caKey, opts.Now)
		if err != nil {
			return nil, nil, err
		}
		d := device{kind: "cert", name: name, cert: filepath.Join(DevicesDir, name+".pem"), key: filepath.Join(DevicesDir, name+".key")}
		files = append(files, file{d.cert, certPEM, false}, file{d.key, keyPEM, true})
		devices = append(devices, d)

		key := make([]byte, 32)
		if _, err := rand.Read(key); err != nil {
			return nil, nil, fmt.Errorf("making a PSK: %w", err)
		}
		id := fmt.Sprintf("sensor-%d", i)
		fmt.Fprintf(&psk, "%s:%s\n", id, hex.EncodeToString(key))
		devices = append(devices, device{kind: "psk", name: id, clientID: PSKPrefix + id})
	}
	files = append(files, file{PSKFile, []byte(psk.String()), true})

	// A certificateless device: a self-signed certificate trusted by its key alone.
	pinned := &x509.Certificate{
		Subject:     pkix.Name{CommonName: "gw-1"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	pinnedPEM, pinnedKeyPEM, err := issue(pinned, nil, nil, opts.Now)
	if err != nil {
		return nil, nil, err
	}
	hash, err := handshake.SPKIHash(pinnedPEM)
	if err != nil {
		return nil, nil, err
	}
	kd := device{kind: "key", name: "gw-1", cert: filepath.Join(DevicesDir, "gw-1.pem"), key: filepath.Join(DevicesDir, "gw-1.key"), clientID: "key-gw-1"}
	files = append(files, file{kd.cert, pinnedPEM, false}, file{kd.key, pinnedKeyPEM, true},
		file{KeysFile, []byte("# name:sha256 of the public key (SubjectPublicKeyInfo), one device a line; add more with: mqtls keys add\n" +
			kd.name + ":" + hash + "\n"), true})
	devices = append(devices, kd)

	files = append(files,
		file{ConfigFile, []byte(configYAML(dir, opts)), false},
		file{MosquittoConf, []byte(mosquittoConf(dir, opts)), false},
		file{MosquittoACL, []byte(aclText), false})
	return files, devices, nil
}

const aclText = `# Each device may publish and subscribe under devices/<its client ID>/ only. mqtls makes
# the client ID the identity the device's certificate or key proved (client_id: enforce in
# mqtls.yaml), so %c is the device, not what it claims.
pattern readwrite devices/%c/#
`

func configYAML(dir string, opts Options) string {
	p := func(name string) string { return filepath.Join(dir, name) }
	return fmt.Sprintf(`# mqtls configuration written by mqtls init: a development setup, not for production.
# Check it with: mqtls check --config %[1]s
listeners:
  - name: mqtts
    listen: %[2]q
    upstream: %[3]q
    tls:
      cert: %[4]s
      key: %[5]s
      # devices with a certificate from this CA (dev-1 ...)
      client_ca: %[6]s
      # devices trusted by their public key alone (gw-1); nothing is chained through them
      client_keys: %[7]s
    psk:
      # devices with a pre-shared key (sensor-1 ...)
      file: %[8]s
    policy:
      # the device's name: a certificate's CN, key- and a pinned key's name (key-gw-1), or
      # psk- and the PSK identity (psk-sensor-1), so that no device of one kind can take
      # another kind's name.
      identity: %[9]q
      # the client ID must be the device's name, so the broker's ACL can trust %%c
      client_id: enforce
`, p(ConfigFile), opts.Listen, opts.Upstream, p(ServerCert), p(ServerKey), p(CACert), p(KeysFile), p(PSKFile), Identity)
}

func mosquittoConf(dir string, opts Options) string {
	host, port, _ := net.SplitHostPort(opts.Upstream)
	if host == "" {
		host = "127.0.0.1"
	}
	return fmt.Sprintf(`# Mosquitto behind mqtls, written by mqtls init: plaintext on the loopback only; mqtls
# terminates TLS and guarantees the client ID, which the ACL's %%c rests on.
listener %s %s
allow_anonymous true
acl_file %s
persistence false
`, port, host, filepath.Join(dir, MosquittoACL))
}

func newCA(now time.Time) (*x509.Certificate, *ecdsa.PrivateKey, []byte, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, nil, nil, fmt.Errorf("making the CA key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "mqtls development CA", Organization: []string{"mqtls development"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(CAValidity),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, nil, nil, fmt.Errorf("making the CA certificate: %w", err)
	}
	ca, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	return ca, key, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), keyPEM, nil
}

// issue signs tmpl with the CA (self-signed when ca is nil) for a new P-256 key. Leaves
// get digitalSignature, the key usage ECDSA handshakes need, and no CA rights.
func issue(tmpl, ca *x509.Certificate, caKey *ecdsa.PrivateKey, now time.Time) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("making a key: %w", err)
	}
	tmpl.SerialNumber = serial()
	tmpl.NotBefore, tmpl.NotAfter = now.Add(-time.Hour), now.Add(LeafValidity)
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	tmpl.BasicConstraintsValid = true
	signer, parent := key, tmpl
	if ca != nil {
		signer, parent = caKey, ca
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, signer)
	if err != nil {
		return nil, nil, fmt.Errorf("making certificate %s: %w", tmpl.Subject.CommonName, err)
	}
	if keyPEM, err = encodeKey(key); err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), keyPEM, nil
}

func encodeKey(key *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encoding a key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic("crypto/rand: " + err.Error()) // never fails on Linux since Go 1.24
	}
	return n
}

// writeNew creates name with mode, failing if it exists (O_EXCL: no race with another
// writer either).
func writeNew(name string, data []byte, mode fs.FileMode) error {
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("writing %s: %w", name, err)
	}
	return f.Close()
}
