package pskfile

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestAdd: a key is appended to a file that lacks a final newline, and the file still
// loads; a second key for the same identity, or an identity a line cannot hold, is
// refused with a message saying why.
func TestAdd(t *testing.T) {
	file := filepath.Join(t.TempDir(), "psk.txt")
	if err := os.WriteFile(file, []byte("old:00112233445566778899aabbccddeeff"), 0o600); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := Add(&out, file, "mosquitto", "dev-1"); err != nil {
		t.Fatal(err)
	}
	store, err := Load(file, "mosquitto")
	if err != nil {
		t.Fatal(err)
	}
	if store.Len() != 2 || !store.Has("dev-1") || !strings.Contains(out.String(), "--psk-identity dev-1") {
		t.Errorf("after add: %d identities, output %q", store.Len(), out.String())
	}
	for _, tc := range []struct{ id, err string }{
		{"dev-1", "is already in"},
		{"", "the identity is empty"},
		{"a:b", "contains ':'"},
		{"#x", "starts with '#'"},
		{"a b", "white space or a control character"},
		{strings.Repeat("x", 129), "RFC 4279 allows 128"},
	} {
		if err := Add(&out, file, "mosquitto", tc.id); err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("Add(%q): %v, want an error containing %q", tc.id, err, tc.err)
		}
	}
	if _, err := Load(file, "ini"); err == nil || !strings.HasPrefix(err.Error(), "--psk-format: ") {
		t.Errorf("Load with format ini: %v, want an error naming --psk-format", err)
	}
}
