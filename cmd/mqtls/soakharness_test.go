package main

// Harness of the soak test (soak_e2e_test.go): the real mqtls binary built and run as a
// child process, a Mosquitto that can be killed and restarted on its port, the child's
// goroutines, file descriptors and heap read from its admin listener and /proc, a bounded
// TCP flood, a lossy UDP relay for many DTLS clients at once, and a minimal MQTT 3.1.1
// client that works over any secure conn (crypto/tls, TLS-PSK, DTLS through datagram.Conn).

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mqtls/mqtls/handshake/handshaketest"
)

// Sizes of the soak. The defaults are CI's short form; `make soak` scales them with
// MQTLS_SOAK (the load's duration) and MQTLS_SOAK_DEVICES.
const (
	soakDefaultDuration = 60 * time.Second
	soakDefaultDevices  = 300
	// soakCycle is how long one round of faults (flood, rotation, broker kill) takes: a
	// longer soak repeats them.
	soakCycle = 60 * time.Second
	// soakInterval is the mean time between two messages of one device.
	soakInterval = 2 * time.Second
	// soakFloodConns is the size of each flood: half-open connections and garbage
	// ClientHellos, opened over soakFloodOver and closed by the test afterward.
	soakFloodConns = 2000
	soakFloodOver  = 3 * time.Second
	// The child holds about 2 file descriptors per device (device and broker side) plus a
	// flood; the test process one or two per device. A process may hold 20,000.
	soakMaxDevices = 5000
)

// soakParams is the size of one soak run.
type soakParams struct {
	duration time.Duration
	devices  int
}

// soakParamsFromEnv reads MQTLS_SOAK (a duration, at least 30s) and MQTLS_SOAK_DEVICES
// (6 to soakMaxDevices). They only scale the run: the test never skips.
func soakParamsFromEnv(t *testing.T) soakParams {
	t.Helper()
	p := soakParams{duration: soakDefaultDuration, devices: soakDefaultDevices}
	if v := os.Getenv("MQTLS_SOAK"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 30*time.Second {
			t.Fatalf("MQTLS_SOAK=%q: want a duration of at least 30s, such as 10m", v)
		}
		p.duration = d
	}
	if v := os.Getenv("MQTLS_SOAK_DEVICES"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 6 || n > soakMaxDevices {
			t.Fatalf("MQTLS_SOAK_DEVICES=%q: want a number of devices from 6 to %d", v, soakMaxDevices)
		}
		p.devices = n
	}
	return p
}

// raceEnabled reports whether this test binary was built with -race.
func raceEnabled() bool {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return false
	}
	for _, s := range bi.Settings {
		if s.Key == "-race" {
			return s.Value == "true"
		}
	}
	return false
}

// buildMqtls builds this package's binary into a temporary directory, with the race
// detector when race is set, and returns its path.
func buildMqtls(t *testing.T, race bool) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "mqtls")
	args := []string{"build", "-o", bin}
	if race {
		args = append(args, "-race")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", append(args, ".")...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go %s .: %v\n%s", strings.Join(args, " "), err, out)
	}
	return bin
}

// childEnv is the environment without MQTLS_* variables, which serve would take as flags
// (and refuse next to --config).
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "MQTLS_") {
			env = append(env, kv)
		}
	}
	return env
}

// soakLog is the child's JSON log. The audit lines ("message":"connection"), one per
// connection, are only counted (a soak makes hundreds of thousands); every other line is
// kept, and tests can wait for one.
type soakLog struct {
	mu      sync.Mutex
	partial []byte
	lines   []string
	changed chan struct{} // closed (and replaced) whenever a line is kept
	audits  map[string]int
	samples map[string][]string // the first audit lines of each kind, for failure messages
	recent  []string            // the last audit lines, for failure messages
	errors  []string            // lines at level error
}

func newSoakLog() *soakLog {
	return &soakLog{changed: make(chan struct{}), audits: map[string]int{}, samples: map[string][]string{}}
}

func (l *soakLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.partial = append(l.partial, p...)
	kept := false
	for {
		i := bytes.IndexByte(l.partial, '\n')
		if i < 0 {
			break
		}
		line := string(bytes.TrimRight(l.partial[:i], "\r"))
		l.partial = l.partial[i+1:]
		if strings.Contains(line, `"message":"connection"`) {
			var a struct{ Listener, Outcome, Reason string }
			if json.Unmarshal([]byte(line), &a) == nil {
				k := a.Listener + " " + a.Outcome + " " + a.Reason
				l.audits[k]++
				if len(l.samples[k]) < 2 {
					l.samples[k] = append(l.samples[k], line)
				}
			}
			if len(l.recent) == 64 {
				l.recent = l.recent[1:]
			}
			l.recent = append(l.recent, line)
			continue
		}
		if strings.Contains(line, `"level":"error"`) {
			l.errors = append(l.errors, line)
		}
		l.lines = append(l.lines, line)
		kept = true
	}
	l.partial = append([]byte(nil), l.partial...)
	if kept {
		close(l.changed)
		l.changed = make(chan struct{})
	}
	return len(p), nil
}

// mark returns the number of lines kept so far: waitFrom(mark, ...) looks only at later ones.
func (l *soakLog) mark() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.lines)
}

// waitFrom waits for n lines, from number from on, for which match is true, and returns
// the last of them. It gives up after timeout, or when abort is closed.
func (l *soakLog) waitFrom(from, n int, timeout time.Duration, abort <-chan struct{}, match func(logEntry) bool) (logEntry, bool) {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	found := 0
	for {
		l.mu.Lock()
		lines, changed := l.lines[from:], l.changed
		from = len(l.lines)
		l.mu.Unlock()
		for _, line := range lines {
			if e, ok := parseEntry(line); ok && match(e) {
				if found++; found == n {
					return e, true
				}
			}
		}
		select {
		case <-changed:
		case <-abort:
			return nil, false
		case <-timer.C:
			return nil, false
		}
	}
}

// auditCounts returns the audit lines counted so far by "listener outcome reason".
func (l *soakLog) auditCounts() map[string]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[string]int, len(l.audits))
	for k, v := range l.audits {
		out[k] = v
	}
	return out
}

// messageCounts counts the kept lines by level and message.
func (l *soakLog) messageCounts() map[string]int {
	l.mu.Lock()
	lines := l.lines
	l.mu.Unlock()
	out := map[string]int{}
	for _, line := range lines {
		if e, ok := parseEntry(line); ok {
			out[e.str("level")+" "+e.str("message")]++
		}
	}
	return out
}

func (l *soakLog) errorLines() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.errors...)
}

// String is the kept lines, the first audit lines of each kind and the last audit lines,
// for failure messages.
func (l *soakLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var b strings.Builder
	b.WriteString(strings.Join(l.lines, "\n"))
	b.WriteString("\n... the first audit lines of each listener, outcome and reason:\n")
	for _, k := range slices.Sorted(maps.Keys(l.samples)) {
		b.WriteString(strings.Join(l.samples[k], "\n") + "\n")
	}
	b.WriteString("... the last audit lines:\n")
	b.WriteString(strings.Join(l.recent, "\n"))
	return b.String()
}

// mqtlsChild is the mqtls binary running `serve --config FILE` as a child process.
type mqtlsChild struct {
	pid     int
	log     *soakLog
	stderr  *lineLog
	exited  chan struct{}
	exitErr error // valid once exited is closed
	admin   *soakAdmin
	addrs   map[string]string // listener name → address
	stopped bool
}

// startMqtlsChild runs bin with the config file and waits until each named listener and
// the admin listener log their addresses. It is stopped (SIGTERM, then SIGKILL) when t
// ends if the test did not stop it.
func startMqtlsChild(t *testing.T, bin, file string, listeners ...string) *mqtlsChild {
	t.Helper()
	c := &mqtlsChild{log: newSoakLog(), stderr: newLineLog(), exited: make(chan struct{}), addrs: map[string]string{}}
	cmd := exec.Command(bin, "serve", "--config", file)
	cmd.Env = childEnv()
	cmd.Stdout, cmd.Stderr = c.log, c.stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", bin, err)
	}
	c.pid = cmd.Process.Pid
	go func() {
		c.exitErr = cmd.Wait()
		close(c.exited)
	}()
	t.Cleanup(func() {
		if !c.stopped {
			c.stop(t)
		}
		if t.Failed() {
			config, _ := os.ReadFile(file)
			t.Logf("mqtls serve --config %s (pid %d)\n%s\nstdout (audit lines counted, not kept):\n%s\nstderr:\n%s",
				file, c.pid, config, c.log, c.stderr)
		}
	})
	for _, name := range listeners {
		e, ok := c.log.waitFrom(0, 1, 2*waitTimeout, c.exited, func(e logEntry) bool {
			return e.str("message") == "listening" && e.str("listener") == name && e.str("addr") != ""
		})
		if !ok {
			t.Fatalf("listener %s of mqtls (pid %d) did not log \"listening\"", name, c.pid)
		}
		c.addrs[name] = e.str("addr")
	}
	e, ok := c.log.waitFrom(0, 1, 2*waitTimeout, c.exited, func(e logEntry) bool {
		return e.str("message") == "admin listening" && e.str("addr") != ""
	})
	if !ok {
		t.Fatalf("mqtls (pid %d) did not log \"admin listening\"", c.pid)
	}
	c.admin = newSoakAdmin(e.str("addr"), c.pid)
	return c
}

// stop sends SIGTERM and waits for the child to exit; it fails the test unless it exits 0
// within 30s (its drain timeout is shorter), and kills it then.
func (c *mqtlsChild) stop(t *testing.T) {
	t.Helper()
	c.stopped = true
	select {
	case <-c.exited:
		t.Errorf("mqtls (pid %d) had exited before it was stopped: %v", c.pid, c.exitErr)
		return
	default:
	}
	_ = syscall.Kill(c.pid, syscall.SIGTERM)
	select {
	case <-c.exited:
		if c.exitErr != nil {
			t.Errorf("mqtls (pid %d) exited with %v after SIGTERM, want 0", c.pid, c.exitErr)
		}
	case <-time.After(30 * time.Second):
		t.Errorf("mqtls (pid %d) did not exit within 30s of SIGTERM; killing it", c.pid)
		_ = syscall.Kill(c.pid, syscall.SIGKILL)
		<-c.exited
	}
}

// soakAdmin reads the child's admin listener and /proc entry. Safe for concurrent use.
type soakAdmin struct {
	base string
	pid  int
	http *http.Client
}

func newSoakAdmin(addr string, pid int) *soakAdmin {
	return &soakAdmin{
		base: "http://" + addr,
		pid:  pid,
		// No keep-alive: no idle connection (and its goroutines in the child) outlives a
		// request, so the counts before and after compare.
		http: &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 2 * waitTimeout},
	}
}

func (a *soakAdmin) get(path string) ([]byte, error) {
	resp, err := a.http.Get(a.base + path)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	return body, err
}

func (a *soakAdmin) metrics() (promSamples, error) {
	body, err := a.get("/metrics")
	if err != nil {
		return nil, err
	}
	return parsePromText(string(body))
}

// goroutines is the total of /debug/pprof/goroutine?debug=1 ("goroutine profile: total N").
func (a *soakAdmin) goroutines() (int, error) {
	body, err := a.get("/debug/pprof/goroutine?debug=1")
	if err != nil {
		return 0, err
	}
	first, _, _ := strings.Cut(string(body), "\n")
	n, err := strconv.Atoi(strings.TrimPrefix(first, "goroutine profile: total "))
	if err != nil {
		return 0, fmt.Errorf("goroutine profile starts %q: %w", first, err)
	}
	return n, nil
}

// fds counts the child's open file descriptors.
func (a *soakAdmin) fds() (int, error) {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", a.pid))
	return len(ents), err
}

// heapInuse is go_memstats_heap_inuse_bytes; with gc, after /debug/pprof/heap?gc=1 ran a
// collection (twice, so that sync.Pool's victim cache is gone too).
func (a *soakAdmin) heapInuse(gc bool) (float64, error) {
	if gc {
		for range 2 {
			if _, err := a.get("/debug/pprof/heap?gc=1"); err != nil {
				return 0, err
			}
		}
	}
	m, err := a.metrics()
	if err != nil {
		return 0, err
	}
	v, ok := m.value("go_memstats_heap_inuse_bytes")
	if !ok {
		return 0, errors.New("/metrics has no go_memstats_heap_inuse_bytes")
	}
	return v, nil
}

// soakUsage is one reading of the child's resources.
type soakUsage struct {
	goroutines, fds int
	heap            float64 // bytes in use
}

func (u soakUsage) String() string {
	return fmt.Sprintf("%d goroutines, %d fds, heap %.1f MiB", u.goroutines, u.fds, u.heap/(1<<20))
}

func (a *soakAdmin) usage(gc bool) (soakUsage, error) {
	var u soakUsage
	var err error
	if u.goroutines, err = a.goroutines(); err != nil {
		return u, err
	}
	if u.fds, err = a.fds(); err != nil {
		return u, err
	}
	u.heap, err = a.heapInuse(gc)
	return u, err
}

// value is one metric summed over the label pairs given, 0 when absent.
func (a *soakAdmin) value(name string, labels ...string) (float64, error) {
	m, err := a.metrics()
	if err != nil {
		return 0, err
	}
	v, _ := m.value(name, labels...)
	return v, nil
}

// waitMetric polls a metric (every 100ms) until ok(value) or timeout, and returns the last
// value read and whether ok became true.
func (a *soakAdmin) waitMetric(timeout time.Duration, name string, ok func(float64) bool, labels ...string) (float64, bool) {
	deadline := time.Now().Add(timeout)
	var v float64
	for {
		got, err := a.value(name, labels...)
		if err == nil {
			v = got
			if ok(v) {
				return v, true
			}
		}
		if time.Now().After(deadline) {
			return v, false
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// soakPeaks samples the child every second until stopped and keeps the highest readings.
type soakPeaks struct {
	mu     sync.Mutex
	peak   soakUsage
	active float64 // mqtls_connections_active, all listeners
	errs   int
	stop   chan struct{}
	done   chan struct{}
}

func startPeaks(a *soakAdmin) *soakPeaks {
	p := &soakPeaks{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			p.sample(a)
			select {
			case <-p.stop:
				return
			case <-tick.C:
			}
		}
	}()
	return p
}

func (p *soakPeaks) sample(a *soakAdmin) {
	u, err := a.usage(false)
	active, aerr := a.value("mqtls_connections_active")
	p.mu.Lock()
	defer p.mu.Unlock()
	if err != nil || aerr != nil {
		p.errs++
		return
	}
	p.peak.goroutines = max(p.peak.goroutines, u.goroutines)
	p.peak.fds = max(p.peak.fds, u.fds)
	p.peak.heap = max(p.peak.heap, u.heap)
	p.active = max(p.active, active)
}

// end stops the sampling and returns the peaks.
func (p *soakPeaks) end() (soakUsage, float64, int) {
	select {
	case <-p.stop:
	default:
		close(p.stop)
	}
	<-p.done
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.peak, p.active, p.errs
}

// soakBroker is a real Mosquitto on a fixed loopback port that the test kills with SIGKILL
// and starts again on the same port. Each start is a new generation; the broker's log
// tells which generation accepted which client ID.
type soakBroker struct {
	bin, confFile, addr string

	mu        sync.Mutex
	gen       int            // the running (or last) generation, from 1
	clientGen map[string]int // client ID → generation that accepted it
	killedAt  map[int]time.Time
	tail      []string // recent lines other than connection messages
	proc      *os.Process
	exited    chan struct{}
}

// startSoakBroker starts Mosquitto with persistence off on a free port. It is stopped
// when t ends.
func startSoakBroker(t *testing.T) *soakBroker {
	t.Helper()
	b := &soakBroker{bin: peerBin(t, "mosquitto"), clientGen: map[string]int{}, killedAt: map[int]time.Time{}}
	dir := t.TempDir()
	var lastErr error
	for range 3 { // the free port may be taken between freePort and mosquitto's bind
		port := freePort(t)
		conf := fmt.Sprintf("listener %d 127.0.0.1\nallow_anonymous true\npersistence false\n"+
			"log_dest stderr\nlog_type error\nlog_type warning\nlog_type notice\nlog_type information\n"+
			"connection_messages true\nset_tcp_nodelay true\nmax_queued_messages 10000\n", port)
		if os.Geteuid() == 0 {
			conf += "user root\n" // else Mosquitto started as root switches to the "mosquitto" user
		}
		file, err := handshaketest.WriteFile(dir, "mosquitto.conf", []byte(conf))
		if err != nil {
			t.Fatal(err)
		}
		b.confFile, b.addr = file, net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		if lastErr = b.start(); lastErr == nil {
			t.Cleanup(func() {
				b.stop(t)
				if t.Failed() {
					t.Logf("mosquitto log (generation %d, connection messages left out):\n%s", b.generation(), strings.Join(b.recent(), "\n"))
				}
			})
			return b
		}
	}
	t.Fatal(lastErr)
	return nil
}

// brokerLog feeds one generation's log lines to the broker.
type brokerLog struct {
	b       *soakBroker
	gen     int
	partial []byte
	running chan struct{} // closed at the " running" line
	seen    bool
}

func (w *brokerLog) Write(p []byte) (int, error) {
	w.partial = append(w.partial, p...)
	for {
		i := bytes.IndexByte(w.partial, '\n')
		if i < 0 {
			break
		}
		line := string(w.partial[:i])
		w.partial = w.partial[i+1:]
		w.b.line(w.gen, line)
		if !w.seen && strings.Contains(line, " running") {
			w.seen = true
			close(w.running)
		}
	}
	w.partial = append([]byte(nil), w.partial...)
	return len(p), nil
}

const clientConnected = "New client connected from "

func (b *soakBroker) line(gen int, line string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if i := strings.Index(line, clientConnected); i >= 0 {
		// "New client connected from 127.0.0.1:40000 as dev-1/s3 (p2, c1, k60)."
		if _, rest, ok := strings.Cut(line[i:], " as "); ok {
			id, _, _ := strings.Cut(rest, " (")
			b.clientGen[id] = gen
		}
		return
	}
	if strings.Contains(line, "New connection from ") || strings.Contains(line, " disconnected") ||
		strings.Contains(line, "closed its connection") {
		return
	}
	if len(b.tail) == 200 {
		b.tail = b.tail[1:]
	}
	b.tail = append(b.tail, fmt.Sprintf("[gen %d] %s", gen, line))
}

// start runs a new generation and waits until it accepts connections.
func (b *soakBroker) start() error {
	b.mu.Lock()
	b.gen++
	gen := b.gen
	b.mu.Unlock()
	w := &brokerLog{b: b, gen: gen, running: make(chan struct{})}
	cmd := exec.Command(b.bin, "-c", b.confFile)
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting mosquitto: %w", err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	b.mu.Lock()
	b.proc, b.exited = cmd.Process, exited
	b.mu.Unlock()
	select {
	case <-w.running:
	case <-exited:
		return fmt.Errorf("mosquitto generation %d on %s exited at start:\n%s", gen, b.addr, strings.Join(b.recent(), "\n"))
	case <-time.After(2 * waitTimeout):
		_ = cmd.Process.Kill()
		<-exited
		return fmt.Errorf("mosquitto generation %d on %s did not log \"running\"", gen, b.addr)
	}
	deadline := time.Now().Add(waitTimeout)
	for backoff := 5 * time.Millisecond; ; backoff = min(2*backoff, 500*time.Millisecond) {
		c, err := net.DialTimeout("tcp", b.addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			<-exited
			return fmt.Errorf("mosquitto generation %d on %s does not accept connections: %w", gen, b.addr, err)
		}
		time.Sleep(backoff)
	}
}

// kill ends the running generation with SIGKILL and returns when it is gone, and the time
// the signal was sent.
func (b *soakBroker) kill(t *testing.T) time.Time {
	t.Helper()
	b.mu.Lock()
	proc, exited, gen := b.proc, b.exited, b.gen
	at := time.Now()
	b.killedAt[gen] = at
	b.mu.Unlock()
	if err := proc.Signal(syscall.SIGKILL); err != nil {
		t.Fatalf("killing mosquitto (pid %d): %v", proc.Pid, err)
	}
	select {
	case <-exited:
	case <-time.After(waitTimeout):
		t.Fatalf("mosquitto (pid %d) still running %v after SIGKILL", proc.Pid, waitTimeout)
	}
	return at
}

// restart starts the next generation on the same port.
func (b *soakBroker) restart(t *testing.T) {
	t.Helper()
	var err error
	for try := range 5 { // the port is free once the old process is gone; a retry covers a slow kernel
		if err = b.start(); err == nil {
			return
		}
		time.Sleep(time.Duration(try+1) * 200 * time.Millisecond)
	}
	t.Fatalf("restarting mosquitto on %s: %v", b.addr, err)
}

func (b *soakBroker) stop(t *testing.T) {
	b.mu.Lock()
	proc, exited := b.proc, b.exited
	b.mu.Unlock()
	select {
	case <-exited:
		return
	default:
	}
	_ = proc.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(5 * time.Second):
		t.Errorf("mosquitto (pid %d) ignored SIGTERM for 5s; killing it", proc.Pid)
		_ = proc.Kill()
		<-exited
	}
}

func (b *soakBroker) generation() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.gen
}

// genOf returns the generation that accepted clientID.
func (b *soakBroker) genOf(clientID string) (int, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	g, ok := b.clientGen[clientID]
	return g, ok
}

// killTime returns when generation gen was killed, if it was.
func (b *soakBroker) killTime(gen int) (time.Time, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	at, ok := b.killedAt[gen]
	return at, ok
}

func (b *soakBroker) recent() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.tail...)
}

// soakFlood is a bounded flood of the TCP listeners: n connections opened over a few
// seconds by a few workers, alternately half-open (connected, nothing sent) and garbage
// (a TLS record claiming to be a ClientHello with random content, or bytes that are not
// TLS at all). The connections stay open until close.
type soakFlood struct {
	mu                          sync.Mutex
	conns                       []net.Conn
	halfOpen, garbage, dialErrs int
}

func floodTCP(targets []string, n int, over time.Duration) *soakFlood {
	f := &soakFlood{}
	const workers = 8
	start := time.Now()
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += workers {
				if wait := time.Until(start.Add(over * time.Duration(i) / time.Duration(n))); wait > 0 {
					time.Sleep(wait) // pacing: n connections spread over the flood's length
				}
				c, err := net.DialTimeout("tcp", targets[i/2%len(targets)], 5*time.Second)
				if err != nil {
					f.mu.Lock()
					f.dialErrs++
					f.mu.Unlock()
					continue
				}
				garbage := i%2 == 1
				if garbage {
					_ = c.SetWriteDeadline(time.Now().Add(2 * time.Second))
					_, _ = c.Write(garbageHello(i))
				}
				f.mu.Lock()
				f.conns = append(f.conns, c)
				if garbage {
					f.garbage++
				} else {
					f.halfOpen++
				}
				f.mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return f
}

// garbageHello is what garbage flood connection i sends: half of them bytes that are not
// TLS at all, the others one handshake record holding one whole ClientHello message of
// random content. Either fails at once: nothing is left for the server to wait for.
func garbageHello(i int) []byte {
	body := make([]byte, 64+i%256)
	_, _ = rand.Read(body)
	if i%8 >= 5 { // the odd i alternate between the two listeners: both get both kinds
		body[0] = 'G' // not a TLS record type
		return body
	}
	n := len(body) - 4
	body[0], body[1], body[2], body[3] = 0x01, 0, byte(n>>8), byte(n) // ClientHello, its length
	return append([]byte{0x16, 0x03, 0x01, byte(len(body) >> 8), byte(len(body))}, body...)
}

func (f *soakFlood) close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range f.conns {
		c.Close()
	}
}

// soakRelay is a lossy UDP path for many DTLS clients at once: each client's datagrams go
// to mqtls from a socket of its own (as through a NAT), and mqtls's answers go back to the
// client. Toward mqtls it drops, duplicates and reorders any datagram; toward the device
// it duplicates and reorders any, but drops only handshake records (content type 22, in
// the clear), which DTLS retransmits. It never drops application data toward the device,
// so a message the broker delivered and mqtls sent on cannot vanish on the way: a lost
// delivery is mqtls's, not the network's. A mapping idle for relayIdle is removed.
type soakRelay struct {
	front  *net.UDPConn
	target *net.UDPAddr
	up     impairment // device → mqtls
	down   impairment // mqtls → device; drop applies to handshake records only

	mu      sync.Mutex
	peers   map[string]*relayPeer
	closed  bool
	stats   soakRelayStats
	wg      sync.WaitGroup
	seedSeq uint64
}

type soakRelayStats struct {
	clients                                       int
	upForwarded, upDropped, upDup, upSwap         int
	downForwarded, downDropped, downDup, downSwap int
}

type relayPeer struct {
	client *net.UDPAddr
	back   *net.UDPConn
	held   []byte // a datagram toward mqtls held back to be reordered; front goroutine only
	heldAt time.Time
}

const relayIdle = 30 * time.Second

func newSoakRelay(t *testing.T, target string, up, down impairment) *soakRelay {
	t.Helper()
	taddr, err := net.ResolveUDPAddr("udp", target)
	if err != nil {
		t.Fatal(err)
	}
	r := &soakRelay{front: listenLoopbackUDP(t), target: taddr, up: up, down: down, peers: map[string]*relayPeer{}}
	r.wg.Add(1)
	go r.fromClients(mrand.New(mrand.NewPCG(uint64(time.Now().UnixNano()), 1)))
	t.Cleanup(r.close)
	return r
}

func (r *soakRelay) addr() string { return r.front.LocalAddr().String() }

func (r *soakRelay) close() {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return
	}
	r.closed = true
	for _, p := range r.peers {
		p.back.Close()
	}
	r.mu.Unlock()
	r.front.Close()
	r.wg.Wait()
}

func (r *soakRelay) statistics() soakRelayStats {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stats
}

// peer returns the mapping for a client, making it (a new socket toward mqtls and its
// reader) on the client's first datagram. It returns nil once the relay is closed.
func (r *soakRelay) peer(from *net.UDPAddr) *relayPeer {
	r.mu.Lock()
	defer r.mu.Unlock()
	if p := r.peers[from.String()]; p != nil || r.closed {
		return p
	}
	back, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil
	}
	p := &relayPeer{client: from, back: back}
	r.peers[from.String()] = p
	r.stats.clients++
	r.seedSeq++
	r.wg.Add(1)
	go r.toClient(p, mrand.New(mrand.NewPCG(uint64(time.Now().UnixNano()), r.seedSeq)))
	return p
}

// fromClients reads the clients' datagrams and forwards them to mqtls, impaired, until the
// relay is closed. A datagram held back for reordering goes out after the client's next
// one, or after 20ms.
func (r *soakRelay) fromClients(rng *mrand.Rand) {
	defer r.wg.Done()
	buf := make([]byte, 64<<10)
	holding := map[*relayPeer]bool{}
	for {
		wait := 500 * time.Millisecond
		if len(holding) > 0 {
			wait = 10 * time.Millisecond
		}
		_ = r.front.SetReadDeadline(time.Now().Add(wait))
		n, from, err := r.front.ReadFromUDP(buf)
		now := time.Now()
		for p := range holding {
			if now.Sub(p.heldAt) >= 20*time.Millisecond {
				_, _ = p.back.WriteToUDP(p.held, r.target)
				p.held = nil
				delete(holding, p)
			}
		}
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				continue
			}
			return // closed
		}
		p := r.peer(from)
		if p == nil {
			continue
		}
		d := append([]byte(nil), buf[:n]...)
		drop, dup, swap := rng.Float64() < r.up.drop, rng.Float64() < r.up.dup, rng.Float64() < r.up.swap
		r.mu.Lock()
		switch {
		case drop:
			r.stats.upDropped++
		case swap && p.held == nil:
			r.stats.upSwap++
		default:
			r.stats.upForwarded++
			if dup {
				r.stats.upDup++
			}
		}
		r.mu.Unlock()
		switch {
		case drop:
			continue
		case swap && p.held == nil:
			p.held, p.heldAt, holding[p] = d, now, true
			continue
		}
		_, _ = p.back.WriteToUDP(d, r.target)
		if dup {
			_, _ = p.back.WriteToUDP(d, r.target)
		}
		if p.held != nil {
			_, _ = p.back.WriteToUDP(p.held, r.target)
			p.held = nil
			delete(holding, p)
		}
	}
}

// toClient forwards mqtls's datagrams for one client, impaired, until the relay is closed
// or the mapping has been idle for relayIdle.
func (r *soakRelay) toClient(p *relayPeer, rng *mrand.Rand) {
	defer r.wg.Done()
	buf := make([]byte, 64<<10)
	var held []byte
	var heldAt time.Time
	last := time.Now()
	for {
		wait := time.Second
		if held != nil {
			wait = 20 * time.Millisecond
		}
		_ = p.back.SetReadDeadline(time.Now().Add(wait))
		n, _, err := p.back.ReadFromUDP(buf)
		now := time.Now()
		if held != nil && now.Sub(heldAt) >= 20*time.Millisecond {
			_, _ = r.front.WriteToUDP(held, p.client)
			held = nil
		}
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				if now.Sub(last) > relayIdle {
					r.mu.Lock()
					delete(r.peers, p.client.String())
					r.mu.Unlock()
					p.back.Close()
					return
				}
				continue
			}
			return // closed
		}
		last = now
		d := append([]byte(nil), buf[:n]...)
		handshake := n > 0 && d[0] == 22 // DTLS record content type handshake, in the clear
		drop := handshake && rng.Float64() < r.down.drop
		dup, swap := rng.Float64() < r.down.dup, rng.Float64() < r.down.swap
		r.mu.Lock()
		switch {
		case drop:
			r.stats.downDropped++
		case swap && held == nil:
			r.stats.downSwap++
		default:
			r.stats.downForwarded++
			if dup {
				r.stats.downDup++
			}
		}
		r.mu.Unlock()
		switch {
		case drop:
			continue
		case swap && held == nil:
			held, heldAt = d, now
			continue
		}
		_, _ = r.front.WriteToUDP(d, p.client)
		if dup {
			_, _ = r.front.WriteToUDP(d, p.client)
		}
		if held != nil {
			_, _ = r.front.WriteToUDP(held, p.client)
			held = nil
		}
	}
}

// A minimal MQTT 3.1.1 client for the soak's devices: packets are written whole (one
// Write each, so over DTLS one datagram each) and read one at a time under a deadline.

// soakMQTT is one device session's MQTT byte stream.
type soakMQTT struct {
	conn net.Conn
	r    io.Reader
}

func newSoakMQTT(conn net.Conn, datagram bool) *soakMQTT {
	m := &soakMQTT{conn: conn, r: conn}
	if !datagram { // datagram.Conn buffers a whole datagram itself
		m.r = bufio.NewReaderSize(conn, 4096)
	}
	return m
}

func (m *soakMQTT) write(p []byte) error {
	if err := m.conn.SetWriteDeadline(time.Now().Add(2 * waitTimeout)); err != nil {
		return err
	}
	_, err := m.conn.Write(p)
	return err
}

// read returns the next packet's first byte and body, waiting until deadline.
func (m *soakMQTT) read(deadline time.Time) (byte, []byte, error) {
	if err := m.conn.SetReadDeadline(deadline); err != nil {
		return 0, nil, err
	}
	return readPacket(m.r)
}

// subscribePacket is a SUBSCRIBE (§3.8) for one topic filter at QoS 1.
func subscribePacket(id uint16, topic string) []byte {
	body := []byte{byte(id >> 8), byte(id)} // packet identifier
	body = appendString(body, topic)        // topic filter
	body = append(body, 1)                  // requested QoS 1
	return appendPacket(nil, 0x82, body)    // 0x82: SUBSCRIBE, reserved flags 0010
}

// pubackPacket is a PUBACK (§3.4) for packet identifier id.
func pubackPacket(id uint16) []byte {
	return appendPacket(nil, 0x40, []byte{byte(id >> 8), byte(id)})
}

// parsePublish splits a PUBLISH (§3.3) into topic, packet identifier (0 at QoS 0), QoS
// and payload.
func parsePublish(first byte, body []byte) (topic string, id uint16, qos byte, payload []byte, err error) {
	qos = first >> 1 & 3
	if len(body) < 2 {
		return "", 0, qos, nil, errors.New("PUBLISH shorter than its topic length")
	}
	n := int(body[0])<<8 | int(body[1])
	if len(body) < 2+n {
		return "", 0, qos, nil, errors.New("PUBLISH shorter than its topic")
	}
	topic, rest := string(body[2:2+n]), body[2+n:]
	if qos > 0 {
		if len(rest) < 2 {
			return topic, 0, qos, nil, errors.New("PUBLISH without its packet identifier")
		}
		id, rest = uint16(rest[0])<<8|uint16(rest[1]), rest[2:]
	}
	return topic, id, qos, rest, nil
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
