package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzParseConfigFile feeds arbitrary bytes to the config file parser: it must never
// panic, and whatever it accepts must hold at least one listener, each with a name, a
// transport and an address, and no two with the same name.
func FuzzParseConfigFile(f *testing.F) {
	seeds, _ := filepath.Glob("../../examples/gateway/*.yaml")
	seeds2, _ := filepath.Glob("../stunnel/testdata/stunnel/*.yaml")
	for _, s := range append(seeds, seeds2...) {
		if data, err := os.ReadFile(s); err == nil {
			f.Add(data)
		}
	}
	f.Add([]byte("listeners:\n  - listen: \":8883\"\n    tls: {cert: a, key: b}\n"))
	f.Add([]byte("listeners: [{listen: \":1\", psk: {file: p}, transport: dtls}]\nadmin: {listen: \":2\"}\n"))
	f.Add([]byte("drain_timeout: 5m\nlisteners: []\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse("fuzz.yaml", data)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "config file fuzz.yaml: ") {
				t.Fatalf("error does not name the file: %v", err)
			}
			return
		}
		if len(cfg.Listeners) == 0 {
			t.Fatal("accepted a config with no listener")
		}
		names := map[string]bool{}
		for _, l := range cfg.Listeners {
			if l.Name == "" || l.Listen == "" || (l.Transport != "tcp" && l.Transport != "dtls") {
				t.Fatalf("accepted listener %+v", l)
			}
			if names[l.Name] {
				t.Fatalf("accepted two listeners named %q", l.Name)
			}
			names[l.Name] = true
		}
	})
}
