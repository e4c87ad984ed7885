package config

import (
	"strings"
	"testing"
)

// TestClientAndSNIRefusals: combinations that cannot work are refused at load, naming the
// key to change.
func TestClientAndSNIRefusals(t *testing.T) {
	const head = "listeners:\n  - name: l\n    listen: 127.0.0.1:1884\n"
	for _, tc := range []struct {
		name, yaml, want string
	}{
		{"server keys in client mode", "    mode: client\n    upstream: cloud.example:8883\n    tls: {cert: a, key: b}\n",
			"listeners[0].tls, listeners[0].psk and listeners[0].policy are for server mode"},
		// Keys added to the server sections after client mode count too.
		{"pinned keys in client mode", "    mode: client\n    upstream: cloud.example:8883\n    tls: {client_keys: k}\n",
			"listeners[0].tls, listeners[0].psk and listeners[0].policy are for server mode"},
		{"PSK option in client mode", "    mode: client\n    upstream: cloud.example:8883\n    psk: {allow_psk_ke: true}\n",
			"listeners[0].tls, listeners[0].psk and listeners[0].policy are for server mode"},
		{"allow_slash in client mode", "    mode: client\n    upstream: cloud.example:8883\n    policy: {allow_slash: true}\n",
			"listeners[0].tls, listeners[0].psk and listeners[0].policy are for server mode"},
		{"remote in server mode", "    tls: {cert: a, key: b}\n    remote: {ca: x}\n", "listeners[0].remote is for client mode"},
		{"unknown mode", "    mode: both\n", `listeners[0].mode "both": want server or client`},
		{"address without a name", "    mode: client\n    upstream: 192.0.2.1:8883\n", "set listeners[0].remote.server_name"},
		{"PSK without identity", "    mode: client\n    upstream: cloud.example:8883\n    remote: {psk_file: p}\n", "needs both the PSK file and the identity"},
		{"PSK with a CA", "    mode: client\n    upstream: cloud.example:8883\n    remote: {psk_file: p, psk_identity: gw, ca: c}\n", "uses no certificates"},
		{"half a client certificate", "    mode: client\n    upstream: cloud.example:8883\n    remote: {cert: c}\n", "needs its key"},
		{"unknown template field", "    mode: client\n    upstream: cloud.example:8883\n    remote: {client_id: \"{uri}/{client_id}\"}\n", "unknown field {uri}"},
		{"DTLS client", "    mode: client\n    transport: dtls\n    upstream: cloud.example:8883\n", "accepts TCP or a unix socket"},
		{"no upstream", "    mode: client\n", "listeners[0].upstream is required in client mode"},
		{"duplicate tenant name", "    tls: {cert: a, key: b}\n    sni:\n      tenants:\n        - {name: a, server_names: [x.example], tls: {cert: a, key: b}}\n        - {name: b, server_names: [X.example], tls: {cert: a, key: b}}\n",
			`"x.example" is served by tenant a already`},
		{"tenant without names", "    tls: {cert: a, key: b}\n    sni:\n      tenants:\n        - {name: a, tls: {cert: a, key: b}}\n", "list the server names"},
		{"unknown sni policy", "    tls: {cert: a, key: b}\n    sni:\n      unknown: drop\n      tenants:\n        - {name: a, server_names: [x.example], tls: {cert: a, key: b}}\n", `listeners[0].sni.unknown "drop"`},
		{"tenant key named", "    tls: {cert: a, key: b}\n    sni:\n      tenants:\n        - {name: a, server_names: [x.example], tls: {cert: a}}\n", "listeners[0].sni.tenants[0].tls.cert is set but listeners[0].sni.tenants[0].tls.key is not"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("t.yaml", []byte(head+tc.yaml))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Parse = %v, want an error containing %q", err, tc.want)
			}
		})
	}
	ok := head + "    mode: client\n    listen: unix:/run/mqtls/uplink.sock\n    upstream: cloud.example:8883\n    remote: {cert: c, key: k, client_id: \"{cn}/{client_id}\"}\n"
	cfg, err := Parse("t.yaml", []byte(strings.Replace(ok, "    listen: 127.0.0.1:1884\n", "", 1)))
	if err != nil {
		t.Fatalf("a client-mode listener on a unix socket: %v", err)
	}
	if l := cfg.Listeners[0]; l.Mode != ModeClient || l.Listen != "unix:/run/mqtls/uplink.sock" || l.Client.Rewrite.ClientID != "{cn}/{client_id}" {
		t.Errorf("spec %+v", l)
	}
}
