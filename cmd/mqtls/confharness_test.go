package main

// Harness for the config-file tests: mqtls serving a YAML config in-process, Mosquitto on a
// unix socket, and config files written from templates.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mqtls/mqtls/handshake/handshaketest"
)

// configServer is `mqtls serve --config FILE` running in-process.
type configServer struct {
	*server
	file string
}

// startConfigServer runs `mqtls serve --config file` with the given signals and waits until
// each named listener logs the address it listens on. It is stopped (and must stop
// cleanly) when t ends.
func startConfigServer(t *testing.T, sig signals, file string, listeners ...string) *configServer {
	t.Helper()
	s := &server{logs: newLineLog(), stderr: newLineLog(), done: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	argv := []string{"mqtls", "serve", "--config", file}
	go func() {
		defer close(s.done)
		s.err = newAppWith(s.logs, s.stderr, sig).RunContext(ctx, argv)
	}()
	t.Cleanup(func() {
		if t.Failed() {
			config, _ := os.ReadFile(file)
			t.Logf("mqtls serve --config %s\n%s\nstdout:\n%s\nstderr:\n%s", file, config, s.logs, s.stderr)
		}
	})
	t.Cleanup(func() { s.stop(t) })
	cs := &configServer{server: s, file: file}
	for _, name := range listeners {
		if _, ok := cs.waitListening(name); !ok {
			s.cancel()
			<-s.done
			t.Fatalf("listener %s did not log \"listening\" within %v (RunContext returned %v)", name, waitTimeout, s.err)
		}
	}
	noteStartProbes(s.logs)
	return cs
}

// waitListening waits for the "listening" line of the named listener and returns its
// address. A listener started again (by a reload) logs a new line; this returns the first.
func (s *configServer) waitListening(name string) (string, bool) {
	line, ok := s.logs.wait(waitTimeout, s.done, func(line string) bool {
		e, ok := parseEntry(line)
		return ok && e.str("message") == "listening" && e.str("listener") == name && e.str("addr") != ""
	})
	if !ok {
		return "", false
	}
	e, _ := parseEntry(line)
	return e.str("addr"), true
}

// addrOf is waitListening that fails the test.
func (s *configServer) addrOf(t *testing.T, name string) string {
	t.Helper()
	addr, ok := s.waitListening(name)
	if !ok {
		t.Fatalf("listener %s did not log \"listening\" within %v", name, waitTimeout)
	}
	return addr
}

// writeConfig writes a config file into dir from text, with {{name}} placeholders
// replaced by vars, and returns its path.
func writeConfig(t *testing.T, dir, name, text string, vars map[string]string) string {
	t.Helper()
	for k, v := range vars {
		text = strings.ReplaceAll(text, "{{"+k+"}}", v)
	}
	if i := strings.Index(text, "{{"); i >= 0 {
		t.Fatalf("config template has an unreplaced placeholder at %q", text[i:])
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// unixBroker is a real Mosquitto listening on a unix socket only.
type unixBroker struct {
	socket string
	log    *lineLog
}

// startUnixBroker starts Mosquitto with `listener 0 SOCKET` (Mosquitto 2.0 and later) and
// waits until the socket accepts connections. It is stopped when t ends.
func startUnixBroker(t *testing.T) *unixBroker {
	t.Helper()
	bin := peerBin(t, "mosquitto")
	// A unix socket path is limited to 108 bytes; t.TempDir's can be longer.
	dir, err := os.MkdirTemp("", "mqtls-mosq")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	b := &unixBroker{socket: filepath.Join(dir, "mosquitto.sock"), log: newLineLog()}
	conf := fmt.Sprintf("listener 0 %s\nallow_anonymous true\npersistence false\nlog_dest stderr\nlog_type all\nconnection_messages true\n", b.socket)
	if os.Geteuid() == 0 {
		conf += "user root\n"
	}
	confFile, err := handshaketest.WriteFile(dir, "mosquitto.conf", []byte(conf))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-c", confFile)
	cmd.Stdout, cmd.Stderr = b.log, b.log
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting mosquitto: %v", err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			t.Errorf("mosquitto (pid %d) ignored SIGTERM for 5s; killing it", cmd.Process.Pid)
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("mosquitto log:\n%s", b.log)
		}
	})
	if _, ok := b.log.wait(waitTimeout, exited, func(l string) bool { return strings.Contains(l, " running") }); !ok {
		t.Fatalf("mosquitto on %s did not start:\n%s", b.socket, b.log)
	}
	c, err := net.DialTimeout("unix", b.socket, 5*time.Second)
	if err != nil {
		t.Fatalf("mosquitto is running but its socket %s does not accept: %v\n%s", b.socket, err, b.log)
	}
	c.Close()
	return b
}

// waitLog waits for a broker log line containing substr.
func (b *unixBroker) waitLog(t *testing.T, substr string) string {
	t.Helper()
	line, ok := b.log.wait(waitTimeout, nil, func(l string) bool { return strings.Contains(l, substr) })
	if !ok {
		t.Fatalf("mosquitto did not log %q within %v", substr, waitTimeout)
	}
	return line
}

// mustRefuse fails the test unless a TCP connection to addr is refused.
func mustRefuse(t *testing.T, addr string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err == nil {
		c.Close()
		t.Fatalf("%s accepted a connection, want it refused (no listener)", addr)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dialing %s: %v, want connection refused", addr, err)
	}
}
