package main

// `mqtls init DIR`: the development PKI and configuration it writes pass `mqtls check`,
// serve a real Mosquitto with the generated conf and ACL, and the mosquitto_pub lines it
// prints publish.

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestInit(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "dev")
	brokerPort, listenPort := freePort(t), freePort(t)
	upstream := "127.0.0.1:" + strconv.Itoa(brokerPort)
	out, err := runApp(t, "init", "--listen", "127.0.0.1:"+strconv.Itoa(listenPort), "--upstream", upstream, "--devices", "2", dir)
	if err != nil {
		t.Fatalf("mqtls init: %v\n%s", err, out)
	}

	t.Run("keys are 0600, certificates are not secret", func(t *testing.T) {
		for name, want := range map[string]os.FileMode{
			"ca.key": 0o600, "server.key": 0o600, "devices/dev-1.key": 0o600, "devices/gw-1.key": 0o600,
			"psk.txt": 0o600, "keys.txt": 0o600, "ca.pem": 0o644, "devices/dev-2.pem": 0o644,
		} {
			fi, err := os.Stat(filepath.Join(dir, name))
			if err != nil {
				t.Fatal(err)
			}
			if got := fi.Mode().Perm(); got != want {
				t.Errorf("%s: mode %v, want %v", name, got, want)
			}
		}
	})
	t.Run("refuses to overwrite", func(t *testing.T) {
		before, _ := os.ReadFile(filepath.Join(dir, "ca.key"))
		if _, err := runApp(t, "init", dir); err == nil || !strings.Contains(err.Error(), "not overwriting ca.pem, ca.key") {
			t.Fatalf("second mqtls init into %s: %v, want a refusal naming the files", dir, err)
		}
		if after, _ := os.ReadFile(filepath.Join(dir, "ca.key")); string(after) != string(before) {
			t.Fatal("a refused init changed ca.key")
		}
	})
	config := filepath.Join(dir, "mqtls.yaml")
	if out, err := runCheck(t, "--config", config); err != nil || !strings.Contains(out, "\nok\n") {
		t.Fatalf("mqtls check --config %s: %v\n%s", config, err, out)
	}

	// Mosquitto with the generated conf; as root it would switch to the mosquitto user,
	// which cannot read the test's directory, and the test reads its log.
	conf, err := os.ReadFile(filepath.Join(dir, "mosquitto.conf"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(conf), "acl_file "+filepath.Join(dir, "mosquitto.acl")) {
		t.Fatalf("mosquitto.conf does not use the generated ACL:\n%s", conf)
	}
	if acl, _ := os.ReadFile(filepath.Join(dir, "mosquitto.acl")); !strings.Contains(string(acl), "pattern readwrite devices/%c/#") {
		t.Fatalf("mosquitto.acl does not rest on %%c:\n%s", acl)
	}
	testConf := filepath.Join(t.TempDir(), "mosquitto.conf")
	extra := "log_dest stderr\nlog_type all\n"
	if os.Geteuid() == 0 {
		extra += "user root\n"
	}
	if err := os.WriteFile(testConf, append(conf, extra...), 0o600); err != nil {
		t.Fatal(err)
	}
	blog := newLineLog()
	cmd := exec.Command(peerBin(t, "mosquitto"), "-c", testConf)
	cmd.Stdout, cmd.Stderr = blog, blog
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("mosquitto log:\n%s", blog)
		}
	})
	if _, ok := blog.wait(waitTimeout, exited, func(l string) bool { return strings.Contains(l, " running") }); !ok {
		t.Fatalf("mosquitto -c %s did not start:\n%s", testConf, blog)
	}
	srv := startConfigServer(t, signals{}, config, "mqtts")

	var lines []string
	for _, l := range strings.Split(out, "\n") {
		if l = strings.TrimSpace(l); strings.HasPrefix(l, "mosquitto_pub ") {
			lines = append(lines, l)
		}
	}
	if len(lines) != 5 {
		t.Fatalf("mqtls init printed %d mosquitto_pub lines for 2 certificate, 2 PSK and 1 pinned-key device, want 5:\n%s", len(lines), out)
	}
	peerBin(t, "mosquitto_pub")
	for _, line := range lines {
		fields := strings.Fields(line)
		clientID := fields[slicesIndex(fields, "-i")+1]
		c := exec.Command("sh", "-c", line)
		if b, err := c.CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", line, err, b)
		}
		e := srv.audit(t, func(e logEntry) bool { return e.str("client_id") == clientID })
		wantAudit(t, e, map[string]string{"outcome": "forwarded"})
		want := "Received PUBLISH from " + clientID + " (d0, q0, r0, m0, 'devices/" + clientID + "/hello'"
		if _, ok := blog.wait(waitTimeout, exited, func(l string) bool { return strings.Contains(l, want) }); !ok {
			t.Fatalf("mosquitto did not log %q", want)
		}
		if blog.count(func(l string) bool { return strings.Contains(l, "Denied PUBLISH from "+clientID) }) > 0 {
			t.Fatalf("the ACL refused %s's publish to its own topic", clientID)
		}
	}
}

func slicesIndex(s []string, v string) int {
	for i, x := range s {
		if x == v {
			return i
		}
	}
	return -1
}
