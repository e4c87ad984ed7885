package main

// The psk command: `mqtls psk add` makes keys, `mqtls psk list` shows identities and never
// keys. That an added key works against a real peer is TestPSKRoundTrip's job.

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func pskFileText(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// TestPSKAdd: psk add creates the file 0600, appends one identity:hexkey line per device,
// prints the device side with that key, and refuses duplicates and identities the file
// format cannot hold, leaving the file as it was.
func TestPSKAdd(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "psk.txt")

	out, err := runApp(t, "psk", "add", "--file", file, "dev-1")
	if err != nil {
		t.Fatalf("psk add: %v", err)
	}
	m := pskAddOutput.FindStringSubmatch(out)
	if m == nil || m[2] != "dev-1" {
		t.Fatalf("psk add printed %q, want \"device side: mosquitto_pub --psk <64 hex digits> --psk-identity dev-1 ...\"", out)
	}
	key1 := m[1]
	if !strings.HasPrefix(out, "added dev-1 to "+file+"\n") {
		t.Errorf("psk add printed %q, want it to start with \"added dev-1 to %s\"", out, file)
	}
	fi, err := os.Stat(file)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Errorf("psk add created %s with mode %#o, want 0600", file, perm)
	}
	if got, want := pskFileText(t, file), "dev-1:"+key1+"\n"; got != want {
		t.Errorf("file holds %q, want %q", got, want)
	}

	dev2 := addPSKDevice(t, file, "dev-2")
	if dev2.keyHex == key1 {
		t.Errorf("two devices got the same key")
	}
	want := "dev-1:" + key1 + "\ndev-2:" + dev2.keyHex + "\n"
	if got := pskFileText(t, file); got != want {
		t.Errorf("file holds %q, want %q", got, want)
	}

	for _, tc := range []struct {
		name     string
		args     []string
		errWants []string
	}{
		{"same identity twice", []string{"dev-1"}, []string{`"dev-1"`, "already", file}},
		{"identity with a colon", []string{"dev:1"}, []string{`"dev:1"`, "':'"}},
		{"identity with a space", []string{"dev 1"}, []string{`"dev 1"`, "white space"}},
		{"identity with a tab", []string{"dev\t1"}, []string{"white space"}},
		{"identity with a newline", []string{"dev\n1"}, []string{"white space or a control character"}},
		{"identity starting with #", []string{"#dev"}, []string{"'#'"}},
		{"empty identity", []string{""}, []string{"empty"}},
		{"identity over 128 bytes", []string{strings.Repeat("d", 129)}, []string{"129 bytes"}},
		{"no identity", nil, []string{"exactly one argument"}},
		{"two identities", []string{"dev-3", "dev-4"}, []string{"exactly one argument"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := runApp(t, append([]string{"psk", "add", "--file", file}, tc.args...)...)
			if err == nil {
				t.Fatalf("psk add %q succeeded:\n%s", tc.args, out)
			}
			for _, w := range tc.errWants {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if strings.Contains(err.Error(), key1) || strings.Contains(out, key1) {
				t.Errorf("psk add quoted an existing key: error %q, output %q", err, out)
			}
			if got := pskFileText(t, file); got != want {
				t.Errorf("a refused psk add changed the file to %q", got)
			}
		})
	}

	t.Run("psk list", func(t *testing.T) {
		out, err := runApp(t, "psk", "list", "--file", file)
		if err != nil {
			t.Fatalf("psk list: %v", err)
		}
		if out != "dev-1\ndev-2\n" {
			t.Errorf("psk list printed %q, want \"dev-1\\ndev-2\\n\"", out)
		}
		for _, k := range []string{key1, dev2.keyHex} {
			if strings.Contains(out, k[:8]) {
				t.Errorf("psk list printed part of a key: %q", out)
			}
		}
	})
}

// TestPSKAddExistingFile: psk add appends to a file made by hand, adding the newline the
// last line lacks, and refuses to touch a file that does not parse.
func TestPSKAddExistingFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	const handKey = "00112233445566778899aabbccddeeff"

	t.Run("no final newline", func(t *testing.T) {
		file := filepath.Join(dir, "nonl.txt")
		if err := os.WriteFile(file, []byte("# by hand\nold-1:"+handKey), 0o640); err != nil {
			t.Fatal(err)
		}
		dev := addPSKDevice(t, file, "new-1")
		if got, want := pskFileText(t, file), "# by hand\nold-1:"+handKey+"\nnew-1:"+dev.keyHex+"\n"; got != want {
			t.Errorf("file holds %q, want %q", got, want)
		}
		out, err := runApp(t, "psk", "list", "--file", file)
		if err != nil || out != "new-1\nold-1\n" {
			t.Errorf("psk list: %q, %v; want \"new-1\\nold-1\\n\"", out, err)
		}
	})

	t.Run("stunnel file with a raw key", func(t *testing.T) {
		file := filepath.Join(dir, "stunnel.txt")
		before := "raw-1:correct-horse-battery-staple\n"
		if err := os.WriteFile(file, []byte(before), 0o600); err != nil {
			t.Fatal(err)
		}
		// Read as Mosquitto's format, the raw key is an error: nothing is added.
		_, err := runApp(t, "psk", "add", "--file", file, "dev-1")
		if err == nil || !strings.Contains(err.Error(), file+":1: ") || strings.Contains(err.Error(), "horse") {
			t.Errorf("psk add to a stunnel file read as mosquitto: %v; want an error naming %s:1 without the key", err, file)
		}
		if got := pskFileText(t, file); got != before {
			t.Errorf("a refused psk add changed the file to %q", got)
		}
		out, err := runApp(t, "psk", "add", "--file", file, "--psk-format", "stunnel", "dev-1")
		if err != nil || !pskAddOutput.MatchString(out) {
			t.Fatalf("psk add --psk-format stunnel: %v\n%s", err, out)
		}
		out, err = runApp(t, "psk", "list", "--file", file, "--psk-format", "stunnel")
		if err != nil || out != "dev-1\nraw-1\n" {
			t.Errorf("psk list --psk-format stunnel: %q, %v; want \"dev-1\\nraw-1\\n\"", out, err)
		}
		if strings.Contains(out, "horse") {
			t.Errorf("psk list printed a key: %q", out)
		}
	})

	t.Run("bad line", func(t *testing.T) {
		file := filepath.Join(dir, "bad.txt")
		before := "dev-1:" + handKey + "\ndev-2 " + handKey + "\n"
		if err := os.WriteFile(file, []byte(before), 0o600); err != nil {
			t.Fatal(err)
		}
		for _, cmd := range [][]string{{"add", "--file", file, "dev-3"}, {"list", "--file", file}} {
			out, err := runApp(t, append([]string{"psk"}, cmd...)...)
			if err == nil || !strings.Contains(err.Error(), file+":2: ") {
				t.Errorf("psk %s: %v; want an error naming %s:2", cmd[0], err, file)
			} else if strings.Contains(err.Error(), handKey) {
				t.Errorf("psk %s: error %q quotes a key", cmd[0], err)
			}
			if out != "" {
				t.Errorf("psk %s printed %q, want nothing", cmd[0], out)
			}
		}
		if got := pskFileText(t, file); got != before {
			t.Errorf("psk add changed a file that does not parse: %q", got)
		}
	})

	t.Run("missing file", func(t *testing.T) {
		file := filepath.Join(dir, "missing.txt")
		if _, err := runApp(t, "psk", "list", "--file", file); err == nil || !strings.Contains(err.Error(), file) {
			t.Errorf("psk list of a missing file: %v; want an error naming %s", err, file)
		}
		if _, err := runApp(t, "psk", "list"); err == nil || !strings.Contains(err.Error(), "file") {
			t.Errorf("psk list without --file: %v; want an error naming --file", err)
		}
	})
}
