package config

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

// flagValues are serve's flags as a command line left them: Settings' defaults, with the
// ones given set.
type flagValues map[string]any

func newFlagValues(set map[string]any) flagValues {
	v := flagValues{}
	for _, s := range Settings {
		v[s.Flag] = s.Default
	}
	for k, x := range set {
		v[k] = x
	}
	v["set"] = set
	return v
}

func (v flagValues) IsSet(name string) bool {
	_, ok := v["set"].(map[string]any)[name]
	return ok
}

func (v flagValues) FlagNames() []string {
	var names []string
	for _, s := range Settings {
		names = append(names, s.Flag)
	}
	return names
}

func (v flagValues) String(n string) string          { return v[n].(string) }
func (v flagValues) StringSlice(n string) []string   { x, _ := v[n].([]string); return x }
func (v flagValues) Int(n string) int                { return v[n].(int) }
func (v flagValues) Float64(n string) float64        { return v[n].(float64) }
func (v flagValues) Bool(n string) bool              { return v[n].(bool) }
func (v flagValues) Duration(n string) time.Duration { return v[n].(time.Duration) }

// TestFlagsAndFileAgree: the same listener given as flags and as a config file validates
// to the same spec, but for the names its messages use.
func TestFlagsAndFileAgree(t *testing.T) {
	fromFlags, err := FromFlags(newFlagValues(map[string]any{
		"cert": "s.crt", "key": "s.key", "client-ca": "ca.crt", "client-id": "enforce",
		"allow": []string{"^dev-"}, "per-ip-rate": 2.5, "max-connections": 100,
		"proxy-protocol": "v2", "handshake-timeout": 3 * time.Second,
	}))
	if err != nil {
		t.Fatal(err)
	}
	fromFile, err := Parse("t.yaml", []byte(`listeners:
  - name: tcp
    listen: ":8883"
    tls: {cert: s.crt, key: s.key, client_ca: ca.crt, min_version: "1.2"}
    policy: {client_id: enforce, allow: ["^dev-"], client_id_separator: /}
    limits: {per_ip_rate: 2.5, max_connections: 100}
    proxy_protocol: {send: v2}
    timeouts: {handshake: 3s, connect: 10s, dial: 5s}
`))
	if err != nil {
		t.Fatal(err)
	}
	a, b := fromFlags.Listeners[0], fromFile.Listeners[0]
	if a.KeyPrefix != "" || b.KeyPrefix != "listeners[0]." {
		t.Errorf("key prefixes %q and %q", a.KeyPrefix, b.KeyPrefix)
	}
	a.KeyPrefix, b.KeyPrefix = "", ""
	if !reflect.DeepEqual(a, b) {
		t.Errorf("flags give\n%+v\nthe file gives\n%+v", a, b)
	}
}

// TestFlagMessages: a problem found in the flags names the flag, the same problem in the
// file names the key path.
func TestFlagMessages(t *testing.T) {
	_, err := FromFlags(newFlagValues(map[string]any{"cert": "s.crt", "key": "s.key", "client-id": "enforce", "busy-poll": time.Second}))
	for _, want := range []string{"--busy-poll 1s: want 0 (off) to 100ms", "--client-id enforce needs an identity, but without --client-ca, --client-keys or --psk-file"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("flags: %v, want %q", err, want)
		}
	}
	_, err = Parse("t.yaml", []byte("busy_poll: 1s\nlisteners: [{listen: \":1\", tls: {cert: a, key: b}, policy: {client_id: enforce}}]\n"))
	for _, want := range []string{"busy_poll 1s: want 0 (off) to 100ms", "listeners[0].policy.client_id enforce needs an identity, but without listeners[0].tls.client_ca"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("file: %v, want %q", err, want)
		}
	}
}

// TestYAMLMessages: a decoding error speaks of keys and sections, never of Go types.
func TestYAMLMessages(t *testing.T) {
	for _, tc := range []struct{ file, want string }{
		{"listeners: 5\n", "line 1: cannot unmarshal !!int `5` into the list of listeners"},
		{"listeners: [{tls: {client_cert: x}}]\n", "unknown key client_cert in tls"},
		{"admin: 5\n", "into admin"},
		{"frob: 1\n", "unknown key frob at the top level"},
	} {
		_, err := Parse("t.yaml", []byte(tc.file))
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "config.") {
			t.Errorf("%q: %v, want %q and no Go type", tc.file, err, tc.want)
		}
	}
}

// TestUnknownKeySuggestion: an unknown key in the config file names the nearest key of
// its section, with its line.
func TestUnknownKeySuggestion(t *testing.T) {
	for _, tc := range []struct{ file, want string }{
		{"listeners:\n  - name: a\n    tls:\n      clientca: y\n", "line 4: unknown key clientca in tls (did you mean client_ca?)"},
		{"drain_timout: 5s\n", "line 1: unknown key drain_timout at the top level (did you mean drain_timeout?)"},
		{"listeners:\n  - polcy: {}\n", "line 2: unknown key polcy in a listener (did you mean policy?)"},
		{"listeners:\n  - zzzzzzzz: 1\n", "line 2: unknown key zzzzzzzz in a listener\n"},
	} {
		_, err := Parse("f.yaml", []byte(tc.file))
		if err == nil || !strings.Contains(err.Error()+"\n", tc.want) {
			t.Errorf("%q: %v, want %q", tc.file, err, tc.want)
		}
	}
}
