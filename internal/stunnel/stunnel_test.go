package stunnel

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/mqtls/mqtls/internal/config"
)

var updateGolden = flag.Bool("update", false, "rewrite the golden files of convert stunnel in testdata/stunnel")

// TestConvertStunnel converts each testdata/stunnel/*.conf and compares the config file
// (stdout) and the notes (stderr) with the golden NAME.yaml and NAME.stderr; -update
// rewrites them. Every output must be a config file serve accepts, with one listener per
// stunnel service (client services in client mode), named after it, except services
// with sni = parent:name, which are tenants of their parent's listener.
func TestConvertStunnel(t *testing.T) {
	confs, err := filepath.Glob("testdata/stunnel/*.conf")
	if err != nil || len(confs) < 4 {
		t.Fatalf("want the stunnel configs in testdata/stunnel, found %v (%v)", confs, err)
	}
	for _, conf := range confs {
		name := strings.TrimSuffix(filepath.Base(conf), ".conf")
		t.Run(name, func(t *testing.T) {
			data, err := os.ReadFile(conf)
			if err != nil {
				t.Fatal(err)
			}
			out, notes, keyFiles, err := ConvertFiles(conf, data, os.ReadFile)
			stdout, stderr := string(out), ""
			for _, n := range notes {
				stderr += n + "\n"
			}
			if err != nil {
				t.Fatalf("mqtls convert stunnel %s: %v\nstderr:\n%s", conf, err, stderr)
			}
			golden(t, strings.TrimSuffix(conf, ".conf")+".yaml", stdout)
			golden(t, strings.TrimSuffix(conf, ".conf")+".stderr", stderr)
			keys := ""
			for _, kf := range keyFiles {
				keys += "== " + kf.Path + "\n" + string(kf.Data)
			}
			if keys != "" {
				golden(t, strings.TrimSuffix(conf, ".conf")+".keys", keys)
			}

			cfg, err := config.Parse(name+".yaml", []byte(stdout))
			if err != nil {
				t.Fatalf("the converted config does not validate: %v", err)
			}
			sections, err := parseStunnel(data)
			if err != nil {
				t.Fatal(err)
			}
			var want, got []string
			for _, s := range sections[1:] {
				// A service with sni = parent:name becomes a tenant of its parent's listener.
				if _, _, _, tenant := sniOf(s.opts); !tenant || isClient(s.opts) {
					want = append(want, s.name)
				}
			}
			for _, l := range cfg.Listeners {
				got = append(got, l.Name)
			}
			if !slices.Equal(got, want) {
				t.Errorf("listeners %q, want one per server service: %q", got, want)
			}
		})
	}
}

// golden compares got with the file, or writes it with -update.
func golden(t *testing.T, file, got string) {
	t.Helper()
	if *updateGolden {
		if err := os.WriteFile(file, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("%v (run go test -run TestConvertStunnel -update to write it)", err)
	}
	if got != string(want) {
		t.Errorf("output differs from %s (go test -run TestConvertStunnel -update rewrites it):\n--- got\n%s\n--- want\n%s", file, got, want)
	}
}

// TestConvertStunnelOptions pins the translation of single options, each in a minimal
// service: what lands in the file, and what is said on stderr.
func TestConvertStunnelOptions(t *testing.T) {
	const base = "[svc]\ncert = /s.crt\nkey = /s.key\n"
	for _, tc := range []struct {
		name  string
		addrs string // lines 4 and 5; default accept = 8883, connect = 1883
		conf  string // from line 6 on
		check func(config.Listener) bool
		notes []string
		err   string
	}{
		{name: "bare ports", check: func(l config.Listener) bool { return l.Listen == "0.0.0.0:8883" && l.Upstream == "127.0.0.1:1883" }},
		{name: "host:port kept", addrs: "accept = 192.0.2.1:8883\nconnect = broker:1883\n",
			check: func(l config.Listener) bool { return l.Listen == "192.0.2.1:8883" && l.Upstream == "broker:1883" }},
		{name: "IPv6", addrs: "accept = :::8883\nconnect = ::1:1883\n",
			check: func(l config.Listener) bool { return l.Listen == "[::]:8883" && l.Upstream == "[::1]:1883" }},
		{name: "second accept and connect", conf: "accept = 192.0.2.1:8883\nconnect = broker:1883\n",
			check: func(l config.Listener) bool { return l.Listen == "0.0.0.0:8883" && l.Upstream == "127.0.0.1:1883" },
			notes: []string{
				"service [svc] line 6: accept = 192.0.2.1:8883: not translated: an mqtls listener has one address: add another listener for it",
				"service [svc] line 7: connect = broker:1883: not translated: an mqtls listener has one upstream; stunnel's failover to the next connect is not carried over",
			}},
		{name: "keys without case", conf: "CAFILE = /ca.pem\nVerifyChain = YES\n",
			check: func(l config.Listener) bool { return l.TLS.ClientCA == "/ca.pem" && l.TLS.ClientAuth == "require" }},
		{name: "verify 1 requests", conf: "CAfile = /ca.pem\nverify = 1\n",
			check: func(l config.Listener) bool { return l.TLS.ClientAuth == "request" }},
		{name: "verify 0", conf: "CAfile = /ca.pem\nverify = 0\n",
			check: func(l config.Listener) bool { return l.TLS.ClientCA == "" && l.TLS.ClientAuth == "" },
			notes: []string{
				"service [svc] line 6: CAfile = /ca.pem: not translated: this service does not verify client certificates (no verifyChain, verifyPeer or verify of 1 or more), so mqtls needs no CA for them",
				"service [svc] line 7: verify = 0: not translated: stunnel asks for a client certificate and accepts it unverified; mqtls verifies every certificate it asks for, so this listener asks for none (client_auth none)",
			}},
		{name: "requireCert alone", conf: "requireCert = yes\n",
			check: func(l config.Listener) bool { return l.TLS.ClientAuth == "" },
			notes: []string{"service [svc] line 6: requireCert = yes: not translated: requireCert only matters with verifyChain or verifyPeer, which this service does not set"}},
		{name: "verifyPeer pins, CAfile unreadable", conf: "CAfile = /peers.pem\nverifyPeer = yes\n",
			check: func(l config.Listener) bool {
				return l.TLS.ClientCA == "" && l.TLS.ClientKeys == "/peers.keys" && l.TLS.ClientAuth == "require"
			},
			notes: []string{"service [svc] line 6: CAfile = /peers.pem: not translated: reading it for its certificates' keys: open /peers.pem: no such file or directory; make /peers.keys with `mqtls keys add --file /peers.keys NAME CERT.pem` for each device certificate in it (tls.client_keys names it)"}},
		{name: "verify 4 pins", conf: "CAfile = /peers.pem\nverify = 4\n",
			check: func(l config.Listener) bool { return l.TLS.ClientCA == "" && l.TLS.ClientKeys == "/peers.keys" },
			notes: []string{"service [svc] line 6: CAfile = /peers.pem: not translated: reading it for its certificates' keys: open /peers.pem: no such file or directory; make /peers.keys with `mqtls keys add --file /peers.keys NAME CERT.pem` for each device certificate in it (tls.client_keys names it)"}},
		{name: "verifyChain without CA", conf: "verifyChain = yes\n", err: "stunnel config test.conf: no server service to convert",
			notes: []string{"service [svc] line 6: verifyChain = yes: not translated: no CAfile or CApath to verify client certificates against; service skipped"}},
		{name: "cert is the key", conf: "[two]\naccept = 8884\nconnect = 1884\ncert = /both.pem\n",
			check: func(l config.Listener) bool {
				return l.Name != "two" || l.TLS.Cert == "/both.pem" && l.TLS.Key == "/both.pem"
			}},
		{name: "sslVersion all", conf: "sslVersion = all\n",
			check: func(l config.Listener) bool { return l.TLS.MinVersion == "1.2" },
			notes: []string{"service [svc] line 6: sslVersion = all: changed: tls.min_version is 1.2: mqtls accepts TLS 1.2 and 1.3 only, so devices limited to older versions fail the handshake"}},
		{name: "sslVersion TLSv1.2 caps", conf: "sslVersion = TLSv1.2\n",
			check: func(l config.Listener) bool { return l.TLS.MinVersion == "1.2" },
			notes: []string{"service [svc] line 6: sslVersion = TLSv1.2: not translated: mqtls has no maximum version: it also accepts TLS 1.3 (certificates and PSKs), which devices use when they offer it"}},
		{name: "sslVersionMax TLSv1.3", conf: "sslVersionMax = TLSv1.3\nsslVersionMin = TLSv1.3\n",
			check: func(l config.Listener) bool { return l.TLS.MinVersion == "1.3" }},
		{name: "TIMEOUTidle", conf: "TIMEOUTidle = 43200\nTIMEOUTconnect = 3\n",
			check: func(l config.Listener) bool {
				return l.Timeouts.Idle == config.Duration(43200e9) && l.Timeouts.Dial == config.Duration(3e9)
			}},
		{name: "TIMEOUTidle not a number", conf: "TIMEOUTidle = 10m\n",
			notes: []string{"service [svc] line 6: TIMEOUTidle = 10m: not translated: not a number of seconds"}},
		{name: "protocol proxy", conf: "protocol = proxy\n",
			check: func(l config.Listener) bool { return l.ProxyProtocol.Send == "v1" }},
		{name: "unix socket upstream", addrs: "accept = 8883\nconnect = /run/mosquitto.sock\n",
			check: func(l config.Listener) bool { return l.Upstream == "unix:/run/mosquitto.sock" }},
		{name: "secret values stay out", conf: "ticketKeySecret = 6c:c5:1c:93\n",
			notes: []string{"service [svc] line 6: ticketKeySecret = <redacted>: not translated: session resumption cannot be tuned: certificate sessions resume with Go's session tickets (keys rotated automatically); TLS-PSK sessions do not resume"}},
		{name: "unknown option", conf: "frobnicate = 7\n",
			notes: []string{"service [svc] line 6: frobnicate = 7: not translated: no mqtls equivalent"}},
		{name: "debug names a level", conf: "debug = local0.debug\n",
			notes: []string{"service [svc] line 6: debug = local0.debug: not translated: mqtls logs at log.level (debug, info, warn or error); the closest to this level is log.level: debug"}},
		{name: "no accept", conf: "[other]\nconnect = 1883\ncert = /c.pem\n",
			notes: []string{"service [other] line 6: [other]: not translated: no accept: the address to listen on; service skipped"}},
		{name: "unix socket accept", conf: "[other]\naccept = /run/stunnel.sock\nconnect = 1883\ncert = /c.pem\n",
			notes: []string{"service [other] line 7: accept = /run/stunnel.sock: not translated: mqtls listens on TCP and UDP addresses, not unix sockets; service skipped"}},
		{name: "no certificate", conf: "[other]\naccept = 1\nconnect = 1883\n",
			notes: []string{"service [other] line 6: [other]: not translated: neither cert nor PSKsecrets: mqtls needs a server certificate (tls.cert, tls.key) or pre-shared keys (psk.file); service skipped"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addrs := tc.addrs
			if addrs == "" {
				addrs = "accept = 8883\nconnect = 1883\n"
			}
			out, notes, err := Convert("test.conf", []byte(base+addrs+tc.conf))
			if !slices.Equal(notes, tc.notes) {
				t.Errorf("notes:\n%s\nwant:\n%s", strings.Join(notes, "\n"), strings.Join(tc.notes, "\n"))
			}
			if tc.err != "" || err != nil {
				if err == nil || err.Error() != tc.err {
					t.Errorf("convertStunnel: error %v, want %q", err, tc.err)
				}
				return
			}
			cfg, err := config.Parse("out.yaml", out)
			if err != nil {
				t.Fatalf("the output does not validate: %v\n%s", err, out)
			}
			if tc.check == nil {
				return
			}
			f := decodeFileConfig(t, out)
			for _, l := range f.Listeners {
				if !tc.check(l) {
					t.Errorf("listener %s converted to %+v", l.Name, l)
				}
			}
			if len(cfg.Listeners) == 0 {
				t.Error("no listener")
			}
		})
	}
}

// TestParseStunnel: comments, blank lines, CRLF, a BOM, spaces around keys, values and
// section names, and options before any section (the global section).
func TestParseStunnel(t *testing.T) {
	data := "\xef\xbb\xbf; comment\r\n# another\r\n  foreground = yes \r\n\r\n[ mqtt ]\r\n  accept=8883\r\nconnect = host : 1\r\n"
	got, err := parseStunnel([]byte(data))
	if err != nil {
		t.Fatal(err)
	}
	want := []stunnelSection{
		{opts: []stunnelOption{{line: 3, key: "foreground", value: "yes"}}},
		{name: "mqtt", line: 5, opts: []stunnelOption{{line: 6, key: "accept", value: "8883"}, {line: 7, key: "connect", value: "host : 1"}}},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d sections, want %d: %+v", len(got), len(want), got)
	}
	for i := range want {
		if got[i].name != want[i].name || got[i].line != want[i].line || !slices.Equal(got[i].opts, want[i].opts) {
			t.Errorf("section %d: %+v, want %+v", i, got[i], want[i])
		}
	}
}

// decodeFileConfig decodes a config file the way parseConfigFile does.
func decodeFileConfig(t *testing.T, data []byte) config.File {
	t.Helper()
	var f config.File
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil {
		t.Fatal(err)
	}
	return f
}

// TestConvertStunnelGlobalDefaults: service options in the global section are defaults for
// every service, which a service's own value replaces; one that is never translated is
// said once, for the global section.
func TestConvertStunnelGlobalDefaults(t *testing.T) {
	conf := "connect = 1883\ncert = /g.pem\nciphers = HIGH\n[a]\naccept = 8883\n[b]\naccept = 8884\nconnect = 1884\ncert = /b.crt\nkey = /b.key\n"
	out, notes, err := Convert("test.conf", []byte(conf))
	if err != nil {
		t.Fatal(err)
	}
	wantNotes := []string{"global line 3: ciphers = HIGH: not translated: " + stunnelUntranslated["ciphers"]}
	if !slices.Equal(notes, wantNotes) {
		t.Errorf("notes %q, want %q", notes, wantNotes)
	}
	f := decodeFileConfig(t, out)
	type got struct{ name, upstream, cert, key string }
	var gots []got
	for _, l := range f.Listeners {
		gots = append(gots, got{l.Name, l.Upstream, l.TLS.Cert, l.TLS.Key})
	}
	want := []got{{"a", "127.0.0.1:1883", "/g.pem", "/g.pem"}, {"b", "127.0.0.1:1884", "/b.crt", "/b.key"}}
	if !slices.Equal(gots, want) {
		t.Errorf("listeners %+v, want %+v", gots, want)
	}
}
