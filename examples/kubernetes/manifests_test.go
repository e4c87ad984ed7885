package kubernetes

import (
	"bytes"
	"cmp"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/mqtls/mqtls/handshake/handshaketest"
)

// What the example promises, beyond what the flags say.
const (
	imageUser    = 65532 // the image's USER (distroless nonroot)
	tlsPort      = 8883  // MQTT over TLS (IANA's secure-mqtt)
	dtlsPort     = 5684  // MQTT over DTLS, as DESIGN.md has it
	metricsPath  = "/metrics"
	livenessPath = "/healthz"
	readyPath    = "/readyz"
)

// fileFlags are the serve flags that name files; in a pod they must come from a mount.
var fileFlags = []string{"cert", "key", "client-ca", "psk-file", "crl", "config"}

// TestManifests checks every mqtls container of every Deployment in this directory (and
// below) against the real binary and against the manifests around it.
func TestManifests(t *testing.T) {
	m := loadManifests(t)
	found := 0
	for _, d := range m.deployments {
		pod := d.Spec.Template
		t.Run(d.Metadata.Name, func(t *testing.T) {
			if !selects(d.Spec.Selector.MatchLabels, pod.Metadata.Labels) {
				t.Errorf("%s: selector %v does not select the pod template's labels %v", d.file, d.Spec.Selector.MatchLabels, pod.Metadata.Labels)
			}
			checkPodSecurity(t, d.file, pod.Spec)
			for _, c := range pod.Spec.allContainers() {
				if !isMqtls(c) {
					continue
				}
				found++
				t.Run(c.Name, func(t *testing.T) { checkMqtls(t, m, d, c) })
			}
		})
	}
	if found == 0 {
		t.Fatal("no Deployment here has an mqtls container (an image named mqtls)")
	}
	for _, c := range m.certificates {
		if c.Spec.IssuerRef.Kind == "Issuer" && !slices.ContainsFunc(m.issuers, func(i object) bool { return i.Metadata.Name == c.Spec.IssuerRef.Name }) {
			t.Errorf("%s: Certificate %s is issued by Issuer %q, which no manifest here makes", c.file, c.Metadata.Name, c.Spec.IssuerRef.Name)
		}
	}
}

// checkMqtls runs every check on one mqtls container c of Deployment d.
func checkMqtls(t *testing.T, m *manifestSet, d deployment, c container) {
	pod := d.Spec.Template
	help := serveHelp(t)
	s := settingsOf(t, d.file, c, help)

	t.Run("check", func(t *testing.T) { runCheck(t, m, pod.Spec, c, s) })

	t.Run("admin", func(t *testing.T) {
		host, port := splitPort(t, "--admin-listen", s.need(t, "admin-listen"))
		if ip := net.ParseIP(host); host == "localhost" || ip != nil && ip.IsLoopback() {
			t.Errorf("--admin-listen %s: the kubelet's probes and Prometheus come from outside the pod; listen on :%d", s.get("admin-listen"), port)
		}
		if p, ok := c.port(intOrString{Int: port}); !ok || p.protocol() != "TCP" {
			t.Errorf("container %s declares no TCP port %d for --admin-listen", c.Name, port)
		}
		for _, pr := range []struct {
			name, path string
			probe      *probe
		}{{"livenessProbe", livenessPath, c.LivenessProbe}, {"readinessProbe", readyPath, c.ReadinessProbe}} {
			switch {
			case pr.probe == nil || pr.probe.HTTPGet == nil:
				t.Errorf("container %s has no %s with httpGet %s", c.Name, pr.name, pr.path)
			case pr.probe.HTTPGet.Path != pr.path:
				t.Errorf("%s path %q, want %s", pr.name, pr.probe.HTTPGet.Path, pr.path)
			case pr.probe.HTTPGet.Scheme != "" && pr.probe.HTTPGet.Scheme != "HTTP":
				t.Errorf("%s scheme %s: the admin listener speaks plain HTTP", pr.name, pr.probe.HTTPGet.Scheme)
			default:
				if p, ok := c.port(pr.probe.HTTPGet.Port); !ok || p.ContainerPort != port {
					t.Errorf("%s port %v is not --admin-listen's port %d", pr.name, pr.probe.HTTPGet.Port, port)
				}
			}
		}
		a := pod.Metadata.Annotations
		if a["prometheus.io/scrape"] != "true" || a["prometheus.io/port"] != strconv.Itoa(port) ||
			(a["prometheus.io/path"] != "" && a["prometheus.io/path"] != metricsPath) {
			t.Errorf("pod annotations %v: want prometheus.io/scrape \"true\", prometheus.io/port %q and prometheus.io/path %s", a, strconv.Itoa(port), metricsPath)
		}
		for _, pm := range m.podMonitors {
			if !selects(pm.Spec.Selector.MatchLabels, pod.Metadata.Labels) {
				continue
			}
			for _, e := range pm.Spec.PodMetricsEndpoints {
				if p, ok := c.port(intOrString{Str: e.Port}); !ok || p.ContainerPort != port || (e.Path != "" && e.Path != metricsPath) {
					t.Errorf("%s: PodMonitor %s scrapes port %q path %q, want the admin port (%d) and %s", pm.file, pm.Metadata.Name, e.Port, e.Path, port, metricsPath)
				}
			}
		}
	})

	t.Run("security", func(t *testing.T) {
		sc := c.SecurityContext
		if sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot {
			t.Errorf("container %s: securityContext.runAsNonRoot must be true", c.Name)
		}
		if sc.SeccompProfile.Type != "RuntimeDefault" {
			t.Errorf("container %s: securityContext.seccompProfile.type %q, want RuntimeDefault", c.Name, sc.SeccompProfile.Type)
		}
		if u := effective(sc.RunAsUser, pod.Spec.SecurityContext.RunAsUser); u == nil || *u != imageUser {
			t.Errorf("container %s: runAsUser must be %d, the image's USER", c.Name, imageUser)
		}
	})

	t.Run("shutdown", func(t *testing.T) {
		drain := s.duration(t, "drain-timeout")
		if !s.explicit("drain-timeout") {
			t.Errorf("--drain-timeout is not set: set it below terminationGracePeriodSeconds")
		}
		grace := pod.Spec.TerminationGracePeriodSeconds
		if grace == nil || time.Duration(*grace)*time.Second <= drain {
			t.Errorf("terminationGracePeriodSeconds %v must exceed --drain-timeout %v, or the kubelet kills mqtls mid-drain", deref(grace), drain)
		}
		// Every container gets SIGTERM at once: a broker in the pod must outlive the drain.
		for _, b := range pod.Spec.Containers {
			if isMqtls(b) {
				continue
			}
			wait := preStopSleep(b)
			if wait <= drain || grace != nil && wait >= time.Duration(*grace)*time.Second {
				t.Errorf("container %s: its preStop must sleep longer than --drain-timeout %v and less than terminationGracePeriodSeconds %v (it sleeps %v), so sessions being drained still reach it",
					b.Name, drain, deref(grace), wait)
			}
		}
	})

	t.Run("tls-secret", func(t *testing.T) { checkSecretSources(t, m, pod.Spec, c, s) })
	t.Run("service", func(t *testing.T) { checkServices(t, m, pod, c, s) })
	t.Run("networkpolicy", func(t *testing.T) { checkNetworkPolicy(t, pod.Metadata.Labels, c, s) })
	t.Run("broker", func(t *testing.T) { checkBroker(t, m, pod.Spec, s) })

	t.Run("resources", func(t *testing.T) {
		for _, b := range pod.Spec.allContainers() {
			checkResources(t, b)
		}
		limit, err := parseQuantity(c.Resources.Limits["memory"])
		if v := c.env("GOMEMLIMIT"); v != "" && err == nil {
			if n, err := parseGoBytes(v); err != nil || n >= limit {
				t.Errorf("GOMEMLIMIT %q must be below the memory limit %s", v, c.Resources.Limits["memory"])
			}
		}
	})

	t.Run("disruption", func(t *testing.T) {
		if !slices.ContainsFunc(m.pdbs, func(p pdb) bool { return selects(p.Spec.Selector.MatchLabels, pod.Metadata.Labels) }) {
			t.Errorf("no PodDisruptionBudget selects the pod %v", pod.Metadata.Labels)
		}
		if r := s.duration(t, "reload-interval"); r <= 0 {
			t.Errorf("--reload-interval %v: a rotated Secret reaches mqtls only by polling; set it above 0", r)
		}
	})
}

// checkPodSecurity checks the pod-level settings every container inherits.
func checkPodSecurity(t *testing.T, file string, spec podSpec) {
	sc := spec.SecurityContext
	if sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot {
		t.Errorf("%s: pod securityContext.runAsNonRoot must be true", file)
	}
	if sc.SeccompProfile.Type != "RuntimeDefault" {
		t.Errorf("%s: pod securityContext.seccompProfile.type %q, want RuntimeDefault", file, sc.SeccompProfile.Type)
	}
	if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
		t.Errorf("%s: automountServiceAccountToken must be false: nothing in the pod talks to the API server", file)
	}
	for _, c := range spec.allContainers() {
		sc := c.SecurityContext
		if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
			t.Errorf("%s: container %s: securityContext.allowPrivilegeEscalation must be false", file, c.Name)
		}
		if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
			t.Errorf("%s: container %s: securityContext.readOnlyRootFilesystem must be true", file, c.Name)
		}
		if !slices.Contains(sc.Capabilities.Drop, "ALL") {
			t.Errorf("%s: container %s: securityContext.capabilities.drop must hold ALL", file, c.Name)
		}
		if sc.RunAsNonRoot != nil && !*sc.RunAsNonRoot {
			t.Errorf("%s: container %s: securityContext.runAsNonRoot false overrides the pod's", file, c.Name)
		}
		if sc.SeccompProfile.Type != "" && sc.SeccompProfile.Type != "RuntimeDefault" {
			t.Errorf("%s: container %s: securityContext.seccompProfile.type %q overrides the pod's RuntimeDefault", file, c.Name, sc.SeccompProfile.Type)
		}
	}
}

// runCheck runs `mqtls check` with c's arguments and MQTLS_* environment, its Secret
// mounts replaced by a throw-away PKI in a temporary directory laid out as the kubelet lays
// out a Secret volume (files behind a ..data symlink).
func runCheck(t *testing.T, m *manifestSet, spec podSpec, c container, s settings) {
	bin := mqtlsBinary(t)
	root := t.TempDir()

	ca, err := handshaketest.NewCA("mqtls example device CA")
	if err != nil {
		t.Fatal(err)
	}
	for _, mnt := range c.VolumeMounts {
		v, ok := spec.volume(mnt.Name)
		if !ok || v.Secret == nil {
			continue
		}
		// The server certificate for the names the Certificate gives, as cert-manager would.
		tmpl := handshaketest.Template{CommonName: "mqtls", ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
		for _, crt := range m.certificates {
			if crt.Spec.SecretName == v.Secret.SecretName {
				tmpl.CommonName, tmpl.DNSNames = cmp.Or(crt.Spec.CommonName, tmpl.CommonName), crt.Spec.DNSNames
			}
		}
		server, err := ca.Issue(tmpl)
		if err != nil {
			t.Fatal(err)
		}
		fixtures := map[string][]byte{"tls.crt": server.CertPEM, "tls.key": server.KeyPEM, "ca.crt": ca.CertPEM}
		files := map[string][]byte{}
		for _, key := range m.secretKeys(v.Secret.SecretName) {
			data, ok := fixtures[key]
			if !ok {
				t.Fatalf("Secret %s has key %q, for which this test has no fixture", v.Secret.SecretName, key)
			}
			if file := v.Secret.pathOf(key); file != "" {
				files[file] = data
			}
		}
		writeSecretVolume(t, filepath.Join(root, mnt.MountPath), files)
	}

	var args []string
	for _, a := range c.Args[1:] {
		name, value, _ := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		if slices.Contains(fileFlags, name) {
			value = filepath.Join(root, value)
		}
		args = append(args, "--"+name+"="+value)
	}
	env := slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "MQTLS_") })
	for _, e := range c.Env {
		if e.ValueFrom != nil {
			continue // settingsOf refused MQTLS_* ones
		}
		value := e.Value
		if name, ok := flagOfEnv(e.Name); ok && slices.Contains(fileFlags, name) {
			value = filepath.Join(root, value)
		}
		env = append(env, e.Name+"="+value)
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append([]string{"check"}, args...)...)
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	t.Logf("mqtls check %s\n%s", strings.Join(args, " "), out)
	if err != nil {
		t.Fatalf("mqtls check with container %s's flags and environment failed: %v", c.Name, err)
	}
	if lines := strings.Split(strings.TrimSpace(string(out)), "\n"); lines[len(lines)-1] != "ok" {
		t.Errorf("mqtls check did not end with ok")
	}
}

// writeSecretVolume lays files out under dir as the kubelet does for a Secret volume: the
// data in a timestamped directory, ..data pointing at it, and each file a symlink through
// ..data, so that a rotation swaps one symlink.
func writeSecretVolume(t *testing.T, dir string, files map[string][]byte) {
	t.Helper()
	ts := "..2026_01_02_03_04_05.000000001"
	if err := os.MkdirAll(filepath.Join(dir, ts), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, data := range files {
		d := filepath.Join(dir, ts, filepath.Dir(name))
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if _, err := handshaketest.WriteFile(d, filepath.Base(name), data); err != nil {
			t.Fatal(err)
		}
		top, _, _ := strings.Cut(name, "/")
		if _, err := os.Lstat(filepath.Join(dir, top)); errors.Is(err, fs.ErrNotExist) {
			if err := os.Symlink(filepath.Join("..data", top), filepath.Join(dir, top)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := os.Symlink(ts, filepath.Join(dir, "..data")); err != nil && !errors.Is(err, fs.ErrExist) {
		t.Fatal(err)
	}
}

// checkSecretSources checks that every file flag names a file in a whole-Secret mount of
// the container, and that every way this directory makes that Secret (a cert-manager
// Certificate, a plain Secret) makes one that holds the file.
func checkSecretSources(t *testing.T, m *manifestSet, spec podSpec, c container, s settings) {
	var secrets []string
	for _, name := range fileFlags {
		for _, file := range s.all(name) {
			mnt, rel, ok := c.mountOf(file)
			if !ok {
				t.Errorf("--%s %s is under no volumeMount of container %s", name, file, c.Name)
				continue
			}
			if mnt.SubPath != "" {
				t.Errorf("--%s %s: mount %s uses subPath, which the kubelet never updates: a rotated Secret would not reach mqtls", name, file, mnt.Name)
			}
			v, ok := spec.volume(mnt.Name)
			if !ok || v.Secret == nil {
				t.Errorf("--%s %s: volume %s is not a Secret volume", name, file, mnt.Name)
				continue
			}
			key := v.Secret.keyOf(rel)
			secret := v.Secret.SecretName
			secrets = append(secrets, secret)
			if key == "" {
				t.Errorf("--%s %s: no item of volume %s puts a file at %s", name, file, mnt.Name, rel)
				continue
			}
			var certs, plain int
			for _, crt := range m.certificates {
				if crt.Spec.SecretName == secret {
					certs++
					if !slices.Contains(certManagerKeys, key) {
						t.Errorf("--%s %s: key %q is not one cert-manager writes (%v) into Secret %s (%s)", name, file, key, certManagerKeys, secret, crt.file)
					}
				}
			}
			for _, sec := range m.secrets {
				if sec.Metadata.Name == secret {
					plain++
					if !slices.Contains(sec.keys(), key) {
						t.Errorf("--%s %s: Secret %s in %s has no key %q", name, file, secret, sec.file, key)
					}
				}
			}
			if certs == 0 || plain == 0 {
				t.Errorf("--%s %s: Secret %s is made by %d Certificate(s) and %d Secret manifest(s); want one of each (cert-manager, and by hand)", name, file, secret, certs, plain)
			}
		}
	}
	for _, crt := range m.certificates {
		if slices.Contains(secrets, crt.Spec.SecretName) {
			checkCertificate(t, crt, s)
		}
	}
}

// certManagerKeys are the keys cert-manager writes into a Certificate's Secret.
var certManagerKeys = []string{"tls.crt", "tls.key", "ca.crt"}

func checkCertificate(t *testing.T, crt certificate, s settings) {
	if crt.Spec.PrivateKey.Algorithm != "ECDSA" {
		t.Errorf("%s: Certificate %s: privateKey.algorithm %q; ECDSA handshakes fastest", crt.file, crt.Metadata.Name, crt.Spec.PrivateKey.Algorithm)
	}
	renew, err := time.ParseDuration(crt.Spec.RenewBefore)
	if warn := s.duration(t, "expiry-warning"); err != nil || renew <= warn {
		t.Errorf("%s: Certificate %s: renewBefore %q should exceed --expiry-warning %v, so mqtls warns only when a renewal failed", crt.file, crt.Metadata.Name, crt.Spec.RenewBefore, warn)
	}
}

// checkServices checks that a Service exposes --listen as 8883/TCP and --dtls-listen as
// 5684/UDP, and that no Service port of the pod reaches anything but those.
func checkServices(t *testing.T, m *manifestSet, pod podTemplate, c container, s settings) {
	_, listen := splitPort(t, "--listen", s.need(t, "listen"))
	_, dtls := splitPort(t, "--dtls-listen", s.need(t, "dtls-listen"))
	want := map[string]int{fmt.Sprintf("%d/TCP", tlsPort): listen, fmt.Sprintf("%d/UDP", dtlsPort): dtls}
	got := map[string]int{}
	for _, svc := range m.services {
		if !selects(svc.Spec.Selector, pod.Metadata.Labels) {
			continue
		}
		for _, p := range svc.Spec.Ports {
			proto := cmp.Or(p.Protocol, "TCP")
			target := p.TargetPort
			if target == (intOrString{}) {
				target = intOrString{Int: p.Port}
			}
			cp, ok := c.port(target)
			if !ok || cp.protocol() != proto {
				t.Errorf("%s: Service %s port %d/%s targets %v, which is no %s port of container %s", svc.file, svc.Metadata.Name, p.Port, proto, target, proto, c.Name)
				continue
			}
			if cp.ContainerPort != listen && cp.ContainerPort != dtls {
				t.Errorf("%s: Service %s port %d/%s reaches container port %d, which is neither --listen nor --dtls-listen", svc.file, svc.Metadata.Name, p.Port, proto, cp.ContainerPort)
			}
			got[fmt.Sprintf("%d/%s", p.Port, proto)] = cp.ContainerPort
		}
	}
	for port, target := range want {
		if got[port] != target {
			t.Errorf("no Service exposes %s on the container's port %d (got %v)", port, target, got)
		}
	}
	for _, port := range []struct {
		flag  string
		port  int
		proto string
	}{{"--listen", listen, "TCP"}, {"--dtls-listen", dtls, "UDP"}} {
		if p, ok := c.port(intOrString{Int: port.port}); !ok || p.protocol() != port.proto {
			t.Errorf("container %s declares no %s port %d for %s", c.Name, port.proto, port.port, port.flag)
		}
	}
}

// checkBroker checks a Mosquitto in the pod: it must listen on loopback only (else devices
// could reach it around mqtls, with whatever client ID they like), --upstream must be one
// of its listeners, and ACL patterns on %c or %u need the binding that makes them true.
func checkBroker(t *testing.T, m *manifestSet, spec podSpec, s settings) {
	upHost, upPort := splitPort(t, "--upstream", s.need(t, "upstream"))
	brokers := 0
	for _, b := range spec.Containers {
		if !strings.HasPrefix(b.Image, "eclipse-mosquitto:") {
			continue
		}
		brokers++
		confPath := "/mosquitto/config/mosquitto.conf" // the image's CMD
		if i := slices.Index(b.Args, "-c"); i >= 0 && i+1 < len(b.Args) {
			confPath = b.Args[i+1]
		}
		conf, ok := m.configFile(spec, b, confPath)
		if !ok {
			t.Errorf("container %s: %s comes from no ConfigMap mounted here", b.Name, confPath)
			continue
		}
		upstreamFound := false
		persistence := ""
		location := "/mosquitto/data/" // the image's default, on its read-only root file system
		for _, line := range strings.Split(conf, "\n") {
			f := strings.Fields(line)
			if len(f) == 0 || strings.HasPrefix(f[0], "#") {
				continue
			}
			switch f[0] {
			case "port", "bind_address":
				t.Errorf("mosquitto.conf: %q: use listener <port> 127.0.0.1", line)
			case "listener":
				if len(f) < 3 {
					t.Errorf("mosquitto.conf: %q listens on every interface: devices could reach the broker around mqtls", line)
					continue
				}
				if ip := net.ParseIP(f[2]); f[1] != "0" && (ip == nil || !ip.IsLoopback()) {
					t.Errorf("mosquitto.conf: %q is not loopback: devices could reach the broker around mqtls", line)
				}
				upstreamFound = upstreamFound || f[1] == strconv.Itoa(upPort) && f[2] == upHost
			case "persistence":
				persistence = strings.Join(f[1:], " ")
			case "persistence_location":
				location = strings.Join(f[1:], " ")
			case "acl_file":
				acl, ok := m.configFile(spec, b, f[1])
				if !ok {
					t.Errorf("mosquitto.conf: acl_file %s comes from no ConfigMap mounted in container %s", f[1], b.Name)
					continue
				}
				if strings.Contains(acl, "%c") && s.get("client-id") != "enforce" && s.get("client-id") != "rewrite" {
					t.Errorf("the ACL uses %%c, but --client-id %q does not make the client ID the device's identity: use rewrite or enforce", s.get("client-id"))
				}
				if strings.Contains(acl, "%u") && s.get("username") != "identity" {
					t.Errorf("the ACL uses %%u, but --username %q does not make the user name the device's identity", s.get("username"))
				}
			}
		}
		if !upstreamFound {
			t.Errorf("--upstream %s is no listener of container %s", s.get("upstream"), b.Name)
		}
		// Persistence is a choice the README explains: say it, and if it is on, give it a
		// volume it can write (the root file system is read-only).
		switch persistence {
		case "false":
		case "true":
			mnt, _, ok := b.mountOf(path.Join(location, "mosquitto.db"))
			if v, isVol := spec.volume(mnt.Name); !ok || mnt.ReadOnly || !isVol || v.Secret != nil || v.ConfigMap != nil {
				t.Errorf("mosquitto.conf: persistence true, but persistence_location %s is on no writable volume of container %s", location, b.Name)
			}
		default:
			t.Errorf("mosquitto.conf: persistence %q; say false or true, and why (README, Broker persistence)", persistence)
		}
	}
	if brokers == 0 {
		t.Errorf("the pod has no eclipse-mosquitto container next to mqtls")
	}
}

func checkResources(t *testing.T, c container) {
	for _, res := range []string{"cpu", "memory"} {
		req, err1 := parseQuantity(c.Resources.Requests[res])
		lim, err2 := parseQuantity(c.Resources.Limits[res])
		if err1 != nil || err2 != nil || req > lim {
			t.Errorf("container %s: %s request %q and limit %q: want both, request no more than limit", c.Name, res, c.Resources.Requests[res], c.Resources.Limits[res])
		}
	}
}

// preStopSleep is how long a container's preStop hook sleeps (sleep N, possibly through sh -c).
func preStopSleep(c container) time.Duration {
	if c.Lifecycle.PreStop == nil || c.Lifecycle.PreStop.Exec == nil {
		return 0
	}
	m := regexp.MustCompile(`(?:^|\s)sleep\s+(\d+)\s*$`).FindStringSubmatch(strings.Join(c.Lifecycle.PreStop.Exec.Command, " "))
	if m == nil {
		return 0
	}
	n, _ := strconv.Atoi(m[1])
	return time.Duration(n) * time.Second
}

// settings are an mqtls container's serve flags: from --name=value arguments, then from
// MQTLS_* environment variables (which a flag on the command line overrides), then defaults.
type settings struct {
	args     map[string][]string
	env      map[string]string
	defaults map[string]string
}

func (s settings) all(name string) []string {
	if v, ok := s.args[name]; ok {
		return v
	}
	if v, ok := s.env[name]; ok {
		return []string{v}
	}
	return nil
}

func (s settings) explicit(name string) bool { return len(s.all(name)) > 0 }

func (s settings) get(name string) string {
	if v := s.all(name); len(v) > 0 {
		return v[len(v)-1]
	}
	return s.defaults[name]
}

func (s settings) need(t *testing.T, name string) string {
	t.Helper()
	if !s.explicit(name) {
		t.Fatalf("--%s is not set: the example's checks need it explicit", name)
	}
	return s.get(name)
}

func (s settings) duration(t *testing.T, name string) time.Duration {
	t.Helper()
	d, err := time.ParseDuration(s.get(name))
	if err != nil {
		t.Fatalf("--%s %q: %v", name, s.get(name), err)
	}
	return d
}

// settingsOf reads c's serve flags, refusing what the test cannot follow or what mqtls
// would silently ignore (an MQTLS_* variable that names no flag).
func settingsOf(t *testing.T, file string, c container, help serveFlagHelp) settings {
	t.Helper()
	if len(c.Command) > 0 && !slices.Equal(c.Command, []string{"/mqtls"}) {
		t.Fatalf("%s: container %s: command %q overrides the image's ENTRYPOINT; use args", file, c.Name, c.Command)
	}
	if len(c.Args) == 0 || c.Args[0] != "serve" {
		t.Fatalf("%s: container %s: args must start with serve (args replace the image's CMD)", file, c.Name)
	}
	s := settings{args: map[string][]string{}, env: map[string]string{}, defaults: help.defaults}
	for _, a := range c.Args[1:] {
		name, value, ok := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		if !strings.HasPrefix(a, "--") || !ok {
			t.Fatalf("%s: container %s: argument %q: write flags as --name=value", file, c.Name, a)
		}
		s.args[name] = append(s.args[name], value)
	}
	for _, e := range c.Env {
		name, ok := flagOfEnv(e.Name)
		if !ok {
			continue
		}
		if !slices.Contains(help.envs, e.Name) {
			t.Errorf("%s: container %s: %s names no serve flag; mqtls would ignore it", file, c.Name, e.Name)
		}
		if e.ValueFrom != nil {
			t.Fatalf("%s: container %s: %s uses valueFrom, which this test cannot resolve", file, c.Name, e.Name)
		}
		s.env[name] = e.Value
	}
	return s
}

// flagOfEnv is the flag an MQTLS_* variable sets: MQTLS_CLIENT_ID sets client-id.
func flagOfEnv(env string) (string, bool) {
	rest, ok := strings.CutPrefix(env, "MQTLS_")
	return strings.ToLower(strings.ReplaceAll(rest, "_", "-")), ok
}

// serveFlagHelp is what `mqtls check --help` says about the flags: their environment
// variables and defaults.
type serveFlagHelp struct {
	envs     []string
	defaults map[string]string
}

var (
	helpFlag    = regexp.MustCompile(`^\s*--([a-z0-9-]+)\b.*\[\$(MQTLS_[A-Z0-9_]+)\]\s*$`)
	helpDefault = regexp.MustCompile(`\(default: (?:"([^"]*)"|([^)]*))\)`)
)

func serveHelp(t *testing.T) serveFlagHelp {
	t.Helper()
	out, err := exec.Command(mqtlsBinary(t), "check", "--help").CombinedOutput()
	if err != nil {
		t.Fatalf("mqtls check --help: %v\n%s", err, out)
	}
	h := serveFlagHelp{defaults: map[string]string{}}
	for _, line := range strings.Split(string(out), "\n") {
		m := helpFlag.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		h.envs = append(h.envs, m[2])
		if d := helpDefault.FindStringSubmatch(line); d != nil {
			h.defaults[m[1]] = d[1] + d[2]
		}
	}
	if !slices.Contains(h.envs, "MQTLS_CLIENT_ID") || h.defaults["drain-timeout"] == "" {
		t.Fatalf("cannot read flags from mqtls check --help:\n%s", out)
	}
	return h
}

// mqtlsBinary builds mqtls once, as make release does (static, -trimpath), which is what
// the image runs; the build shares make check-release's cache.
func mqtlsBinary(t *testing.T) string {
	t.Helper()
	bin, err := buildOnce()
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

var (
	binDir    string
	buildOnce = sync.OnceValues(func() (string, error) {
		dir, err := os.MkdirTemp("", "mqtls-kubernetes-test-")
		if err != nil {
			return "", err
		}
		binDir = dir
		bin := filepath.Join(dir, "mqtls")
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", bin, "github.com/mqtls/mqtls/cmd/mqtls")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("building mqtls: %v\n%s", err, out)
		}
		return bin, nil
	})
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// The manifests, as far as these tests read them.

type object struct {
	APIVersion string   `yaml:"apiVersion"`
	Kind       string   `yaml:"kind"`
	Metadata   metadata `yaml:"metadata"`
	file       string
}

type metadata struct {
	Name        string            `yaml:"name"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

type labelSelector struct {
	MatchLabels map[string]string `yaml:"matchLabels"`
}

type deployment struct {
	object `yaml:",inline"`
	Spec   struct {
		Selector labelSelector `yaml:"selector"`
		Template podTemplate   `yaml:"template"`
	} `yaml:"spec"`
}

type podTemplate struct {
	Metadata metadata `yaml:"metadata"`
	Spec     podSpec  `yaml:"spec"`
}

type podSpec struct {
	AutomountServiceAccountToken  *bool           `yaml:"automountServiceAccountToken"`
	TerminationGracePeriodSeconds *int64          `yaml:"terminationGracePeriodSeconds"`
	SecurityContext               securityContext `yaml:"securityContext"`
	InitContainers                []container     `yaml:"initContainers"`
	Containers                    []container     `yaml:"containers"`
	Volumes                       []volume        `yaml:"volumes"`
}

func (p podSpec) allContainers() []container { return slices.Concat(p.InitContainers, p.Containers) }

func (p podSpec) volume(name string) (volume, bool) {
	i := slices.IndexFunc(p.Volumes, func(v volume) bool { return v.Name == name })
	if i < 0 {
		return volume{}, false
	}
	return p.Volumes[i], true
}

type securityContext struct {
	RunAsNonRoot             *bool  `yaml:"runAsNonRoot"`
	RunAsUser                *int64 `yaml:"runAsUser"`
	RunAsGroup               *int64 `yaml:"runAsGroup"`
	ReadOnlyRootFilesystem   *bool  `yaml:"readOnlyRootFilesystem"`
	AllowPrivilegeEscalation *bool  `yaml:"allowPrivilegeEscalation"`
	Capabilities             struct {
		Drop []string `yaml:"drop"`
	} `yaml:"capabilities"`
	SeccompProfile struct {
		Type string `yaml:"type"`
	} `yaml:"seccompProfile"`
}

type container struct {
	Name            string          `yaml:"name"`
	Image           string          `yaml:"image"`
	Command         []string        `yaml:"command"`
	Args            []string        `yaml:"args"`
	Env             []envVar        `yaml:"env"`
	Ports           []containerPort `yaml:"ports"`
	VolumeMounts    []volumeMount   `yaml:"volumeMounts"`
	LivenessProbe   *probe          `yaml:"livenessProbe"`
	ReadinessProbe  *probe          `yaml:"readinessProbe"`
	SecurityContext securityContext `yaml:"securityContext"`
	Lifecycle       struct {
		PreStop *struct {
			Exec *struct {
				Command []string `yaml:"command"`
			} `yaml:"exec"`
		} `yaml:"preStop"`
	} `yaml:"lifecycle"`
	Resources struct {
		Requests map[string]string `yaml:"requests"`
		Limits   map[string]string `yaml:"limits"`
	} `yaml:"resources"`
}

// isMqtls tells an mqtls container by its image: [registry/]…/mqtls[:tag][@digest].
func isMqtls(c container) bool {
	ref, _, _ := strings.Cut(c.Image, "@")
	name := path.Base(ref)
	name, _, _ = strings.Cut(name, ":")
	return name == "mqtls"
}

func (c container) env(name string) string {
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value
		}
	}
	return ""
}

// port finds the container port p names, by name or number.
func (c container) port(p intOrString) (containerPort, bool) {
	for _, cp := range c.Ports {
		if p.Str != "" && cp.Name == p.Str || p.Str == "" && cp.ContainerPort == p.Int {
			return cp, true
		}
	}
	return containerPort{}, false
}

// mountOf finds the mount file lies under, and file's path inside it.
func (c container) mountOf(file string) (volumeMount, string, bool) {
	for _, m := range c.VolumeMounts {
		if rel, ok := strings.CutPrefix(path.Clean(file), strings.TrimSuffix(m.MountPath, "/")+"/"); ok {
			return m, rel, true
		}
	}
	return volumeMount{}, "", false
}

type envVar struct {
	Name      string     `yaml:"name"`
	Value     string     `yaml:"value"`
	ValueFrom *yaml.Node `yaml:"valueFrom"`
}

type containerPort struct {
	Name          string `yaml:"name"`
	ContainerPort int    `yaml:"containerPort"`
	Protocol      string `yaml:"protocol"`
}

func (p containerPort) protocol() string { return cmp.Or(p.Protocol, "TCP") }

type volumeMount struct {
	Name      string `yaml:"name"`
	MountPath string `yaml:"mountPath"`
	SubPath   string `yaml:"subPath"`
	ReadOnly  bool   `yaml:"readOnly"`
}

type probe struct {
	HTTPGet *struct {
		Path   string      `yaml:"path"`
		Port   intOrString `yaml:"port"`
		Scheme string      `yaml:"scheme"`
	} `yaml:"httpGet"`
}

type volume struct {
	Name      string     `yaml:"name"`
	Secret    *keyVolume `yaml:"secret"`
	ConfigMap *keyVolume `yaml:"configMap"`
}

// keyVolume is a Secret or ConfigMap volume: every key a file, or only the listed items.
type keyVolume struct {
	SecretName string `yaml:"secretName"`
	Name       string `yaml:"name"`
	Items      []struct {
		Key  string `yaml:"key"`
		Path string `yaml:"path"`
	} `yaml:"items"`
}

// keyOf is the key whose file appears at file in the volume: "" when there is none.
func (v keyVolume) keyOf(file string) string {
	for _, it := range v.Items {
		if it.Path == file {
			return it.Key
		}
	}
	if len(v.Items) > 0 {
		return ""
	}
	return file
}

// pathOf is where key's file appears in the volume: "" when items leave it out.
func (v keyVolume) pathOf(key string) string {
	for _, it := range v.Items {
		if it.Key == key {
			return it.Path
		}
	}
	if len(v.Items) > 0 {
		return ""
	}
	return key
}

// intOrString is a port given by number or by name.
type intOrString struct {
	Int int
	Str string
}

func (p *intOrString) UnmarshalYAML(n *yaml.Node) error {
	if n.Tag == "!!int" {
		return n.Decode(&p.Int)
	}
	return n.Decode(&p.Str)
}

func (p intOrString) String() string {
	if p.Str != "" {
		return p.Str
	}
	return strconv.Itoa(p.Int)
}

type service struct {
	object `yaml:",inline"`
	Spec   struct {
		Selector map[string]string `yaml:"selector"`
		Ports    []struct {
			Name       string      `yaml:"name"`
			Port       int         `yaml:"port"`
			TargetPort intOrString `yaml:"targetPort"`
			Protocol   string      `yaml:"protocol"`
		} `yaml:"ports"`
	} `yaml:"spec"`
}

type pdb struct {
	object `yaml:",inline"`
	Spec   struct {
		Selector labelSelector `yaml:"selector"`
	} `yaml:"spec"`
}

type podMonitor struct {
	object `yaml:",inline"`
	Spec   struct {
		Selector            labelSelector `yaml:"selector"`
		PodMetricsEndpoints []struct {
			Port string `yaml:"port"`
			Path string `yaml:"path"`
		} `yaml:"podMetricsEndpoints"`
	} `yaml:"spec"`
}

type certificate struct {
	object `yaml:",inline"`
	Spec   struct {
		SecretName  string   `yaml:"secretName"`
		CommonName  string   `yaml:"commonName"`
		DNSNames    []string `yaml:"dnsNames"`
		RenewBefore string   `yaml:"renewBefore"`
		PrivateKey  struct {
			Algorithm string `yaml:"algorithm"`
		} `yaml:"privateKey"`
		IssuerRef struct {
			Name string `yaml:"name"`
			Kind string `yaml:"kind"`
		} `yaml:"issuerRef"`
	} `yaml:"spec"`
}

type secret struct {
	object     `yaml:",inline"`
	Data       map[string]string `yaml:"data"`
	StringData map[string]string `yaml:"stringData"`
}

func (s secret) keys() []string {
	var keys []string
	for k := range s.Data {
		keys = append(keys, k)
	}
	for k := range s.StringData {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return slices.Compact(keys)
}

type configMap struct {
	object `yaml:",inline"`
	Data   map[string]string `yaml:"data"`
}

// manifestSet is every manifest in this directory and below, by kind.
type manifestSet struct {
	deployments  []deployment
	services     []service
	pdbs         []pdb
	podMonitors  []podMonitor
	certificates []certificate
	issuers      []object
	secrets      []secret
	configMaps   []configMap
}

// secretKeys are the keys of the Secret called name, as any manifest here makes it.
func (m *manifestSet) secretKeys(name string) []string {
	var keys []string
	for _, c := range m.certificates {
		if c.Spec.SecretName == name {
			keys = append(keys, certManagerKeys...)
		}
	}
	for _, s := range m.secrets {
		if s.Metadata.Name == name {
			keys = append(keys, s.keys()...)
		}
	}
	slices.Sort(keys)
	return slices.Compact(keys)
}

// configFile is the content of the file at file in container c, if a ConfigMap here
// provides it.
func (m *manifestSet) configFile(spec podSpec, c container, file string) (string, bool) {
	mnt, rel, ok := c.mountOf(file)
	if !ok {
		return "", false
	}
	v, ok := spec.volume(mnt.Name)
	if !ok || v.ConfigMap == nil {
		return "", false
	}
	for _, cm := range m.configMaps {
		if cm.Metadata.Name == v.ConfigMap.Name {
			data, ok := cm.Data[v.ConfigMap.keyOf(rel)]
			return data, ok
		}
	}
	return "", false
}

// walkManifests calls fn with every YAML file in this directory and below.
func walkManifests(fn func(file string, data []byte) error) error {
	return filepath.WalkDir(".", func(file string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || (path.Ext(file) != ".yaml" && path.Ext(file) != ".yml") {
			return err
		}
		data, err := os.ReadFile(file)
		if err != nil {
			return err
		}
		return fn(file, data)
	})
}

func loadManifests(t *testing.T) *manifestSet {
	t.Helper()
	m := &manifestSet{}
	err := walkManifests(func(file string, data []byte) error {
		dec := yaml.NewDecoder(bytes.NewReader(data))
		for {
			var n yaml.Node
			if err := dec.Decode(&n); errors.Is(err, io.EOF) {
				return nil
			} else if err != nil {
				return fmt.Errorf("%s: %w", file, err)
			}
			var o object
			if err := n.Decode(&o); err != nil {
				return fmt.Errorf("%s: %w", file, err)
			}
			o.file = file
			if err := m.add(&n, o); err != nil {
				return fmt.Errorf("%s: %s %s: %w", file, o.Kind, o.Metadata.Name, err)
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func (m *manifestSet) add(n *yaml.Node, o object) error {
	switch o.Kind {
	case "Deployment":
		return decodeInto(n, o, &m.deployments)
	case "Service":
		return decodeInto(n, o, &m.services)
	case "PodDisruptionBudget":
		return decodeInto(n, o, &m.pdbs)
	case "PodMonitor":
		return decodeInto(n, o, &m.podMonitors)
	case "Certificate":
		return decodeInto(n, o, &m.certificates)
	case "Secret":
		return decodeInto(n, o, &m.secrets)
	case "ConfigMap":
		return decodeInto(n, o, &m.configMaps)
	case "Issuer", "ClusterIssuer":
		m.issuers = append(m.issuers, o)
		return nil
	case "Namespace", "NetworkPolicy", "Kustomization":
		return nil // schema_test.go checks these on the real API types
	}
	return fmt.Errorf("kind %q is not checked by this test: teach it, or leave the manifest out", o.Kind)
}

// decodeInto decodes n as a T, gives it o (with its file), and appends it to list.
func decodeInto[T any, P interface {
	*T
	setObject(object)
}](n *yaml.Node, o object, list *[]T) error {
	var v T
	if err := n.Decode(&v); err != nil {
		return err
	}
	P(&v).setObject(o)
	*list = append(*list, v)
	return nil
}

func (o *object) setObject(v object) { *o = v }

// selects tells whether a non-empty selector matches labels.
func selects(selector, labels map[string]string) bool {
	return len(selector) > 0 && subset(selector, labels)
}

func subset(sub, set map[string]string) bool {
	for k, v := range sub {
		if set[k] != v {
			return false
		}
	}
	return true
}

func splitPort(t *testing.T, flag, addr string) (string, int) {
	t.Helper()
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("%s %q: %v", flag, addr, err)
	}
	n, err := strconv.Atoi(port)
	if err != nil {
		t.Fatalf("%s %q: port is not a number", flag, addr)
	}
	return host, n
}

func effective[T any](container, pod *T) *T {
	if container != nil {
		return container
	}
	return pod
}

func deref[T any](p *T) any {
	if p == nil {
		return "unset"
	}
	return *p
}

// parseQuantity reads a Kubernetes quantity: CPU in millicores ("100m", "1", "0.5") or
// memory in bytes ("192Mi", "1G", "1048576").
func parseQuantity(q string) (float64, error) {
	units := []struct {
		suffix string
		mult   float64
	}{{"Ki", 1 << 10}, {"Mi", 1 << 20}, {"Gi", 1 << 30}, {"Ti", 1 << 40}, {"k", 1e3}, {"M", 1e6}, {"G", 1e9}, {"T", 1e12}, {"m", 1e-3}}
	mult := 1.0
	for _, u := range units {
		if n, ok := strings.CutSuffix(q, u.suffix); ok {
			q, mult = n, u.mult
			break
		}
	}
	n, err := strconv.ParseFloat(q, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("quantity %q", q)
	}
	return n * mult, nil
}

// parseGoBytes reads a GOMEMLIMIT value ("230MiB", "1GiB", "1048576").
func parseGoBytes(v string) (float64, error) {
	for _, u := range []struct {
		suffix string
		mult   float64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40}, {"B", 1}} {
		if n, ok := strings.CutSuffix(v, u.suffix); ok {
			f, err := strconv.ParseFloat(n, 64)
			return f * u.mult, err
		}
	}
	return strconv.ParseFloat(v, 64)
}
