package handshake

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync/atomic"
)

// PSKFormat is the syntax of a PSK file.
type PSKFormat uint8

// PSK file formats.
const (
	// PSKFormatMosquitto is Mosquitto's psk_file: one "identity:hexkey" per line, the key
	// in hexadecimal.
	PSKFormatMosquitto PSKFormat = iota
	// PSKFormatStunnel is stunnel's PSKsecrets: one "identity:key" per line. A key made
	// only of hex digits, of even length, is decoded to binary; any other key is used as
	// its raw bytes (stunnel 5.68's rule).
	PSKFormatStunnel
)

// ParsePSKFormat parses "mosquitto" or "stunnel".
func ParsePSKFormat(s string) (PSKFormat, error) {
	switch s {
	case "mosquitto":
		return PSKFormatMosquitto, nil
	case "stunnel":
		return PSKFormatStunnel, nil
	}
	return 0, fmt.Errorf("unknown PSK file format %q: want mosquitto or stunnel", s)
}

func (f PSKFormat) String() string {
	if f == PSKFormatStunnel {
		return "stunnel"
	}
	return "mosquitto"
}

// MinPSKLen is the shortest key accepted: 128 bits, as stunnel requires.
const MinPSKLen = 16

// maxPSKIdentityLen is RFC 4279 §5.3's limit.
const maxPSKIdentityLen = 128

// PSKStore holds one secret per device identity. Load replaces the whole set at once, so
// handshakes never see half a file; it is safe for concurrent use.
type PSKStore struct {
	keys atomic.Pointer[map[string][]byte]
	// file and format are what LoadPSKFile read, for Reload.
	file   string
	format PSKFormat
}

// LoadPSKFile reads file in format f into a new store.
func LoadPSKFile(file string, f PSKFormat) (*PSKStore, error) {
	s := &PSKStore{file: file, format: f}
	if err := s.Load(file, f); err != nil {
		return nil, err
	}
	return s, nil
}

// Reload reads the file LoadPSKFile read again; on error the old keys stay.
func (s *PSKStore) Reload() error {
	if s.file == "" {
		return errors.New("PSK store was not loaded from a file")
	}
	return s.Load(s.file, s.format)
}

// File returns the file the store was loaded from.
func (s *PSKStore) File() string { return s.file }

// Has reports whether identity is in the store.
func (s *PSKStore) Has(identity string) bool {
	_, ok := s.Lookup(identity)
	return ok
}

// Load reads file and, only if all of it is valid, replaces the store's keys with it.
// Errors name the file and line and never contain a key.
func (s *PSKStore) Load(file string, f PSKFormat) error {
	data, err := os.ReadFile(file)
	if err != nil {
		return fmt.Errorf("reading PSK file: %w", err)
	}
	keys, err := ParsePSKs(file, data, f)
	if err != nil {
		return err
	}
	s.keys.Store(&keys)
	return nil
}

const (
	// maxPSKErrors bounds the bad lines one error reports: a file that is not a PSK file
	// at all would otherwise give one line of error per line of file.
	maxPSKErrors = 20
	maxPSKLine   = 64 << 10
)

// ParsePSKs parses the contents of the PSK file called name. Blank lines and lines starting
// with # are skipped. Bad lines are reported, each error starting "name:line: " (the first
// maxPSKErrors of them, then how many more), and no error contains a key.
func ParsePSKs(name string, data []byte, f PSKFormat) (map[string][]byte, error) {
	keys := map[string][]byte{}
	err := scanLines(name, "PSK", data, func(line string, _ int) error {
		id, key, err := parsePSKLine(line, f)
		if err != nil {
			return err
		}
		if _, dup := keys[id]; dup {
			return fmt.Errorf("identity %q appears twice; each device needs exactly one key", id)
		}
		keys[id] = key
		return nil
	})
	if err != nil {
		return nil, err
	}
	return keys, nil
}

// scanLines calls fn with each line of the file called name, trimmed, skipping blank lines
// and lines starting with #. The errors fn returns are collected, each prefixed "name:line: "
// (the first maxPSKErrors of them, then how many more), and returned together.
func scanLines(name, kind string, data []byte, fn func(line string, n int) error) error {
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), maxPSKLine)
	var errs []error
	bad := 0
	n := 1
	for ; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		if err := fn(line, n); err != nil {
			if bad++; bad <= maxPSKErrors {
				errs = append(errs, fmt.Errorf("%s:%d: %w", name, n, err))
			}
		}
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return fmt.Errorf("%s:%d: line longer than %d bytes: is this a %s file?", name, n, maxPSKLine, kind)
		}
		return fmt.Errorf("reading %s file %s: %w", kind, name, err)
	}
	if bad > maxPSKErrors {
		errs = append(errs, fmt.Errorf("%s: %d more bad lines not shown (%d in all)", name, bad-maxPSKErrors, bad))
	}
	return errors.Join(errs...)
}

func parsePSKLine(line string, f PSKFormat) (string, []byte, error) {
	id, secret, ok := strings.Cut(line, ":")
	id = strings.TrimSpace(id)
	secret = strings.TrimSpace(secret)
	switch {
	case !ok:
		return "", nil, fmt.Errorf("want identity:key, found no colon")
	case id == "":
		return "", nil, errors.New("empty identity before the colon")
	case len(id) > maxPSKIdentityLen:
		return "", nil, fmt.Errorf("identity is %d bytes, over the %d RFC 4279 allows", len(id), maxPSKIdentityLen)
	case secret == "":
		return "", nil, fmt.Errorf("identity %q has an empty key", id)
	}
	var key []byte
	if hexDigits(secret) && len(secret)%2 == 0 {
		key, _ = hex.DecodeString(secret)
	} else if f == PSKFormatMosquitto {
		return "", nil, fmt.Errorf("identity %q: the key is not an even number of hex digits (Mosquitto's format is identity:hexkey)", id)
	} else {
		key = []byte(secret)
	}
	if len(key) < MinPSKLen {
		return "", nil, fmt.Errorf("identity %q: the key is %d bytes, want at least %d (mqtls psk add makes 32-byte keys)", id, len(key), MinPSKLen)
	}
	return id, key, nil
}

func hexDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return true
}

// Lookup returns the key of identity. The identity is matched exactly; the map lookup is
// over identities, which are not secret.
func (s *PSKStore) Lookup(identity string) ([]byte, bool) {
	m := s.keys.Load()
	if m == nil {
		return nil, false
	}
	k, ok := (*m)[identity]
	return k, ok
}

// Identities returns the identities in the store, sorted. Never the keys.
func (s *PSKStore) Identities() []string {
	m := s.keys.Load()
	if m == nil {
		return nil
	}
	ids := make([]string, 0, len(*m))
	for id := range *m {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// Len returns how many identities are loaded.
func (s *PSKStore) Len() int {
	if m := s.keys.Load(); m != nil {
		return len(*m)
	}
	return 0
}
