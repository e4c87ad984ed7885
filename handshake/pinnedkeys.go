package handshake

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"unicode"
	"unicode/utf8"
)

// A pinned-key file lists the devices trusted by their public key alone, one per line:
//
//	# name:sha256 of the DER SubjectPublicKeyInfo, in hex
//	dev-1:5f0c3d...e1 (64 hex digits)
//
// It mirrors Mosquitto's PSK file (identity:hexkey): blank lines and lines starting with #
// are skipped, and the part before the first colon is the name. A name is what
// Identity.KeyName carries (the {name} template field): 1 to 128 bytes of UTF-8 with no
// space, control character, colon or MQTT topic special (/ + #), since it ends up in client
// IDs and ACL patterns. Names are unique and so are keys: one key, one device.
//
// The hash is the one `openssl x509 -in dev.crt -pubkey -noout | openssl pkey -pubin
// -outform DER | sha256sum` prints, and SPKIHash computes.

const (
	maxKeyNameLen = 128
	spkiHashHex   = 2 * sha256.Size
)

// PinnedKey is one line of a pinned-key file.
type PinnedKey struct {
	Name string
	Hash string // lower-case hex SHA-256 of the DER SubjectPublicKeyInfo
}

// KeyStore is a parsed pinned-key file. It is immutable: a TLSServer reload reads the file
// again into a new one and swaps it in with the rest of its material, so handshakes never
// see half a file and established sessions are not touched.
type KeyStore struct {
	file   string
	byHash map[[sha256.Size]byte]string
	names  map[string]struct{}
}

// LoadKeyFile reads and parses the pinned-key file.
func LoadKeyFile(file string) (*KeyStore, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("reading pinned-key file: %w", err)
	}
	keys, err := ParseKeys(file, data)
	if err != nil {
		return nil, err
	}
	s := &KeyStore{file: file, byHash: make(map[[sha256.Size]byte]string, len(keys)), names: make(map[string]struct{}, len(keys))}
	for _, k := range keys {
		var h [sha256.Size]byte
		_, _ = hex.Decode(h[:], []byte(k.Hash)) // ParseKeys checked it
		s.byHash[h] = k.Name
		s.names[k.Name] = struct{}{}
	}
	return s, nil
}

// ParseKeys parses the contents of the pinned-key file called name (see the format above).
// Each error starts "name:line: "; the first maxPSKErrors bad lines are reported.
func ParseKeys(name string, data []byte) ([]PinnedKey, error) {
	var keys []PinnedKey
	names, hashes := map[string]int{}, map[string]int{}
	err := scanLines(name, "pinned-key", data, func(line string, n int) error {
		k, err := parseKeyLine(line)
		if err != nil {
			return err
		}
		if first, dup := names[k.Name]; dup {
			return fmt.Errorf("name %q is already on line %d; each device needs its own name", k.Name, first)
		}
		if first, dup := hashes[k.Hash]; dup {
			return fmt.Errorf("the key of %q is already on line %d; one key is one device", k.Name, first)
		}
		names[k.Name], hashes[k.Hash] = n, n
		keys = append(keys, k)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return keys, nil
}

func parseKeyLine(line string) (PinnedKey, error) {
	name, hash, ok := strings.Cut(line, ":")
	name, hash = strings.TrimSpace(name), strings.ToLower(strings.TrimSpace(hash))
	if !ok {
		return PinnedKey{}, errors.New("want name:sha256hex, found no colon")
	}
	if err := checkKeyName(name); err != nil {
		return PinnedKey{}, err
	}
	if len(hash) != spkiHashHex || !hexDigits(hash) {
		return PinnedKey{}, fmt.Errorf("%q: the key hash must be %d hex digits (the SHA-256 of the public key; mqtls keys add computes it)", name, spkiHashHex)
	}
	return PinnedKey{Name: name, Hash: hash}, nil
}

// checkKeyName refuses a name that could not safely be a client ID or an ACL pattern's %c.
func checkKeyName(name string) error {
	switch {
	case name == "":
		return errors.New("empty name before the colon")
	case len(name) > maxKeyNameLen:
		return fmt.Errorf("name is %d bytes, over the %d allowed", len(name), maxKeyNameLen)
	case !utf8.ValidString(name):
		return errors.New("name is not valid UTF-8")
	}
	for _, r := range name {
		if unicode.IsSpace(r) || unicode.IsControl(r) || strings.ContainsRune(":/+#", r) || r == utf8.RuneError {
			return fmt.Errorf("name %q contains %q: names may not hold spaces, control characters, ':' or the MQTT topic specials / + #", name, r)
		}
	}
	return nil
}

// File returns the file the store was read from. The methods of KeyStore accept a nil
// store (a listener without pinned keys): it holds nothing.
func (s *KeyStore) File() string {
	if s == nil {
		return ""
	}
	return s.file
}

// Len returns how many keys are pinned.
func (s *KeyStore) Len() int {
	if s == nil {
		return 0
	}
	return len(s.byHash)
}

// Has reports whether a key is pinned under name.
func (s *KeyStore) Has(name string) bool {
	if s == nil {
		return false
	}
	_, ok := s.names[name]
	return ok
}

// Lookup returns the name pinned for the certificate's public key. The map is keyed by the
// key's hash, which is not secret.
func (s *KeyStore) Lookup(cert *x509.Certificate) (string, bool) {
	if s == nil {
		return "", false
	}
	name, ok := s.byHash[sha256.Sum256(cert.RawSubjectPublicKeyInfo)]
	return name, ok
}

// Keys returns the pinned keys sorted by name, for `mqtls keys list`.
func (s *KeyStore) Keys() []PinnedKey {
	if s == nil {
		return nil
	}
	keys := make([]PinnedKey, 0, len(s.byHash))
	for h, name := range s.byHash {
		keys = append(keys, PinnedKey{Name: name, Hash: hex.EncodeToString(h[:])})
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i].Name < keys[j].Name })
	return keys
}

// SPKIHash returns the lower-case hex SHA-256 of the public key in data: a PEM certificate
// ("CERTIFICATE"), a PEM public key ("PUBLIC KEY", as `openssl pkey -pubout` writes it, or
// PKCS #1 "RSA PUBLIC KEY"). Exactly one such block is allowed: a chain or a bundle would
// leave which key is meant to a guess.
func SPKIHash(data []byte) (string, error) {
	var spki []byte
	found := 0
	for rest := data; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		switch block.Type {
		case "CERTIFICATE":
			cert, err := x509.ParseCertificate(block.Bytes)
			if err != nil {
				return "", fmt.Errorf("parsing certificate: %w", err)
			}
			spki = cert.RawSubjectPublicKeyInfo
		case "PUBLIC KEY":
			if _, err := x509.ParsePKIXPublicKey(block.Bytes); err != nil {
				return "", fmt.Errorf("parsing public key: %w", err)
			}
			spki = block.Bytes
		case "RSA PUBLIC KEY":
			pub, err := x509.ParsePKCS1PublicKey(block.Bytes)
			if err != nil {
				return "", fmt.Errorf("parsing RSA public key: %w", err)
			}
			if spki, err = x509.MarshalPKIXPublicKey(pub); err != nil {
				return "", fmt.Errorf("encoding RSA public key: %w", err)
			}
		default:
			if strings.Contains(block.Type, "PRIVATE KEY") {
				return "", errors.New("this is a private key: give the device's certificate or public key (openssl pkey -in KEY -pubout)")
			}
			return "", fmt.Errorf("PEM block %q is neither a certificate nor a public key", block.Type)
		}
		found++
	}
	switch found {
	case 0:
		return "", errors.New("no PEM certificate or public key found")
	case 1:
		sum := sha256.Sum256(spki)
		return hex.EncodeToString(sum[:]), nil
	}
	return "", fmt.Errorf("%d certificates or keys found: give exactly one", found)
}

// AddKey appends "name:hash" to the pinned-key file, creating it (mode 0600) if needed. It
// refuses a file that does not parse, a name already there and a key already there, so
// the file stays loadable. hash is what SPKIHash returned.
func AddKey(file, name, hash string) error {
	hash = strings.ToLower(hash)
	if _, err := parseKeyLine(name + ":" + hash); err != nil {
		return fmt.Errorf("adding to %s: %w", file, err)
	}
	f, err := os.OpenFile(file, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("opening pinned-key file: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(f)
	if err != nil {
		return fmt.Errorf("reading pinned-key file %s: %w", file, err)
	}
	keys, err := ParseKeys(file, data)
	if err != nil {
		return fmt.Errorf("not adding to a file that does not load: %w", err)
	}
	for _, k := range keys {
		switch {
		case k.Name == name:
			return fmt.Errorf("%s already pins a key for %q: remove that line first to replace it", file, name)
		case k.Hash == hash:
			return fmt.Errorf("%s already pins this key, as %q: one key is one device", file, k.Name)
		}
	}
	line := name + ":" + hash + "\n"
	if len(data) > 0 && data[len(data)-1] != '\n' {
		line = "\n" + line
	}
	// One write at the end of the file. A reload that reads it mid-write finds a bad last
	// line and keeps the keys it had.
	if _, err := f.Seek(0, io.SeekEnd); err != nil {
		return fmt.Errorf("writing pinned-key file %s: %w", file, err)
	}
	if _, err := f.WriteString(line); err != nil {
		return fmt.Errorf("writing pinned-key file %s: %w", file, err)
	}
	return f.Close()
}
