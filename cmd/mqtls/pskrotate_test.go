package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestPSKRemoveRotateAndDirectory: psk add creates a missing directory 0700; psk rotate
// prints a new key once and keeps the other lines and comments; psk remove drops the
// line; both refuse an identity the file lacks.
func TestPSKRemoveRotateAndDirectory(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "etc", "mqtls", "psk.txt")
	out, err := runApp(t, "psk", "add", "--file", file, "dev-1")
	if err != nil {
		t.Fatalf("psk add into a missing directory: %v", err)
	}
	if !strings.Contains(out, "created "+filepath.Dir(file)+" (mode 0700)") {
		t.Errorf("psk add did not say it created the directory:\n%s", out)
	}
	if fi, err := os.Stat(filepath.Dir(file)); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("directory: %v, %v; want mode 0700", fi.Mode(), err)
	}
	dev2 := addPSKDevice(t, file, "dev-2")
	data, _ := os.ReadFile(file)
	if err := os.WriteFile(file, append([]byte("# gateway 7\n"), data...), 0o600); err != nil {
		t.Fatal(err)
	}

	out, err = runApp(t, "psk", "rotate", "--file", file, "dev-2")
	if err != nil {
		t.Fatalf("psk rotate: %v", err)
	}
	m := pskAddOutput.FindStringSubmatch(out)
	if m == nil || m[2] != "dev-2" || m[1] == dev2.keyHex {
		t.Fatalf("psk rotate printed %q, want a new key for dev-2", out)
	}
	after, _ := os.ReadFile(file)
	if !strings.Contains(string(after), "# gateway 7\n") || !strings.Contains(string(after), "dev-2:"+m[1]+"\n") ||
		strings.Contains(string(after), dev2.keyHex) || !strings.Contains(string(after), "dev-1:") {
		t.Errorf("after rotate the file is:\n%s", after)
	}
	if fi, _ := os.Stat(file); fi.Mode().Perm() != 0o600 {
		t.Errorf("rotate left mode %v, want 0600", fi.Mode().Perm())
	}

	if _, err := runApp(t, "psk", "remove", "--file", file, "dev-1"); err != nil {
		t.Fatalf("psk remove: %v", err)
	}
	list, err := runApp(t, "psk", "list", "--file", file)
	if err != nil || list != "dev-2\n" {
		t.Errorf("psk list after remove: %q, %v; want dev-2 only", list, err)
	}
	for _, cmd := range []string{"remove", "rotate"} {
		if _, err := runApp(t, "psk", cmd, "--file", file, "nobody"); err == nil || !strings.Contains(err.Error(), `identity "nobody" is not in`) {
			t.Errorf("psk %s of a missing identity: %v", cmd, err)
		}
	}
}
