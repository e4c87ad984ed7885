package stunnel

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/mqtls/mqtls/handshake"
	"github.com/mqtls/mqtls/internal/config"
)

// FuzzConvertStunnel feeds arbitrary stunnel.conf text to the converter: it must never
// panic, and whatever YAML it prints must parse as a valid config file.
func FuzzConvertStunnel(f *testing.F) {
	seeds, _ := filepath.Glob("testdata/stunnel/*.conf")
	for _, s := range seeds {
		if data, err := os.ReadFile(s); err == nil {
			f.Add(data)
		}
	}
	f.Add([]byte("[mqtt]\naccept = 8883\nconnect = 1883\ncert = a.pem\n"))
	f.Add([]byte("foreground = yes\n[x]\nclient = yes\naccept = 1\nconnect = 2\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		// No file is read: a fuzzed CAfile could name /dev/zero.
		out, _, _, err := ConvertFiles("fuzz.conf", data, func(name string) ([]byte, error) { return nil, os.ErrNotExist })
		if err != nil {
			return
		}
		if _, err := config.Parse("converted.yaml", out); err != nil {
			t.Fatalf("converted config does not parse: %v\n%s", err, out)
		}
	})
}

// FuzzConvertPinnedCAfile feeds arbitrary CAfile contents to a service that verifies the
// peer: the converter must never panic, and a keys file it makes must load.
func FuzzConvertPinnedCAfile(f *testing.F) {
	if data, err := os.ReadFile("testdata/stunnel/peers.pem"); err == nil {
		f.Add(data)
	}
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"))
	f.Add([]byte("not PEM"))
	conf := []byte("[svc]\naccept = 8883\nconnect = 1883\ncert = /s.crt\nkey = /s.key\nCAfile = /peers.pem\nverifyPeer = yes\n")
	f.Fuzz(func(t *testing.T, ca []byte) {
		out, _, keyFiles, err := ConvertFiles("fuzz.conf", conf, func(string) ([]byte, error) { return ca, nil })
		if err != nil {
			t.Fatalf("a service with an unusable CAfile must still convert (failing closed): %v", err)
		}
		if _, err := config.Parse("converted.yaml", out); err != nil {
			t.Fatalf("converted config does not parse: %v\n%s", err, out)
		}
		for _, kf := range keyFiles {
			if _, err := handshake.ParseKeys(kf.Path, kf.Data); err != nil {
				t.Fatalf("the keys file made does not load: %v\n%s", err, kf.Data)
			}
		}
	})
}
