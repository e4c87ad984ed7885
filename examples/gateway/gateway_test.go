package gateway

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/mqtls/mqtls/handshake/handshaketest"
)

// Where the example puts things on the gateway; the tests move them to a temporary
// directory and free ports.
const (
	etcDir      = "/etc/mqtls/"
	configPath  = "/etc/mqtls/mqtls.yaml"
	binaryPath  = "/usr/local/bin/mqtls"
	stunnelConf = "/etc/stunnel/mosquitto.conf"
)

var (
	binDir string // holds the mqtls binary built once for all tests
	mqtls  string
)

func TestMain(m *testing.M) {
	code := func() int {
		var err error
		if binDir, err = os.MkdirTemp("", "mqtls-gateway"); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(binDir)
		mqtls = filepath.Join(binDir, "mqtls")
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "go", "build", "-o", mqtls, "github.com/mqtls/mqtls/cmd/mqtls")
		if out, err := cmd.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "building mqtls: %v\n%s", err, out)
			return 1
		}
		return m.Run()
	}()
	os.Exit(code)
}

// run runs the mqtls binary and returns its stdout and stderr.
func run(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, mqtls, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return stdout.String(), stderr.String(), err
}

// fixtures are the files mqtls.yaml names, made for real in dir: a device CA with its CRL,
// a server certificate for 127.0.0.1, and a PSK file in stunnel's format.
type fixtures struct {
	dir       string
	cloudPort string // where the uplink's cloud broker listens, if a test starts one
}

func newFixtures(t *testing.T) fixtures {
	t.Helper()
	fx := fixtures{dir: t.TempDir(), cloudPort: port(t, "tcp")}
	ca, err := handshaketest.NewCA("gateway device CA")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ca.Issue(handshaketest.Template{CommonName: "gateway", IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := srv.Files(fx.dir, "server"); err != nil {
		t.Fatal(err)
	}
	crl, err := ca.CRL()
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{
		"device-ca.crt": ca.CertPEM,
		"device-ca.crl": crl,
		// stunnel's PSKsecrets: a key of hex digits is binary, any other is its raw bytes.
		"psk.txt": []byte("sensor-7:correct horse battery staple\nsensor-8:00112233445566778899aabbccddeeff\n"),
	} {
		if _, err := handshaketest.WriteFile(fx.dir, name, data); err != nil {
			t.Fatal(err)
		}
	}
	// The uplink's side: the cloud broker's CA and certificate, and the gateway's own.
	cloud, err := handshaketest.NewCA("cloud CA")
	if err != nil {
		t.Fatal(err)
	}
	for name, tmpl := range map[string]handshaketest.Template{
		"cloud-server": {CommonName: "cloud.example.com", DNSNames: []string{"cloud.example.com"}},
		"gateway":      {CommonName: "gw-1"},
	} {
		c, err := cloud.Issue(tmpl)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := c.Files(fx.dir, name); err != nil {
			t.Fatal(err)
		}
	}
	for name, data := range map[string][]byte{"cloud-ca.crt": cloud.CertPEM} {
		if _, err := handshaketest.WriteFile(fx.dir, name, data); err != nil {
			t.Fatal(err)
		}
	}
	return fx
}

// port returns a loopback port nobody listened on a moment ago.
func port(t *testing.T, network string) string {
	t.Helper()
	var addr net.Addr
	if network == "udp" {
		c, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		addr = c.LocalAddr()
	} else {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		addr = l.Addr()
	}
	_, p, _ := net.SplitHostPort(addr.String())
	return p
}

// localConfig copies mqtls.yaml into fx.dir with its files moved there and its addresses
// moved to free loopback ports, and returns its path.
func localConfig(t *testing.T, fx fixtures) string {
	t.Helper()
	data, err := os.ReadFile("mqtls.yaml")
	if err != nil {
		t.Fatal(err)
	}
	text := string(data)
	for _, r := range [][2]string{
		{etcDir, fx.dir + "/"},
		{`listen: ":8883"`, `listen: "127.0.0.1:` + port(t, "tcp") + `"`},
		{`listen: ":8884"`, `listen: "127.0.0.1:` + port(t, "tcp") + `"`},
		{`listen: ":5684"`, `listen: "127.0.0.1:` + port(t, "udp") + `"`},
		{"listen: 127.0.0.1:9090", "listen: 127.0.0.1:" + port(t, "tcp")},
		{"listen: 127.0.0.1:1884", "listen: 127.0.0.1:" + port(t, "tcp")},
		{"upstream: cloud.example.com:8883", "upstream: 127.0.0.1:" + fx.cloudPort},
	} {
		if !strings.Contains(text, r[0]) {
			t.Fatalf("mqtls.yaml has no %q any more; update the test with the example", r[0])
		}
		text = strings.ReplaceAll(text, r[0], r[1])
	}
	path := filepath.Join(fx.dir, "mqtls.yaml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// exampleConfig is the part of mqtls.yaml the tests look at.
type exampleConfig struct {
	DrainTimeout string `yaml:"drain_timeout"`
	Listeners    []struct {
		Name      string `yaml:"name"`
		Mode      string `yaml:"mode"`
		Transport string `yaml:"transport"`
		Listen    string `yaml:"listen"`
		Upstream  string `yaml:"upstream"`
		TLS       struct {
			ClientCA string `yaml:"client_ca"`
		} `yaml:"tls"`
		PSK struct {
			File string `yaml:"file"`
		} `yaml:"psk"`
		Policy struct {
			ClientID string `yaml:"client_id"`
		} `yaml:"policy"`
	} `yaml:"listeners"`
}

func readExample(t *testing.T) exampleConfig {
	t.Helper()
	data, err := os.ReadFile("mqtls.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var c exampleConfig
	if err := yaml.Unmarshal(data, &c); err != nil {
		t.Fatal(err)
	}
	return c
}

// TestConfig: mqtls.yaml is what the README says (mutual TLS enforcing the client ID on
// :8883, TLS-PSK rewriting it on :8884, DTLS-PSK on :5684, all to Mosquitto on
// 127.0.0.1:1883), and with its files in place, `mqtls psk add` (README step 4) and
// `mqtls check --config` (step 5) pass.
func TestConfig(t *testing.T) {
	c := readExample(t)
	type want struct{ name, transport, listen, clientID string }
	var got []want
	for _, l := range c.Listeners {
		got = append(got, want{l.Name, l.Transport, l.Listen, l.Policy.ClientID})
		if l.Upstream != "127.0.0.1:1883" && l.Mode != "client" {
			t.Errorf("listener %s: upstream %q, want Mosquitto on 127.0.0.1:1883", l.Name, l.Upstream)
		}
	}
	if w := []want{{"mqtt-tls", "", ":8883", "enforce"}, {"mqtt-psk", "", ":8884", "rewrite"}, {"mqtt-dtls", "dtls", ":5684", "rewrite"},
		{"uplink", "", "127.0.0.1:1884", ""}}; !slices.Equal(got, w) {
		t.Errorf("listeners (name, transport, listen, client_id) %v, want %v", got, w)
	}
	if c.Listeners[0].TLS.ClientCA == "" || c.Listeners[1].PSK.File == "" || c.Listeners[2].PSK.File == "" {
		t.Errorf("want client certificates on mqtt-tls and PSKs on mqtt-psk and mqtt-dtls")
	}

	fx := newFixtures(t)
	file := localConfig(t, fx)
	out, _, err := run(t, "psk", "add", "--file", filepath.Join(fx.dir, "psk.txt"), "--psk-format", "stunnel", "sensor-42")
	if err != nil || !strings.Contains(out, "--psk-identity sensor-42") {
		t.Fatalf("mqtls psk add: %v\n%s", err, out)
	}
	out, stderr, err := run(t, "check", "--config", file)
	if err != nil {
		t.Fatalf("mqtls check --config %s: %v\n%s%s", file, err, out, stderr)
	}
	for _, w := range []string{"listener mqtt-tls: tcp", "listener mqtt-psk: tcp", "listener mqtt-dtls: dtls", "listener uplink: tcp", "3 identities", "\nok\n"} {
		if !strings.Contains(out, w) {
			t.Errorf("mqtls check printed\n%s\nwant it to contain %q", out, w)
		}
	}
}

// logLines follows a process's JSON log.
type logLines struct {
	mu    sync.Mutex
	lines []string
	added chan struct{}
}

func (l *logLines) follow(r *bufio.Scanner) {
	for r.Scan() {
		l.mu.Lock()
		l.lines = append(l.lines, r.Text())
		l.mu.Unlock()
		select {
		case l.added <- struct{}{}:
		default:
		}
	}
}

// wait waits for a line containing every one of subs.
func (l *logLines) wait(t *testing.T, subs ...string) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		l.mu.Lock()
		for _, line := range l.lines {
			all := true
			for _, s := range subs {
				all = all && strings.Contains(line, s)
			}
			if all {
				l.mu.Unlock()
				return
			}
		}
		l.mu.Unlock()
		select {
		case <-l.added: // buffered: a line added since the unlock above is not missed
		case <-deadline:
			t.Fatalf("mqtls did not log a line with %q within 10s:\n%s", subs, l)
		}
	}
}

func (l *logLines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

// TestServe runs mqtls.yaml the way mqtls.service does: serve, edit the file and reload
// with SIGHUP (ExecReload), then stop with SIGTERM (KillSignal), which must end in time.
func TestServe(t *testing.T) {
	fx := newFixtures(t)
	file := localConfig(t, fx)
	cmd := exec.Command(mqtls, "serve", "--config", file)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	logs := &logLines{added: make(chan struct{}, 1)}
	followed := make(chan struct{})
	go func() {
		logs.follow(bufio.NewScanner(stdout))
		close(followed)
	}()
	exited := make(chan error, 1)
	go func() {
		<-followed
		exited <- cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-followed
		if t.Failed() {
			t.Logf("mqtls log:\n%s", logs)
		}
	})
	for _, name := range []string{"mqtt-tls", "mqtt-psk", "mqtt-dtls", "uplink"} {
		logs.wait(t, `"listener":"`+name+`"`, `"message":"listening"`)
	}

	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	const from, to = "client_id: rewrite # whatever", "client_id: enforce # whatever"
	if !bytes.Contains(data, []byte(from)) {
		t.Fatalf("mqtls.yaml has no %q any more; update the test with the example", from)
	}
	if err := os.WriteFile(file, bytes.Replace(data, []byte(from), []byte(to), 1), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	logs.wait(t, `"listener":"mqtt-psk"`, `"message":"listener updated"`)

	stopTimeout := unitTimeoutStop(t)
	start := time.Now()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("mqtls exited with %v after SIGTERM, want 0", err)
		}
	case <-time.After(stopTimeout):
		t.Fatalf("mqtls did not exit within TimeoutStopSec (%v) of SIGTERM", stopTimeout)
	}
	logs.wait(t, `"message":"stopped"`)
	if strings.Contains(logs.String(), `"level":"error"`) {
		t.Errorf("mqtls logged an error")
	}
	t.Logf("stopped %v after SIGTERM", time.Since(start).Round(time.Millisecond))
}

// codeBlock returns the first fenced block of language lang after the text marker.
func codeBlock(t *testing.T, doc, marker, lang string) string {
	t.Helper()
	_, rest, ok := strings.Cut(doc, marker)
	if !ok {
		t.Fatalf("README.md has no %q", marker)
	}
	_, rest, ok = strings.Cut(rest, "```"+lang+"\n")
	if !ok {
		t.Fatalf("README.md has no ```%s block after %q", lang, marker)
	}
	block, _, ok := strings.Cut(rest, "```")
	if !ok {
		t.Fatalf("README.md's ```%s block after %q does not end", lang, marker)
	}
	return block
}

// TestMigration runs the README's walk-through: the stunnel config it shows converts to
// exactly the config file and notes it shows, and that file, with the files it names
// copied to /etc/mqtls (here a temporary directory) as step 3 does, passes check.
func TestMigration(t *testing.T) {
	data, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(data)
	stunnel := codeBlock(t, readme, "## Migrating from stunnel", "ini")
	wantYAML := codeBlock(t, readme, "prints the config file", "yaml")
	wantStderr := codeBlock(t, readme, "and on stderr", "text")
	if !strings.Contains(readme, "mqtls convert stunnel "+stunnelConf+" ") {
		t.Errorf("README.md does not run mqtls convert stunnel %s", stunnelConf)
	}

	fx := newFixtures(t)
	conf := filepath.Join(fx.dir, "mosquitto.conf")
	if err := os.WriteFile(conf, []byte(stunnel), 0o600); err != nil {
		t.Fatal(err)
	}
	out, stderr, err := run(t, "convert", "stunnel", conf)
	if err != nil {
		t.Fatalf("mqtls convert stunnel: %v\n%s", err, stderr)
	}
	out = strings.ReplaceAll(out, conf, stunnelConf)
	if out != wantYAML {
		t.Errorf("mqtls convert stunnel printed\n%s\nREADME.md shows\n%s", out, wantYAML)
	}
	if stderr != wantStderr {
		t.Errorf("mqtls convert stunnel said on stderr\n%s\nREADME.md shows\n%s", stderr, wantStderr)
	}

	// Step 3: the files move to /etc/mqtls, and the paths with them.
	if !strings.Contains(readme, `sed -i 's|/etc/stunnel/|/etc/mqtls/|' /etc/mqtls/mqtls.yaml`) {
		t.Errorf("README.md no longer moves the paths to /etc/mqtls as this test does")
	}
	for _, r := range [][2]string{{"/etc/stunnel/", fx.dir + "/"}, {`":8883"`, "127.0.0.1:0"}, {`":8884"`, "127.0.0.1:0"}} {
		out = strings.ReplaceAll(out, r[0], r[1])
	}
	file := filepath.Join(fx.dir, "converted.yaml")
	if err := os.WriteFile(file, []byte(out), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, stderr, err := run(t, "check", "--config", file); err != nil || !strings.HasSuffix(out, "\nok\n") {
		t.Fatalf("mqtls check --config on the converted file: %v\n%s%s", err, out, stderr)
	}
}

// unit is a systemd unit file: section → key → values (a key may repeat).
type unit map[string]map[string][]string

func readUnit(t *testing.T) unit {
	t.Helper()
	data, err := os.ReadFile("mqtls.service")
	if err != nil {
		t.Fatal(err)
	}
	u := unit{}
	section := ""
	for n, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "" || line[0] == '#' || line[0] == ';':
		case line[0] == '[' && line[len(line)-1] == ']':
			section = line[1 : len(line)-1]
			if u[section] == nil {
				u[section] = map[string][]string{}
			}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" || strings.HasSuffix(line, "\\") {
				t.Fatalf("mqtls.service line %d: %q: want Key=value inside a [Section] on one line", n+1, line)
			}
			u[section][k] = append(u[section][k], v)
		}
	}
	return u
}

// unitTimeoutStop is the unit's TimeoutStopSec.
func unitTimeoutStop(t *testing.T) time.Duration {
	t.Helper()
	v := readUnit(t)["Service"]["TimeoutStopSec"]
	if len(v) != 1 {
		t.Fatalf("mqtls.service: want one TimeoutStopSec, have %q", v)
	}
	d, err := time.ParseDuration(v[0])
	if err != nil {
		t.Fatalf("mqtls.service: TimeoutStopSec=%s: write it like 45s (%v)", v[0], err)
	}
	return d
}

// Keys systemd knows in each section of a service unit: the ones this unit may use. A key
// outside these is a typo that systemd would ignore with only a warning.
var unitKeys = map[string][]string{
	"Unit": {"Description", "Documentation", "After", "Before", "Wants", "Requires", "BindsTo", "PartOf", "Conflicts",
		"StartLimitIntervalSec", "StartLimitBurst", "ConditionPathExists", "AssertPathExists"},
	"Service": {"Type", "ExecStartPre", "ExecStart", "ExecStartPost", "ExecReload", "ExecStop", "KillSignal", "KillMode",
		"TimeoutStartSec", "TimeoutStopSec", "Restart", "RestartSec", "User", "Group", "DynamicUser", "SupplementaryGroups",
		"AmbientCapabilities", "CapabilityBoundingSet", "NoNewPrivileges", "ProtectSystem", "ReadOnlyPaths",
		"ReadWritePaths", "InaccessiblePaths", "LoadCredential", "ProtectHome", "PrivateTmp", "PrivateDevices",
		"PrivateUsers", "ProtectKernelTunables", "ProtectKernelModules", "ProtectKernelLogs", "ProtectControlGroups",
		"ProtectClock", "ProtectHostname", "ProtectProc", "ProcSubset", "RestrictAddressFamilies", "RestrictNamespaces",
		"RestrictRealtime", "RestrictSUIDSGID", "LockPersonality", "MemoryDenyWriteExecute", "SystemCallArchitectures",
		"SystemCallFilter", "SystemCallErrorNumber", "UMask", "LimitNOFILE", "Environment", "EnvironmentFile",
		"RuntimeDirectory", "StateDirectory", "WorkingDirectory", "StandardOutput", "StandardError", "SyslogIdentifier"},
	"Install": {"WantedBy", "RequiredBy", "Alias"},
}

// TestUnit checks mqtls.service key by key: the hardening the README promises, signals
// that match what mqtls does with them, a stop timeout longer than the drain, and the
// binary and config paths the README installs. Where systemd-analyze is installed, it
// must verify the unit without a warning and rate its exposure OK; without it, the key by
// key checks still run.
func TestUnit(t *testing.T) {
	u := readUnit(t)
	for section, keys := range u {
		known, ok := unitKeys[section]
		if !ok {
			t.Errorf("mqtls.service: unexpected section [%s]", section)
		}
		for k := range keys {
			if !slices.Contains(known, k) {
				t.Errorf("mqtls.service: [%s] %s is not a key this unit should have (a typo?)", section, k)
			}
		}
	}
	for _, w := range []struct{ section, key, value string }{
		{"Service", "Type", "simple"},
		{"Service", "ExecStart", binaryPath + " serve --config " + configPath},
		{"Service", "ExecStartPre", binaryPath + " check --config " + configPath},
		{"Service", "ExecReload", "/bin/kill -HUP $MAINPID"},
		{"Service", "KillSignal", "SIGTERM"},
		{"Service", "Restart", "on-failure"},
		{"Service", "DynamicUser", "yes"},
		{"Service", "AmbientCapabilities", "CAP_NET_BIND_SERVICE"},
		{"Service", "CapabilityBoundingSet", "CAP_NET_BIND_SERVICE"},
		{"Service", "NoNewPrivileges", "yes"},
		{"Service", "ProtectSystem", "strict"},
		{"Service", "ReadOnlyPaths", strings.TrimSuffix(etcDir, "/")},
		{"Service", "ProtectHome", "yes"},
		{"Service", "PrivateTmp", "yes"},
		{"Install", "WantedBy", "multi-user.target"},
	} {
		if got := u[w.section][w.key]; !slices.Equal(got, []string{w.value}) {
			t.Errorf("mqtls.service: [%s] %s=%q, want %s=%s", w.section, w.key, got, w.key, w.value)
		}
	}

	// systemd must wait out the drain before SIGKILL.
	drain, err := time.ParseDuration(readExample(t).DrainTimeout)
	if err != nil {
		t.Fatalf("mqtls.yaml drain_timeout: %v", err)
	}
	if stop := unitTimeoutStop(t); stop <= drain {
		t.Errorf("mqtls.service TimeoutStopSec=%v is not longer than mqtls.yaml's drain_timeout %v: systemd would kill a drain", stop, drain)
	}

	// The README's install steps match the unit.
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	groups := u["Service"]["SupplementaryGroups"]
	for _, w := range []string{
		"install -m 0755 mqtls " + binaryPath,
		"install -m 0644 examples/gateway/mqtls.service /etc/systemd/system/mqtls.service",
		"mqtls check --config " + configPath,
		"groupadd --system " + strings.Join(groups, " "),
		"chgrp -R " + strings.Join(groups, " ") + " " + strings.TrimSuffix(etcDir, "/"),
	} {
		if len(groups) != 1 || !strings.Contains(string(readme), w) {
			t.Errorf("README.md does not say %q (SupplementaryGroups=%q)", w, groups)
		}
	}

	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Log("systemd-analyze is not installed: checked the unit key by key only")
		return
	}
	// verify checks that the binary exists: point the unit at the one built for the tests.
	dir := t.TempDir()
	data, err := os.ReadFile("mqtls.service")
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "mqtls.service")
	if err := os.WriteFile(file, bytes.ReplaceAll(data, []byte(binaryPath), []byte(mqtls)), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, analyze, "verify", "--man=no", file).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("systemd-analyze verify mqtls.service: %v\n%s", err, out)
	}
	// Exposure on systemd's 0 to 100 scale; 30 and below is rated OK.
	const threshold = 30
	out, err = exec.CommandContext(ctx, analyze, "security", "--offline=true", "--threshold="+strconv.Itoa(threshold), "--no-pager", file).CombinedOutput()
	if err != nil {
		t.Errorf("systemd-analyze security --offline=true --threshold=%d mqtls.service: %v\n%s", threshold, err, out)
	}
	if i := bytes.LastIndex(out, []byte("Overall exposure level")); i >= 0 {
		t.Logf("%s", bytes.TrimSpace(out[i:]))
	}
}
