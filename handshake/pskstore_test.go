package handshake

import (
	"bytes"
	"encoding/hex"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// Keys used by the PSK file tests. Each is distinctive, so a test can tell that it does not
// appear in an error message.
const (
	hexKey16  = "5ec2e7a1b0c9d8f7e6a5b4c3d2e1f0a9"                                 // 16 bytes
	hexKey32  = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0" // 32 bytes
	rawKey    = "correct-horse-battery-staple"                                     // 28 bytes, not hex
	oddHexKey = "5ec2e7a1b0c9d8f7e6a5b4c3d2e1f0a9b"                                // 33 hex digits
)

func mustHex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParsePSKFormat(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want PSKFormat
	}{
		{"mosquitto", PSKFormatMosquitto},
		{"stunnel", PSKFormatStunnel},
	} {
		got, err := ParsePSKFormat(tc.in)
		if err != nil || got != tc.want || got.String() != tc.in {
			t.Errorf("ParsePSKFormat(%q) = %v (%s), %v; want %v", tc.in, got, got, err, tc.want)
		}
	}
	for _, bad := range []string{"", "Mosquitto", "psk", "openssl"} {
		if _, err := ParsePSKFormat(bad); err == nil || !strings.Contains(err.Error(), "mosquitto or stunnel") {
			t.Errorf("ParsePSKFormat(%q) error %v, want one naming mosquitto or stunnel", bad, err)
		}
	}
}

// TestParsePSKsValid: what a well-formed file yields in each format.
func TestParsePSKsValid(t *testing.T) {
	for _, tc := range []struct {
		name   string
		format PSKFormat
		file   string
		want   map[string][]byte
	}{
		{
			name:   "mosquitto: hex keys, comments, blank lines, spaces, CRLF",
			format: PSKFormatMosquitto,
			file: "# devices of building 7\n" +
				"\n" +
				"dev-1:" + hexKey16 + "\n" +
				"   # an indented comment\n" +
				"  dev-2 : " + strings.ToUpper(hexKey32) + "  \r\n" +
				"\t\n" +
				"dev#3:" + hexKey32, // no final newline; '#' inside an identity is not a comment
			want: map[string][]byte{
				"dev-1": mustHex(t, hexKey16),
				"dev-2": mustHex(t, hexKey32),
				"dev#3": mustHex(t, hexKey32),
			},
		},
		{
			name:   "stunnel: even-length hex is decoded, anything else is raw bytes",
			format: PSKFormatStunnel,
			file: "# stunnel PSKsecrets\n" +
				"hex-1:" + hexKey16 + "\n" +
				"raw-1:" + rawKey + "\n" +
				"odd-1:" + oddHexKey + "\n" + // all hex digits but odd: raw
				"colon-1:a:b:c:d:e:f:g:h:i:j:k:l\n" + // the key may hold colons
				"mixed-1:" + hexKey16 + "x\n", // one non-hex character: raw
			want: map[string][]byte{
				"hex-1":   mustHex(t, hexKey16),
				"raw-1":   []byte(rawKey),
				"odd-1":   []byte(oddHexKey),
				"colon-1": []byte("a:b:c:d:e:f:g:h:i:j:k:l"),
				"mixed-1": []byte(hexKey16 + "x"),
			},
		},
		{
			name:   "empty file",
			format: PSKFormatMosquitto,
			file:   "",
			want:   map[string][]byte{},
		},
		{
			name:   "only comments",
			format: PSKFormatStunnel,
			file:   "#dev-1:" + rawKey + "\n\n# nothing here\n",
			want:   map[string][]byte{},
		},
		{
			name:   "128-byte identity, RFC 4279's limit",
			format: PSKFormatMosquitto,
			file:   strings.Repeat("i", 128) + ":" + hexKey16 + "\n",
			want:   map[string][]byte{strings.Repeat("i", 128): mustHex(t, hexKey16)},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParsePSKs("psk.txt", []byte(tc.file), tc.format)
			if err != nil {
				t.Fatalf("ParsePSKs: %v", err)
			}
			if len(got) != len(tc.want) {
				t.Errorf("got %d identities %q, want %d", len(got), keysOf(got), len(tc.want))
			}
			for id, key := range tc.want {
				if !bytes.Equal(got[id], key) {
					t.Errorf("key of %q = %x, want %x", id, got[id], key)
				}
			}
		})
	}
}

func keysOf(m map[string][]byte) []string {
	var ids []string
	for id := range m {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// TestParsePSKsInvalid: every bad line is reported as file:line, and no error holds a key.
func TestParsePSKsInvalid(t *testing.T) {
	for _, tc := range []struct {
		name    string
		format  PSKFormat
		file    string
		secrets []string // none may appear in the error
		want    []string // each must appear in the error
	}{
		{
			name:    "key shorter than 16 bytes (hex)",
			format:  PSKFormatMosquitto,
			file:    "dev-1:" + hexKey16 + "\n# ok above\ndev-2:5ec2e7a1b0c9d8f7e6a5b4c3d2e1f0\n",
			secrets: []string{"5ec2e7a1b0c9d8f7e6a5b4c3d2e1f0"},
			want:    []string{"psk.txt:3: ", `"dev-2"`, "15 bytes", "at least 16"},
		},
		{
			name:    "key shorter than 16 bytes (stunnel raw)",
			format:  PSKFormatStunnel,
			file:    "dev-1:short-secret-15\n",
			secrets: []string{"short-secret-15"},
			want:    []string{"psk.txt:1: ", "at least 16"},
		},
		{
			name:    "key shorter than 16 bytes once decoded (stunnel hex)",
			format:  PSKFormatStunnel,
			file:    "dev-1:5ec2e7a1b0c9d8f7e6a5b4c3d2e1f0a9\ndev-2:5ec2e7a1b0c9d8f7e6a5b4c3\n", // 24 hex digits: 12 bytes
			secrets: []string{"5ec2e7a1b0c9d8f7e6a5b4c3"},
			want:    []string{"psk.txt:2: ", "12 bytes"},
		},
		{
			name:    "duplicate identity",
			format:  PSKFormatMosquitto,
			file:    "dev-1:" + hexKey16 + "\ndev-2:" + hexKey16 + "\ndev-1:" + hexKey32 + "\n",
			secrets: []string{hexKey16, hexKey32},
			want:    []string{"psk.txt:3: ", `"dev-1"`, "twice"},
		},
		{
			name:    "duplicate identity after trimming",
			format:  PSKFormatStunnel,
			file:    "dev-1:" + rawKey + "\n dev-1 :" + rawKey + "-2\n",
			secrets: []string{rawKey},
			want:    []string{"psk.txt:2: ", "twice"},
		},
		{
			name:    "missing colon",
			format:  PSKFormatMosquitto,
			file:    "dev-1 " + hexKey32 + "\n",
			secrets: []string{hexKey32},
			want:    []string{"psk.txt:1: ", "colon"},
		},
		{
			name:    "missing colon, key alone",
			format:  PSKFormatStunnel,
			file:    "\n\n" + rawKey + "\n",
			secrets: []string{rawKey},
			want:    []string{"psk.txt:3: ", "colon"},
		},
		{
			name:    "empty identity",
			format:  PSKFormatStunnel,
			file:    "  :" + rawKey + "\n",
			secrets: []string{rawKey},
			want:    []string{"psk.txt:1: ", "empty identity"},
		},
		{
			name:   "empty key",
			format: PSKFormatMosquitto,
			file:   "dev-1:   \n",
			want:   []string{"psk.txt:1: ", `"dev-1"`, "empty key"},
		},
		{
			name:    "identity over 128 bytes",
			format:  PSKFormatMosquitto,
			file:    strings.Repeat("i", 129) + ":" + hexKey16 + "\n",
			secrets: []string{hexKey16},
			want:    []string{"psk.txt:1: ", "129 bytes"},
		},
		{
			name:    "odd-length hex in mosquitto format",
			format:  PSKFormatMosquitto,
			file:    "dev-1:" + oddHexKey + "\n",
			secrets: []string{oddHexKey, hexKey16},
			want:    []string{"psk.txt:1: ", `"dev-1"`, "hex"},
		},
		{
			name:    "not hex in mosquitto format",
			format:  PSKFormatMosquitto,
			file:    "dev-1:" + rawKey + "\n",
			secrets: []string{rawKey, "horse"},
			want:    []string{"psk.txt:1: ", "hex"},
		},
		{
			name:   "every bad line is reported",
			format: PSKFormatMosquitto,
			file: "dev-1:" + hexKey16 + "\n" + // 1 ok
				"dev-2\n" + // 2 no colon
				"# comment\n" + // 3
				"dev-3:" + oddHexKey + "\n" + // 4 odd hex
				"dev-1:" + hexKey32 + "\n", // 5 duplicate
			secrets: []string{hexKey16, hexKey32, oddHexKey},
			want:    []string{"psk.txt:2: ", "psk.txt:4: ", "psk.txt:5: "},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			keys, err := ParsePSKs("psk.txt", []byte(tc.file), tc.format)
			if err == nil {
				t.Fatalf("ParsePSKs succeeded with %q, want an error", keysOf(keys))
			}
			if keys != nil {
				t.Errorf("ParsePSKs returned keys %q along with its error", keysOf(keys))
			}
			msg := err.Error()
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q lacks %q", msg, w)
				}
			}
			for _, s := range tc.secrets {
				if strings.Contains(strings.ToLower(msg), strings.ToLower(s)) {
					t.Errorf("error %q contains the key %q", msg, s)
				}
			}
			for _, line := range strings.Split(msg, "\n") {
				if !strings.HasPrefix(line, "psk.txt:") {
					t.Errorf("error line %q does not start with file:line", line)
				}
			}
		})
	}
}

// TestParsePSKsLongLine: a line over the scanner's limit is an error naming the file, and
// does not echo the line.
func TestParsePSKsLongLine(t *testing.T) {
	secret := strings.Repeat("ab", 40<<10)
	_, err := ParsePSKs("psk.txt", []byte("dev-1:"+secret+"\n"), PSKFormatStunnel)
	if want := "psk.txt:1: line longer than 65536 bytes: is this a PSK file?"; err == nil || err.Error() != want {
		t.Fatalf("error %v, want %q", err, want)
	}
	if strings.Contains(err.Error(), "abababab") {
		t.Errorf("error %q contains the key", err)
	}
}

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestPSKStoreLoad: Load replaces the keys only when the whole file is valid; a bad or
// missing file leaves the old keys serving.
func TestPSKStoreLoad(t *testing.T) {
	var zero PSKStore
	if _, ok := zero.Lookup("dev-1"); ok || zero.Len() != 0 || zero.Identities() != nil {
		t.Errorf("zero PSKStore is not empty")
	}

	dir := t.TempDir()
	file := filepath.Join(dir, "psk.txt")
	writeFile(t, file, "dev-2:"+hexKey32+"\ndev-1:"+hexKey16+"\n")
	s, err := LoadPSKFile(file, PSKFormatMosquitto)
	if err != nil {
		t.Fatal(err)
	}
	wantStore := func(ids []string, keys map[string]string) {
		t.Helper()
		if got := s.Identities(); !slices.Equal(got, ids) {
			t.Errorf("Identities() = %q, want %q", got, ids)
		}
		if s.Len() != len(ids) {
			t.Errorf("Len() = %d, want %d", s.Len(), len(ids))
		}
		for id, k := range keys {
			got, ok := s.Lookup(id)
			if !ok || !bytes.Equal(got, mustHex(t, k)) {
				t.Errorf("Lookup(%q) = %x, %v; want %s", id, got, ok, k)
			}
		}
	}
	wantStore([]string{"dev-1", "dev-2"}, map[string]string{"dev-1": hexKey16, "dev-2": hexKey32})
	for _, id := range []string{"dev-3", "DEV-1", "dev-1 ", ""} {
		if _, ok := s.Lookup(id); ok {
			t.Errorf("Lookup(%q) found a key", id)
		}
	}

	// A bad file: the error names file:line, and the old keys stay.
	writeFile(t, file, "dev-1:"+hexKey32+"\ndev-3:"+oddHexKey+"\n")
	err = s.Load(file, PSKFormatMosquitto)
	if err == nil || !strings.Contains(err.Error(), file+":2: ") {
		t.Fatalf("Load of a bad file: %v, want an error naming %s:2", err, file)
	}
	if strings.Contains(err.Error(), oddHexKey) || strings.Contains(err.Error(), hexKey32) {
		t.Errorf("error %q contains a key", err)
	}
	wantStore([]string{"dev-1", "dev-2"}, map[string]string{"dev-1": hexKey16, "dev-2": hexKey32})

	// A missing file: the same.
	missing := filepath.Join(dir, "gone.txt")
	if err := s.Load(missing, PSKFormatMosquitto); err == nil || !strings.Contains(err.Error(), missing) {
		t.Errorf("Load of a missing file: %v, want an error naming %s", err, missing)
	}
	wantStore([]string{"dev-1", "dev-2"}, map[string]string{"dev-1": hexKey16, "dev-2": hexKey32})

	// The same file in the wrong format is refused as a whole, too.
	writeFile(t, file, "dev-9:"+rawKey+"\n")
	if err := s.Load(file, PSKFormatMosquitto); err == nil {
		t.Errorf("Load of a stunnel raw key as mosquitto succeeded")
	}
	wantStore([]string{"dev-1", "dev-2"}, nil)

	// A good file replaces the whole set: dev-2 is gone.
	writeFile(t, file, "dev-1:"+hexKey32+"\ndev-9:"+rawKey+"\n")
	if err := s.Load(file, PSKFormatStunnel); err != nil {
		t.Fatal(err)
	}
	wantStore([]string{"dev-1", "dev-9"}, map[string]string{"dev-1": hexKey32, "dev-9": hex.EncodeToString([]byte(rawKey))})
	if _, ok := s.Lookup("dev-2"); ok {
		t.Errorf("dev-2 is still in the store after a reload without it")
	}

	// LoadPSKFile of a bad file returns no store.
	writeFile(t, file, ":"+hexKey16+"\n")
	if s, err := LoadPSKFile(file, PSKFormatMosquitto); err == nil || s != nil {
		t.Errorf("LoadPSKFile of a bad file = %v, %v; want nil and an error", s, err)
	}
}

// TestPSKStoreReload: Reload reads the file LoadPSKFile read, in its format, and keeps the
// old keys when the file has become bad or gone.
func TestPSKStoreReload(t *testing.T) {
	if err := (&PSKStore{}).Reload(); err == nil {
		t.Error("Reload of a store not loaded from a file succeeded")
	}
	dir := t.TempDir()
	file := filepath.Join(dir, "psk.secrets")
	writeFile(t, file, "raw-1:"+rawKey+"\n")
	s, err := LoadPSKFile(file, PSKFormatStunnel)
	if err != nil {
		t.Fatal(err)
	}
	if s.File() != file || !s.Has("raw-1") || s.Has("raw-2") {
		t.Fatalf("File() = %q, Has(raw-1) = %v, Has(raw-2) = %v", s.File(), s.Has("raw-1"), s.Has("raw-2"))
	}

	// Still read as stunnel's format: a raw key is fine.
	writeFile(t, file, "raw-2:"+rawKey+"-2\n")
	if err := s.Reload(); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	if s.Has("raw-1") || !s.Has("raw-2") {
		t.Errorf("after Reload: identities %q, want [raw-2]", s.Identities())
	}

	writeFile(t, file, "raw-3:short\n")
	if err := s.Reload(); err == nil || !strings.Contains(err.Error(), file+":1: ") || strings.Contains(err.Error(), "short") {
		t.Errorf("Reload of a bad file: %v, want an error naming %s:1 without the key", err, file)
	}
	if err := os.Remove(file); err != nil {
		t.Fatal(err)
	}
	if err := s.Reload(); err == nil {
		t.Error("Reload of a removed file succeeded")
	}
	if k, ok := s.Lookup("raw-2"); !ok || string(k) != rawKey+"-2" || s.Len() != 1 {
		t.Errorf("after failed reloads: identities %q, want raw-2 with its key", s.Identities())
	}
}

// FuzzParsePSKs: ParsePSKs never panics; what it accepts holds only usable keys and
// identities, survives a round trip through the file format, and what it refuses is
// reported line by line.
func FuzzParsePSKs(f *testing.F) {
	f.Add([]byte("dev-1:"+hexKey16+"\n# comment\n\ndev-2:"+hexKey32), false)
	f.Add([]byte("raw-1:"+rawKey+"\r\nodd-1:"+oddHexKey+"\n"), true)
	f.Add([]byte("dev-1:"+hexKey16+"\ndev-1:"+hexKey16+"\n:x\nnocolon\ndev-4:00\n"), false)
	f.Add([]byte(" a : b:c:d:e:f:g:h:i:j:k:l:m:n:o:p:q \n#x:y\n"), true)
	f.Add([]byte("\xff\xfe:"+hexKey16+"\n"), false)
	f.Fuzz(func(t *testing.T, data []byte, stunnel bool) {
		format := PSKFormatMosquitto
		if stunnel {
			format = PSKFormatStunnel
		}
		keys, err := ParsePSKs("fuzz.psk", data, format)
		if err != nil {
			if keys != nil {
				t.Fatalf("keys %q returned with error %v", keysOf(keys), err)
			}
			for _, line := range strings.Split(err.Error(), "\n") {
				if !strings.HasPrefix(line, "fuzz.psk:") && !strings.HasPrefix(line, "reading PSK file fuzz.psk") {
					t.Fatalf("error line %q does not name the file", line)
				}
			}
			return
		}
		var file strings.Builder
		for _, id := range keysOf(keys) {
			key := keys[id]
			switch {
			case len(key) < MinPSKLen:
				t.Fatalf("identity %q has a %d-byte key", id, len(key))
			case id == "" || len(id) > maxPSKIdentityLen:
				t.Fatalf("identity %q of %d bytes accepted", id, len(id))
			case strings.ContainsAny(id, ":\n") || strings.TrimSpace(id) != id || id[0] == '#':
				t.Fatalf("identity %q cannot have come from one line", id)
			}
			file.WriteString(id + ":" + hex.EncodeToString(key) + "\n")
		}
		// Hex keys read the same in both formats.
		for _, f := range []PSKFormat{PSKFormatMosquitto, PSKFormatStunnel} {
			again, err := ParsePSKs("again.psk", []byte(file.String()), f)
			if err != nil {
				t.Fatalf("re-reading what was accepted as %s: %v", f, err)
			}
			if len(again) != len(keys) {
				t.Fatalf("round trip as %s: %d identities, want %d", f, len(again), len(keys))
			}
			for id, key := range keys {
				if !bytes.Equal(again[id], key) {
					t.Fatalf("round trip as %s: key of %q changed", f, id)
				}
			}
		}
	})
}

// TestParsePSKsErrorBound: a file that is not a PSK file at all gives a bounded error: the
// first bad lines, then how many more.
func TestParsePSKsErrorBound(t *testing.T) {
	_, err := ParsePSKs("psk.txt", []byte(strings.Repeat("no colon here\n", 1000)), PSKFormatMosquitto)
	if err == nil {
		t.Fatal("ParsePSKs accepted 1,000 bad lines")
	}
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != maxPSKErrors+1 {
		t.Errorf("%d error lines for 1,000 bad lines, want %d", len(lines), maxPSKErrors+1)
	}
	if !strings.HasPrefix(lines[0], "psk.txt:1: ") || !strings.HasPrefix(lines[maxPSKErrors-1], "psk.txt:20: ") {
		t.Errorf("the first lines do not name lines 1 to 20: %q ... %q", lines[0], lines[maxPSKErrors-1])
	}
	if want := "psk.txt: 980 more bad lines not shown (1000 in all)"; lines[len(lines)-1] != want {
		t.Errorf("last error line %q, want %q", lines[len(lines)-1], want)
	}
}
