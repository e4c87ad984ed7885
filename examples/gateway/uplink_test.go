package gateway

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const installHint = "apt-get install -y mosquitto mosquitto-clients"

// peer finds a peer program the test runs, failing (never skipping) with the install
// command when it is missing.
func peer(t *testing.T, name string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	if p := filepath.Join("/usr/sbin", name); fileExists(p) {
		return p
	}
	t.Fatalf("%s is not installed; install it with: %s", name, installHint)
	return ""
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// TestUplink runs mqtls.yaml's uplink listener: a plain mosquitto_pub on the gateway goes
// out through mqtls, over mutual TLS, to a "cloud" Mosquitto that requires the gateway's
// certificate, and arrives under the gateway's namespace.
func TestUplink(t *testing.T) {
	fx := newFixtures(t)
	file := localConfig(t, fx)
	plainPort := port(t, "tcp")
	conf := fmt.Sprintf("listener %s 127.0.0.1\nallow_anonymous true\nlog_dest stderr\nlog_type all\n"+
		"listener %s 127.0.0.1\ncafile %s\ncertfile %s\nkeyfile %s\nrequire_certificate true\nuse_identity_as_username true\n",
		plainPort, fx.cloudPort, filepath.Join(fx.dir, "cloud-ca.crt"), filepath.Join(fx.dir, "cloud-server.crt"), filepath.Join(fx.dir, "cloud-server.key"))
	if os.Geteuid() == 0 {
		conf += "user root\n"
	}
	confFile := filepath.Join(fx.dir, "cloud-mosquitto.conf")
	if err := os.WriteFile(confFile, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	broker := exec.Command(peer(t, "mosquitto"), "-c", confFile)
	blog := startLogged(t, broker)
	blog.wait(t, " running")

	cmd := exec.Command(mqtls, "serve", "--config", file)
	logs := startLogged(t, cmd)
	logs.wait(t, `"listener":"uplink"`, `"message":"listening"`)
	uplink := listenAddrOf(t, logs, "uplink")

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	sub := exec.CommandContext(ctx, peer(t, "mosquitto_sub"), "-h", "127.0.0.1", "-p", plainPort, "-i", "cloud-sub", "-t", "sensors/#", "-v", "-C", "1", "-W", "15")
	var subOut strings.Builder
	sub.Stdout = &subOut
	if err := sub.Start(); err != nil {
		t.Fatal(err)
	}
	blog.wait(t, "Sending SUBACK to cloud-sub")
	host, p, _ := strings.Cut(uplink, ":")
	out, err := exec.CommandContext(ctx, peer(t, "mosquitto_pub"), "-h", host, "-p", p, "-i", "legacy-1", "-t", "sensors/legacy-1", "-m", "21.5").CombinedOutput()
	if err != nil {
		t.Fatalf("mosquitto_pub to the uplink: %v\n%s", err, out)
	}
	if err := sub.Wait(); err != nil {
		t.Fatalf("mosquitto_sub at the cloud broker: %v\n%s", err, subOut.String())
	}
	if got := strings.TrimSpace(subOut.String()); got != "sensors/legacy-1 21.5" {
		t.Errorf("the cloud broker's subscriber got %q, want \"sensors/legacy-1 21.5\"", got)
	}
	blog.wait(t, "as gw-1/legacy-1") // the gateway's certificate, the client in its namespace
	logs.wait(t, `"client_id_forwarded":"gw-1/legacy-1"`, `"mode":"client"`)
}

// startLogged starts cmd with its output followed, and stops it when t ends.
func startLogged(t *testing.T, cmd *exec.Cmd) *logLines {
	t.Helper()
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	l := &logLines{added: make(chan struct{}, 1)}
	followed := make(chan struct{})
	go func() {
		l.follow(bufio.NewScanner(out))
		close(followed)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-followed
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("%s output:\n%s", filepath.Base(cmd.Path), l)
		}
	})
	return l
}

// listenAddrOf returns the address the named listener logged it listens on.
func listenAddrOf(t *testing.T, l *logLines, name string) string {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, line := range l.lines {
		if strings.Contains(line, `"listener":"`+name+`"`) && strings.Contains(line, `"message":"listening"`) {
			_, rest, _ := strings.Cut(line, `"addr":"`)
			addr, _, _ := strings.Cut(rest, `"`)
			return addr
		}
	}
	t.Fatalf("no listening line for %s", name)
	return ""
}
