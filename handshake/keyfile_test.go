package handshake_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mqtls/mqtls/handshake"
)

const (
	hashA = "5f0c3d2b9a8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a"
	hashB = "0000000000000000000000000000000000000000000000000000000000000001"
)

func TestParseKeys(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		want []handshake.PinnedKey
		err  []string // substrings of the error; nil: no error
	}{
		{"two devices, comments, blanks, spaces, upper case", "# fleet\n\n dev-1 : " + strings.ToUpper(hashA) + "\r\ndev-2:" + hashB,
			[]handshake.PinnedKey{{Name: "dev-1", Hash: hashA}, {Name: "dev-2", Hash: hashB}}, nil},
		{"empty file", "", nil, nil},
		{"no colon", "dev-1 " + hashA, nil, []string{"keys:1:", "no colon"}},
		{"empty name", ":" + hashA, nil, []string{"keys:1:", "empty name"}},
		{"short hash", "dev-1:" + hashA[:62], nil, []string{"keys:1:", "64 hex digits"}},
		{"sha256: prefix is not the format", "dev-1:sha256:" + hashA, nil, []string{"64 hex digits"}},
		{"not hex", "dev-1:" + strings.Repeat("g", 64), nil, []string{"64 hex digits"}},
		{"name with a slash", "a/b:" + hashA, nil, []string{"keys:1:", `'/'`}},
		{"name with a plus", "a+b:" + hashA, nil, []string{`'+'`}},
		{"name with a hash", "a#b:" + hashA, nil, []string{`'#'`}},
		{"name with a space", "a b:" + hashA, nil, []string{`' '`}},
		{"name with a control character", "a\x01b:" + hashA, nil, []string{`'\x01'`}},
		{"name not UTF-8", "a\xffb:" + hashA, nil, []string{"UTF-8"}},
		{"name too long", strings.Repeat("n", 129) + ":" + hashA, nil, []string{"129 bytes"}},
		{"duplicate name", "dev-1:" + hashA + "\ndev-1:" + hashB, nil, []string{"keys:2:", "already on line 1"}},
		{"duplicate key", "dev-1:" + hashA + "\ndev-2:" + hashA, nil, []string{"keys:2:", "one key is one device"}},
		{"every bad line is named", "x\ny\n", nil, []string{"keys:1:", "keys:2:"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := handshake.ParseKeys("keys", []byte(tc.in))
			if tc.err == nil {
				if err != nil {
					t.Fatal(err)
				}
				if len(got) != len(tc.want) {
					t.Fatalf("got %v, want %v", got, tc.want)
				}
				for i := range got {
					if got[i] != tc.want[i] {
						t.Errorf("key %d = %v, want %v", i, got[i], tc.want[i])
					}
				}
				return
			}
			if err == nil {
				t.Fatalf("parsed %v, want an error", got)
			}
			for _, s := range tc.err {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not contain %q", err, s)
				}
			}
		})
	}
}

func TestLoadKeyFile(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "keys")
	if _, err := handshake.LoadKeyFile(file); err == nil || !strings.Contains(err.Error(), file) {
		t.Errorf("missing file: %v, want an error naming it", err)
	}
	if err := os.WriteFile(file, []byte("b:"+hashB+"\na:"+hashA+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ks, err := handshake.LoadKeyFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if ks.Len() != 2 || !ks.Has("a") || ks.Has("c") || ks.File() != file {
		t.Errorf("store: len %d, has a %v, has c %v, file %q", ks.Len(), ks.Has("a"), ks.Has("c"), ks.File())
	}
	if got := ks.Keys(); len(got) != 2 || got[0] != (handshake.PinnedKey{Name: "a", Hash: hashA}) || got[1].Name != "b" {
		t.Errorf("Keys() = %v, want a then b", got)
	}
}

func TestSPKIHash(t *testing.T) {
	dev := mustSelfSigned(t, "dev-1")
	other := mustSelfSigned(t, "dev-2")
	fromCert, err := handshake.SPKIHash(dev.CertPEM)
	if err != nil {
		t.Fatal(err)
	}
	if len(fromCert) != 64 || strings.ToLower(fromCert) != fromCert {
		t.Errorf("hash %q is not 64 lower-case hex digits", fromCert)
	}
	if fromKey, err := handshake.SPKIHash(dev.PublicKeyPEM()); err != nil || fromKey != fromCert {
		t.Errorf("public key PEM hash %q, %v; want the certificate's %q", fromKey, err, fromCert)
	}
	withText := append([]byte("subject=CN = dev-1\n"), dev.CertPEM...)
	if h, err := handshake.SPKIHash(withText); err != nil || h != fromCert {
		t.Errorf("PEM after text: %q, %v", h, err)
	}
	for _, tc := range []struct {
		name string
		in   []byte
		err  string
	}{
		{"private key", dev.KeyPEM, "private key"},
		{"two certificates", append(append([]byte{}, dev.CertPEM...), other.CertPEM...), "exactly one"},
		{"nothing", []byte("hello"), "no PEM"},
		{"a CRL", []byte("-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n"), "neither"},
		{"bad certificate", []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), "parsing certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if h, err := handshake.SPKIHash(tc.in); err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("SPKIHash = %q, %v; want an error containing %q", h, err, tc.err)
			}
		})
	}
}

func TestAddKey(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "keys")
	if err := handshake.AddKey(file, "dev-1", strings.ToUpper(hashA)); err != nil {
		t.Fatal(err)
	}
	if mode, loose, err := handshake.LoosePermissions(file); err != nil || loose || mode != 0o600 {
		t.Errorf("new file mode %v (loose %v, %v), want 0600", mode, loose, err)
	}
	for _, tc := range []struct {
		name, key, hash, err string
	}{
		{"same name", "dev-1", hashB, "already pins a key for \"dev-1\""},
		{"same key", "dev-2", hashA, "already pins this key, as \"dev-1\""},
		{"bad name", "a/b", hashB, `'/'`},
		{"bad hash", "dev-2", "abc", "64 hex digits"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := handshake.AddKey(file, tc.key, tc.hash); err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("AddKey = %v, want an error containing %q", err, tc.err)
			}
		})
	}
	// A file without a final newline gets one before the new line.
	if err := os.WriteFile(file, []byte("dev-1:"+hashA), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := handshake.AddKey(file, "dev-2", hashB); err != nil {
		t.Fatal(err)
	}
	if data, _ := os.ReadFile(file); string(data) != "dev-1:"+hashA+"\ndev-2:"+hashB+"\n" {
		t.Errorf("file is %q", data)
	}
	if err := os.WriteFile(file, []byte("broken\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := handshake.AddKey(file, "dev-3", hashB); err == nil || !strings.Contains(err.Error(), "does not load") {
		t.Errorf("AddKey to a broken file: %v", err)
	}
}

func TestLoosePermissions(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		mode  os.FileMode
		loose bool
	}{{0o600, false}, {0o400, false}, {0o640, true}, {0o644, true}, {0o604, true}, {0o620, true}, {0o602, true}} {
		file := filepath.Join(dir, tc.mode.String())
		if err := os.WriteFile(file, nil, tc.mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(file, tc.mode); err != nil { // umask may have narrowed it
			t.Fatal(err)
		}
		mode, loose, err := handshake.LoosePermissions(file)
		if err != nil || mode != tc.mode || loose != tc.loose {
			t.Errorf("%v: mode %v, loose %v, %v; want loose %v", tc.mode, mode, loose, err, tc.loose)
		}
	}
	if _, _, err := handshake.LoosePermissions(filepath.Join(dir, "missing")); err == nil {
		t.Error("no error for a missing file")
	}
}

func FuzzParseKeys(f *testing.F) {
	for _, s := range []string{"", "dev-1:" + hashA, "# c\n\na:" + hashA + "\nb:" + hashB, "a:" + hashA + "\na:" + hashA, "x", "a/b:" + hashA, ":::\n\xff:"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		keys, err := handshake.ParseKeys("fuzz", data)
		if err != nil {
			if keys != nil {
				t.Fatal("keys and an error")
			}
			return
		}
		names, hashes := map[string]bool{}, map[string]bool{}
		for _, k := range keys {
			if names[k.Name] || hashes[k.Hash] || len(k.Hash) != 64 || strings.ContainsAny(k.Name, ":/+# \t") {
				t.Fatalf("accepted %+v", k)
			}
			names[k.Name], hashes[k.Hash] = true, true
		}
	})
}
