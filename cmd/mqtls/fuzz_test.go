package main

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
	seeds2, _ := filepath.Glob("testdata/stunnel/*.yaml")
	for _, s := range append(seeds, seeds2...) {
		if data, err := os.ReadFile(s); err == nil {
			f.Add(data)
		}
	}
	f.Add([]byte("listeners:\n  - listen: \":8883\"\n    tls: {cert: a, key: b}\n"))
	f.Add([]byte("listeners: [{listen: \":1\", psk: {file: p}, transport: dtls}]\nadmin: {listen: \":2\"}\n"))
	f.Add([]byte("drain_timeout: 5m\nlisteners: []\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := parseConfigFile("fuzz.yaml", data)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "config file fuzz.yaml: ") {
				t.Fatalf("error does not name the file: %v", err)
			}
			return
		}
		if len(cfg.listeners) == 0 {
			t.Fatal("accepted a config with no listener")
		}
		names := map[string]bool{}
		for _, l := range cfg.listeners {
			if l.name == "" || l.listen == "" || (l.transport != "tcp" && l.transport != "dtls") {
				t.Fatalf("accepted listener %+v", l)
			}
			if names[l.name] {
				t.Fatalf("accepted two listeners named %q", l.name)
			}
			names[l.name] = true
		}
	})
}

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
		out, _, err := convertStunnel("fuzz.conf", data)
		if err != nil {
			return
		}
		if _, err := parseConfigFile("converted.yaml", out); err != nil {
			t.Fatalf("converted config does not parse: %v\n%s", err, out)
		}
	})
}
