package config

import (
	"fmt"
	"reflect"
	"strings"
)

// SNI serves several tenants on one TCP listener (#18), each with its own server
// certificate, client CA or PSKs, policy and upstream, chosen by the server name of the
// ClientHello. The listener's own tls, psk, policy and upstream are the default entry,
// serving names no tenant has (unknown: default), or are not used (unknown: refuse).
type SNI struct {
	Unknown string   `yaml:"unknown"` // default | refuse
	Tenants []Tenant `yaml:"tenants"`
}

// Tenant is one entry of SNI.
type Tenant struct {
	Name        string   `yaml:"name"`
	ServerNames []string `yaml:"server_names"`
	Upstream    string   `yaml:"upstream"` // default: the listener's
	TLS         TLS      `yaml:"tls"`
	PSK         PSK      `yaml:"psk"`
	Policy      Policy   `yaml:"policy"`
}

// TenantSpec is one validated tenant.
type TenantSpec struct {
	ServerNames []string // lower case
	Spec        ListenerSpec
}

// SNISpec is a listener's validated SNI routing; nil Tenants means none.
type SNISpec struct {
	Tenants       []TenantSpec
	RefuseUnknown bool
}

// buildSNI validates l's tenants. Each is built as a listener of its own named
// "<listener>/<tenant>", sharing the listener's address, limits and timeouts.
func buildSNI(l Listener, key KeyNamer) (SNISpec, []error) {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	var s SNISpec
	switch l.SNI.Unknown {
	case "", "default":
	case "refuse":
		s.RefuseUnknown = true
	default:
		bad("%s %q: want default or refuse", key("sni.unknown"), l.SNI.Unknown)
	}
	if len(l.SNI.Tenants) == 0 {
		if l.SNI.Unknown != "" {
			bad("%s is set but %s lists none", key("sni.unknown"), key("sni.tenants"))
		}
		return s, errs
	}
	if l.Transport == "dtls" {
		bad("%s on a DTLS listener: tenants by server name are served on TCP listeners only", key("sni.tenants"))
	}
	seen := map[string]string{}
	for i, t := range l.SNI.Tenants {
		tkey := func(k string) string { return key(fmt.Sprintf("sni.tenants[%d].%s", i, k)) }
		if t.Name == "" || strings.ContainsAny(t.Name, "/ ") {
			bad("%s %q: give each tenant a name without spaces or slashes", tkey("name"), t.Name)
		}
		if len(t.ServerNames) == 0 {
			bad("%s: list the server names (SNI) this tenant serves", tkey("server_names"))
		}
		var names []string
		for _, n := range t.ServerNames {
			n = strings.ToLower(n)
			if other, dup := seen[n]; dup {
				bad("%s: %q is served by tenant %s already", tkey("server_names"), n, other)
			}
			seen[n] = t.Name
			names = append(names, n)
		}
		up := t.Upstream
		if up == "" {
			up = l.Upstream
		}
		sp, e := BuildListener(Listener{Name: l.Name + "/" + t.Name, Listen: l.Listen, Upstream: up, TLS: t.TLS, PSK: t.PSK,
			Policy: t.Policy, Limits: l.Limits, Timeouts: l.Timeouts}, tkey)
		errs = append(errs, e...)
		s.Tenants = append(s.Tenants, TenantSpec{ServerNames: names, Spec: sp})
	}
	return s, errs
}

// sniKeys are the keys of the sni section, which no flag sets (flags describe one
// listener with one entry).
func sniKeys() []string {
	keys := []string{"sni.unknown", "sni.tenants"}
	var walk func(t reflect.Type, prefix string)
	walk = func(t reflect.Type, prefix string) {
		for i := range t.NumField() {
			name, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
			keys = append(keys, prefix+name)
			if ft := t.Field(i).Type; ft.Kind() == reflect.Struct {
				walk(ft, prefix+name+".")
			}
		}
	}
	walk(reflect.TypeOf(Tenant{}), "sni.tenants.")
	return keys
}
