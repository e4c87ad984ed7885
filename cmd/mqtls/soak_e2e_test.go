package main

// The soak: the real mqtls binary, with three listeners (mutual TLS, TLS-PSK, DTLS-PSK)
// from one config file, in front of a real Mosquitto, under a steady load of devices that
// connect, subscribe to their own topic, publish QoS 1 messages and reconnect when anything
// breaks, while the test kills the broker, rotates the server certificate and CA and the
// PSK file, floods the TCP listeners, and runs half the DTLS devices over a lossy path.
// Afterwards mqtls must still serve, be back to its resources before the load, and every
// acknowledged message must have been delivered, except those the killed broker took with
// it.
//
// CI runs the short form (soakDefaultDuration, soakDefaultDevices); `make soak` runs it
// for longer and with more devices through MQTLS_SOAK and MQTLS_SOAK_DEVICES.

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/dtls/v3"

	"github.com/mqtls/mqtls/handshake/handshaketest"
	"github.com/mqtls/mqtls/handshake/tlspsk"
	"github.com/mqtls/mqtls/proxy/datagram"
)

// What "back to the baseline" means once the load is over and every session has ended.
const (
	soakGoroutineMargin = 10 // goroutines ≤ baseline + this
	soakFDMargin        = 10 // open files ≤ baseline + this
	// Heap in use ≤ factor × baseline + slack + perG × the peak number of goroutines. The
	// Go runtime keeps what the peak needed: the descriptor of every goroutine it ever ran
	// (for reuse, with the slice listing them), a timer per poll descriptor, and partly
	// used spans. Measured: 1.5 to 1.8 KiB per peak goroutine after runs of 300 to 1500
	// devices, tracking the peak rather than the number of sessions and messages (which a
	// leak would track).
	soakHeapFactor = 2
	soakHeapSlack  = 8 << 20 // bytes
	soakHeapPerG   = 2 << 10 // bytes
)

// Device timing. Generous: the machine may be busy, and the child may run under -race.
const (
	soakHandshakeTimeout = 15 * time.Second
	soakReplyTimeout     = 15 * time.Second // CONNACK, SUBACK
	soakLossyReply       = 8 * time.Second  // CONNACK over the lossy path: a lost CONNECT means a new session
	soakMessageTimeout   = 30 * time.Second // PUBACK and the delivery of one message
	soakResendEvery      = 2 * time.Second  // over the lossy path: PUBLISH (DUP) and SUBSCRIBE again
	soakBackoffMin       = 200 * time.Millisecond
	soakBackoffMax       = 3 * time.Second
	// soakJoinWithin is how soon a device added by a rotation must get in.
	soakJoinWithin = 30 * time.Second
	// soakTail is the least time the load runs after the last broker restart.
	soakTail = 20 * time.Second
)

const soakConfig = `
drain_timeout: 5s
log: {format: json, level: info}
admin:
  listen: 127.0.0.1:0
  pprof: true
  reload_interval: 250ms
listeners:
  - name: mtls
    listen: 127.0.0.1:0
    upstream: {{broker}}
    tls: {cert: {{cert}}, key: {{key}}, client_ca: {{ca}}}
    policy: {client_id: prefix}
  - name: psk
    listen: 127.0.0.1:0
    upstream: {{broker}}
    psk: {file: {{psk}}}
    policy: {client_id: prefix}
  - name: dtls
    transport: dtls
    listen: 127.0.0.1:0
    upstream: {{broker}}
    psk: {file: {{psk}}}
    policy: {client_id: prefix}
    timeouts: {idle: 20s}
`

// TestSoak: see the file comment. The broker is killed once per soakCycle, and so often
// the server material and the PSK file are rotated and the TCP listeners flooded.
func TestSoak(t *testing.T) {
	checkGoroutines(t) // this process's: devices, watchers, relay, samplers
	p := soakParamsFromEnv(t)
	if dl, ok := t.Deadline(); ok && time.Until(dl) < p.duration+3*time.Minute {
		t.Fatalf("the soak runs %v plus about 3m of setup and checks, but go test's -timeout leaves %v: raise -timeout",
			p.duration, time.Until(dl).Round(time.Second))
	}
	// The race detector allows 8128 live goroutines per process: the child runs under it
	// when this test does, unless the run is too big for it; this process needs a few per
	// device.
	race := raceEnabled() && p.devices <= 1000
	if raceEnabled() && p.devices > 2000 {
		t.Fatalf("MQTLS_SOAK_DEVICES=%d needs more goroutines than the race detector allows: run it without -race (make soak)", p.devices)
	}
	began := time.Now()
	bin := buildMqtls(t, race)
	built := time.Since(began)

	cycles := max(1, int(p.duration/soakCycle))
	s := &soakTest{t: t, p: p, run: &soakRun{stop: make(chan struct{})}, rotations: map[string]int{}}

	// One CA per version of the server material; devices trust them all from the start.
	s.roots = x509.NewCertPool()
	for i := range cycles + 1 {
		ca, err := handshaketest.NewCA(fmt.Sprintf("mqtls soak CA v%d", i))
		if err != nil {
			t.Fatal(err)
		}
		s.cas = append(s.cas, ca)
		s.roots.AddCert(ca.Cert)
	}
	server := issueServerCert(t, s.cas[0])
	s.rotations[server.Cert.SerialNumber.Text(16)] = 0
	s.vol = newSecretVolume(t, "..v0", map[string][]byte{
		"tls.crt": server.CertPEM, "tls.key": server.KeyPEM, "ca.crt": s.cas[0].CertPEM,
	})

	nMTLS, nPSK := p.devices/3, p.devices/3
	nDTLS := p.devices - nMTLS - nPSK
	nLossy := nDTLS / 2
	dir := t.TempDir()
	s.psks = &soakPSKs{file: filepath.Join(dir, "psk.txt"), keys: map[string][]byte{}}
	for i := range nPSK {
		s.psks.add(t, fmt.Sprintf("psk-%04d", i))
	}
	for i := range nDTLS {
		s.psks.add(t, fmt.Sprintf("dtls-%04d", i))
	}
	nWatchers := max(2, p.devices/100)
	for i := 0; i < nWatchers; i += 2 {
		s.psks.add(t, fmt.Sprintf("watch-%02d", i))
	}
	if err := os.WriteFile(s.psks.file, s.psks.text(), 0o600); err != nil {
		t.Fatal(err)
	}

	s.broker = startSoakBroker(t)
	file := writeConfig(t, dir, "mqtls.yaml", soakConfig, map[string]string{
		"broker": s.broker.addr, "cert": s.vol.path("tls.crt"), "key": s.vol.path("tls.key"),
		"ca": s.vol.path("ca.crt"), "psk": s.psks.file,
	})
	s.child = startMqtlsChild(t, bin, file, "mtls", "psk", "dtls")
	s.relay = newSoakRelay(t, s.child.addrs["dtls"],
		impairment{drop: 0.03, dup: 0.03, swap: 0.03}, // toward mqtls
		impairment{drop: 0.10, dup: 0.03, swap: 0.03}) // toward devices; drops handshake records only

	s.seed = uint64(time.Now().UnixNano())
	for i := range nWatchers {
		id := fmt.Sprintf("watch-%02d", i)
		var d *soakDevice
		if i%2 == 0 {
			d = s.pskDevice(soakPSK, id, "")
		} else {
			d = s.mtlsDevice(id, s.cas[0], "")
		}
		d.bucket = i
		s.watchers = append(s.watchers, &soakWatcher{dev: d, got: map[string][]uint64{}, up: make(chan struct{})})
	}
	for i := range nMTLS {
		s.devices = append(s.devices, s.mtlsDevice(fmt.Sprintf("mtls-%04d", i), s.cas[0], ""))
	}
	for i := range nPSK {
		s.devices = append(s.devices, s.pskDevice(soakPSK, fmt.Sprintf("psk-%04d", i), ""))
	}
	for i := range nDTLS {
		kind := soakDTLS
		if i < nLossy {
			kind = soakDTLSLossy
		}
		s.devices = append(s.devices, s.pskDevice(kind, fmt.Sprintf("dtls-%04d", i), ""))
	}

	// Warm-up: one short session of each kind, so that what mqtls sets up once (pools,
	// pion's listener state, the first upstream dial) exists before the baseline.
	for _, i := range []int{0, nMTLS, nMTLS + nPSK, nMTLS + nPSK + nLossy} {
		if i < len(s.devices) {
			s.mustSession(s.devices[i], "warm-up")
		}
	}
	s.waitIdle(time.Minute)
	base, err := s.child.admin.usage(true)
	if err != nil {
		t.Fatalf("measuring the baseline: %v", err)
	}
	s.saveProfile("heap-before")
	t.Logf("soak: %d devices (%d mtls, %d psk, %d dtls of which %d over the lossy relay), %v, %d fault cycle(s), child built in %v (race: %v), seed %d; baseline %v",
		p.devices, nMTLS, nPSK, nDTLS, nLossy, p.duration, cycles, built.Round(time.Second), race, s.seed, base)

	// The load, and the faults on their schedule.
	peaks := startPeaks(s.child.admin)
	defer peaks.end()
	s.watchStop = make(chan struct{})
	defer s.stopWatchers()
	for _, w := range s.watchers {
		s.watchWG.Add(1)
		go func() {
			defer s.watchWG.Done()
			w.run(s.watchStop)
		}()
	}
	for _, w := range s.watchers {
		select {
		case <-w.up:
		case <-time.After(3 * waitTimeout):
			t.Fatalf("watcher %s did not get its SUBACK within %v", w.dev.id, 3*waitTimeout)
		}
	}
	s.start = time.Now()
	ramp := min(5*time.Second, p.duration/10)
	for _, d := range s.devices {
		s.startDevice(d, time.Duration(mrand.Int64N(int64(ramp))))
	}
	defer s.stopLoad()
	period := p.duration / time.Duration(cycles)
	var lastRestart time.Time
	for c := range cycles {
		at := s.start.Add(time.Duration(c) * period)
		sleepUntil(at.Add(period * 15 / 100))
		s.flood()
		sleepUntil(at.Add(period * 35 / 100))
		s.rotate(c + 1)
		sleepUntil(at.Add(period * 55 / 100))
		lastRestart = s.killBroker()
	}
	sleepUntil(later(s.start.Add(p.duration), lastRestart.Add(soakTail)))
	s.stopLoad()
	loadTook := time.Since(s.start)
	s.stopWatchers()

	// mqtls still serves: a fresh device of each kind connects, publishes and gets its
	// message back.
	s.run = &soakRun{stop: make(chan struct{})}
	fresh := []*soakDevice{
		s.mtlsDevice("fresh-mtls", s.cas[cycles], ""),
		s.pskDevice(soakPSK, "psk-0000", "fresh-"),
		s.pskDevice(soakDTLS, "dtls-0000", "fresh-"),
	}
	if nLossy > 0 {
		fresh = append(fresh, s.pskDevice(soakDTLSLossy, "dtls-0000", "fresh-lossy-"))
	}
	for _, d := range fresh {
		s.mustSession(d, "after the load")
		s.devices = append(s.devices, d)
	}

	// Back to the baseline: no session left (a DTLS session whose DISCONNECT and
	// close_notify the relay lost ends at its idle timeout), then goroutines and files
	// within their margins (they close asynchronously, so poll), then the heap after a
	// collection.
	s.waitIdle(time.Minute)
	s.relay.close()
	after, ok := s.settle(base, time.Minute)
	if !ok {
		t.Errorf("mqtls did not come back to its baseline within a minute: %v now, baseline %v (margins: +%d goroutines, +%d fds)",
			after, base, soakGoroutineMargin, soakFDMargin)
		if body, err := s.child.admin.get("/debug/pprof/goroutine?debug=1"); err == nil {
			t.Logf("mqtls goroutines:\n%s", body)
		}
	}
	peak, peakActive, sampleErrs := peaks.end()
	if heap, err := s.child.admin.heapInuse(true); err != nil {
		t.Errorf("reading the heap: %v", err)
	} else {
		after.heap = heap
		if limit := soakHeapFactor*base.heap + soakHeapSlack + soakHeapPerG*float64(peak.goroutines); heap > limit {
			t.Errorf("heap in use %.1f MiB after the load, want at most %.1f MiB (%d × baseline %.1f MiB + %d MiB + %d KiB × %d peak goroutines)",
				heap/(1<<20), limit/(1<<20), soakHeapFactor, base.heap/(1<<20), soakHeapSlack>>20, soakHeapPerG>>10, peak.goroutines)
		}
	}
	s.saveProfile("heap-after")
	s.child.stop(t)
	if out := s.child.stderr.String(); strings.Contains(out, "DATA RACE") || strings.Contains(out, "panic:") {
		t.Errorf("mqtls's stderr reports a data race or a panic:\n%s", out)
	}
	if lines := s.child.log.errorLines(); len(lines) > 0 {
		t.Errorf("mqtls logged %d line(s) at level error, want none:\n%s", len(lines), strings.Join(lines[:min(len(lines), 20)], "\n"))
	}
	s.broker.stop(t)

	tally := s.account()
	rs := s.relay.statistics()
	t.Logf("soak summary: %v of load (%v in all); devices %d (%s); messages sent %d, acked %d, delivered %d, lost by broker %d, lost by mqtls %d, unacked %d, duplicate deliveries %d, resent %d; watchers %d (%d deliveries): %d of %d watchable acked messages delivered, %d lost by broker at the kill; sessions %d up of %d attempts, reconnects after a failure %d, handshake failures %d %v, CONNACK refusals %v, message timeouts %d; broker kills %d; rotations %d; floods %d connections (%d half-open, %d garbage, %d dial errors); lossy relay: %d clients, up %d fwd/%d drop/%d dup/%d swap, down %d fwd/%d drop/%d dup/%d swap; mqtls peaks: %d goroutines, %d fds, heap %.1f MiB, %.0f connections (%d failed samples); baseline %v; after %v",
		loadTook.Round(time.Second), time.Since(began).Round(time.Second), len(s.devices), tally.kinds,
		tally.sent, tally.acked, tally.delivered, tally.lostByBroker, tally.lostByMqtls, tally.unacked, tally.dupDeliveries, tally.resends,
		len(s.watchers), tally.watchDeliveries, tally.watched, tally.watchable, tally.watchLostByBroker,
		tally.up, tally.attempts, tally.reconnects, tally.handshakeFails, tally.handshakes, tally.refused, tally.timeouts,
		len(s.kills), len(s.rotationEvents), s.floodStats.halfOpen+s.floodStats.garbage, s.floodStats.halfOpen, s.floodStats.garbage, s.floodStats.dialErrs,
		rs.clients, rs.upForwarded, rs.upDropped, rs.upDup, rs.upSwap, rs.downForwarded, rs.downDropped, rs.downDup, rs.downSwap,
		peak.goroutines, peak.fds, peak.heap/(1<<20), peakActive, sampleErrs, base, after)
	t.Logf("mqtls audit lines by listener, outcome, reason: %v", sortedCounts(s.child.log.auditCounts()))
	t.Logf("mqtls's other log lines by level and message: %v", sortedCounts(s.child.log.messageCounts()))
	for k, e := range tally.firstHSErr {
		t.Logf("first handshake failure of a %s device: %s", k, e)
	}
}

// soakTest is one soak run's state. Only the test goroutine touches it, except the
// devices, each of which its own goroutine owns while the load runs.
type soakTest struct {
	t       *testing.T
	p       soakParams
	run     *soakRun
	seed    uint64
	broker  *soakBroker
	child   *mqtlsChild
	relay   *soakRelay
	vol     *secretVolume
	psks    *soakPSKs
	cas     []*handshaketest.CA
	roots   *x509.CertPool
	devices []*soakDevice

	watchers     []*soakWatcher
	watchStop    chan struct{}
	watchWG      sync.WaitGroup
	watchStopped bool

	start          time.Time
	wg             sync.WaitGroup
	stopped        bool
	rotations      map[string]int // server certificate serial (hex) → version
	rotationEvents []soakRotation
	kills          []soakKill
	floodStats     struct{ halfOpen, garbage, dialErrs int }
}

// soakRun is what the devices of one load share.
type soakRun struct {
	stop  chan struct{} // closed: finish the message in flight, disconnect, return
	acked atomic.Int64  // messages acknowledged so far, for progress checks
}

type soakRotation struct {
	version                            int
	swapped, certReloaded, pskReloaded time.Time
}

type soakKill struct {
	at, restarted     time.Time
	refusedWhileDown  float64 // CONNECTs mqtls answered with server unavailable
	sawDevicesRefused bool
}

func sleepUntil(at time.Time) {
	if d := time.Until(at); d > 0 {
		time.Sleep(d) // the fault schedule: what happens next is due at a time, not on an event
	}
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// stopping reports whether stop is closed.
func stopping(stop <-chan struct{}) bool {
	select {
	case <-stop:
		return true
	default:
		return false
	}
}

// pause waits d, or returns false as soon as stop is closed.
func pause(stop <-chan struct{}, d time.Duration) bool {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-stop:
		return false
	case <-timer.C:
		return true
	}
}

func (s *soakTest) startDevice(d *soakDevice, delay time.Duration) {
	run := s.run
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if pause(run.stop, delay) {
			d.run(run)
		}
	}()
}

// stopLoad tells the devices to finish and waits for them: each ends within its message
// timeout.
func (s *soakTest) stopLoad() {
	if !s.stopped {
		s.stopped = true
		close(s.run.stop)
	}
	s.wg.Wait()
}

// saveProfile writes the child's heap profile to $MQTLS_SOAK_PROFILES/name.pb.gz when
// that names a directory, for `go tool pprof`.
func (s *soakTest) saveProfile(name string) {
	dir := os.Getenv("MQTLS_SOAK_PROFILES")
	if dir == "" {
		return
	}
	body, err := s.child.admin.get("/debug/pprof/heap")
	if err == nil {
		err = os.WriteFile(filepath.Join(dir, name+".pb.gz"), body, 0o644)
	}
	if err != nil {
		s.t.Logf("saving the %s profile: %v", name, err)
	}
}

// stopWatchers lets the watchers receive what is still on its way, until none has had a
// delivery for a second (at most 15s), then stops them and waits for them.
func (s *soakTest) stopWatchers() {
	if s.watchStopped || s.watchStop == nil {
		return
	}
	s.watchStopped = true
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		quiet := true
		for _, w := range s.watchers {
			if time.Since(time.Unix(0, w.last.Load())) < time.Second {
				quiet = false
			}
		}
		if quiet {
			break
		}
	}
	close(s.watchStop)
	s.watchWG.Wait()
}

// mustSession runs one short session of d (three tries, for the lossy path) and fails the
// test unless it got in and every message came back.
func (s *soakTest) mustSession(d *soakDevice, when string) {
	s.t.Helper()
	for try := 0; ; try++ {
		first := len(d.msgs)
		if d.session(s.run, 2, 50*time.Millisecond) && len(d.msgs) == first+2 && d.allBack(first) {
			return
		}
		if try == 2 {
			last := d.sessions[len(d.sessions)-1]
			s.t.Fatalf("%s: %s device %s: no complete session in 3 tries; the last ended by %s: %s", when, d.kind, d.id, last.endBy, last.err)
		}
	}
}

// waitIdle waits until mqtls has no connection open on any listener.
func (s *soakTest) waitIdle(timeout time.Duration) {
	s.t.Helper()
	if v, ok := s.child.admin.waitMetric(timeout, "mqtls_connections_active", func(v float64) bool { return v == 0 }); !ok {
		s.t.Fatalf("mqtls_connections_active is still %v after %v, want 0", v, timeout)
	}
}

// settle polls the child until its goroutines and files are within their margins of base.
func (s *soakTest) settle(base soakUsage, timeout time.Duration) (soakUsage, bool) {
	deadline := time.Now().Add(timeout)
	for {
		u, err := s.child.admin.usage(false)
		if err == nil && u.goroutines <= base.goroutines+soakGoroutineMargin && u.fds <= base.fds+soakFDMargin {
			return u, true
		}
		if time.Now().After(deadline) {
			return u, false
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// flood opens soakFloodConns half-open and garbage connections to the TCP listeners over
// a few seconds, checks that the devices go on meanwhile and that mqtls ends every flood
// connection as a failed handshake, and closes them.
func (s *soakTest) flood() {
	t := s.t
	t.Helper()
	admin := s.child.admin
	failed := func() float64 {
		v, err := admin.value("mqtls_connections_total", "outcome", "handshake_failed")
		if err != nil {
			t.Fatalf("scraping /metrics: %v", err)
		}
		return v
	}
	before := failed()
	ackedBefore := s.run.acked.Load()
	f := floodTCP([]string{s.child.addrs["mtls"], s.child.addrs["psk"]}, soakFloodConns, soakFloodOver)
	s.floodStats.halfOpen += f.halfOpen
	s.floodStats.garbage += f.garbage
	s.floodStats.dialErrs += f.dialErrs
	// The garbage fails its handshake at once, while the half-open connections are held.
	if v, ok := admin.waitMetric(30*time.Second, "mqtls_connections_total", func(v float64) bool { return v >= before+float64(f.garbage) }, "outcome", "handshake_failed"); !ok {
		t.Errorf("flood: %v handshakes failed since it began, want at least the %d garbage connections", v-before, f.garbage)
	}
	acked := s.run.acked.Load() - ackedBefore
	f.close()
	// Closed by the test, the half-open ones fail their handshake too.
	if v, ok := admin.waitMetric(30*time.Second, "mqtls_connections_total", func(v float64) bool {
		return v >= before+float64(f.garbage+f.halfOpen)
	}, "outcome", "handshake_failed"); !ok {
		t.Errorf("flood: %v handshakes failed once its connections were closed, want at least its %d connections", v-before, f.garbage+f.halfOpen)
	}
	if acked == 0 {
		t.Errorf("flood: no device's message was acknowledged while %d flood connections were open", f.garbage+f.halfOpen)
	}
	if f.dialErrs > soakFloodConns/10 {
		t.Errorf("flood: %d of %d connections could not even be opened", f.dialErrs, soakFloodConns)
	}
}

// rotate swaps the secret volume to server material of version k (a new server
// certificate from CA k, a client CA bundle of CAs 0..k), rewrites the PSK file with two
// more devices, waits for mqtls to reload both, and starts the new devices: an mTLS one
// from CA k, a TLS-PSK and a DTLS one with the new keys.
func (s *soakTest) rotate(k int) {
	t := s.t
	t.Helper()
	srv := issueServerCert(t, s.cas[k])
	s.rotations[srv.Cert.SerialNumber.Text(16)] = k
	var bundle []byte
	for _, ca := range s.cas[:k+1] {
		bundle = append(bundle, ca.CertPEM...)
	}
	mark := s.child.log.mark()
	ev := soakRotation{version: k}
	s.vol.swap(t, fmt.Sprintf("..v%d", k), map[string][]byte{"tls.crt": srv.CertPEM, "tls.key": srv.KeyPEM, "ca.crt": bundle})
	ev.swapped = time.Now()

	pskID, dtlsID := fmt.Sprintf("psk-new-%d", k), fmt.Sprintf("dtls-new-%d", k)
	pskKey := s.psks.add(t, pskID)
	s.psks.add(t, dtlsID)
	if c, _, err := dialPSKOnce(s.child.addrs["psk"], &tlspsk.ClientConfig{Identity: pskID, Key: pskKey}); err == nil {
		c.Close()
		t.Errorf("rotation %d: PSK identity %s got in before it was in the PSK file", k, pskID)
	}
	replaceFile(t, s.psks.file, s.psks.text())

	reloaded := func(file string) func(logEntry) bool {
		return func(e logEntry) bool {
			if e.str("message") != "reloaded" {
				return false
			}
			files, _ := e["files"].([]any)
			return slices.Contains(files, any(file))
		}
	}
	if _, ok := s.child.log.waitFrom(mark, 1, 3*waitTimeout, s.child.exited, reloaded(s.vol.path("tls.crt"))); !ok {
		t.Fatalf("rotation %d: mqtls did not log \"reloaded\" for %s", k, s.vol.path("tls.crt"))
	}
	ev.certReloaded = time.Now()
	// Two lines: the PSK and the DTLS listener each load the file.
	if _, ok := s.child.log.waitFrom(mark, 2, 3*waitTimeout, s.child.exited, reloaded(s.psks.file)); !ok {
		t.Fatalf("rotation %d: mqtls did not log \"reloaded\" twice for %s", k, s.psks.file)
	}
	ev.pskReloaded = time.Now()
	s.rotationEvents = append(s.rotationEvents, ev)

	for _, d := range []*soakDevice{
		s.mtlsDevice(fmt.Sprintf("mtls-new-%d", k), s.cas[k], ""),
		s.pskDevice(soakPSK, pskID, ""),
		s.pskDevice(soakDTLS, dtlsID, ""),
	} {
		d.added = time.Now()
		s.devices = append(s.devices, d)
		s.startDevice(d, 0)
	}
}

// killBroker kills Mosquitto with SIGKILL, waits until mqtls has answered devices with
// "server unavailable", and starts Mosquitto again on the same port. It returns when the
// new broker accepts connections.
func (s *soakTest) killBroker() time.Time {
	t := s.t
	t.Helper()
	admin := s.child.admin
	before, err := admin.value("mqtls_connections_total", "outcome", "upstream_unavailable")
	if err != nil {
		t.Fatalf("scraping /metrics: %v", err)
	}
	var ev soakKill
	ev.at = s.broker.kill(t)
	want := before + float64(max(1, min(10, s.p.devices/20)))
	v, ok := admin.waitMetric(waitTimeout, "mqtls_connections_total", func(v float64) bool { return v >= want }, "outcome", "upstream_unavailable")
	ev.refusedWhileDown, ev.sawDevicesRefused = v-before, ok
	s.broker.restart(t)
	ev.restarted = time.Now()
	s.kills = append(s.kills, ev)
	return ev.restarted
}

// soakPSKs is the PSK file's content: identities in the order added, and their keys.
type soakPSKs struct {
	file string
	ids  []string
	keys map[string][]byte
}

func (p *soakPSKs) add(t *testing.T, id string) []byte {
	t.Helper()
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	p.ids = append(p.ids, id)
	p.keys[id] = key
	return key
}

// text is the file in Mosquitto's psk_file format, identity:hexkey.
func (p *soakPSKs) text() []byte {
	var b bytes.Buffer
	for _, id := range p.ids {
		fmt.Fprintf(&b, "%s:%s\n", id, hex.EncodeToString(p.keys[id]))
	}
	return b.Bytes()
}

// Devices.

type soakKind int

const (
	soakMTLS      soakKind = iota // mutual TLS on the mtls listener
	soakPSK                       // TLS-PSK on the psk listener
	soakDTLS                      // DTLS-PSK straight to the dtls listener
	soakDTLSLossy                 // DTLS-PSK through the lossy relay
)

func (k soakKind) String() string {
	return [...]string{"mtls", "psk", "dtls", "dtls-lossy"}[k]
}

// soakDevice is one device: how it connects, and the record of what it did, which its
// goroutine owns while it runs.
type soakDevice struct {
	id     string // the identity: certificate CN or PSK identity
	label  string // in its client IDs, "<id>/<label>s<n>", to keep them unique
	kind   soakKind
	bucket int // which watcher sees its messages
	addr   string
	tls    *tls.Config
	psk    *tlspsk.ClientConfig
	dtls   []dtls.ClientOption
	rng    *mrand.Rand
	added  time.Time // zero for the devices there from the start

	sessions       []soakSession
	msgs           []soakMsg // message seq is at index seq-1
	handshakeFails int
	handshakeErr   string   // the first handshake failure
	credRefused    []string // a valid credential refused: must stay empty
	refused        map[byte]int
	protocolErrs   []string
	corrupt        []string
	dupDeliveries  int
	resends        int
	timeouts       int
}

type soakSession struct {
	clientID string
	start    time.Time // dialing began
	hsDone   time.Time // handshake done
	up       time.Time // SUBACK received; zero when it never got that far
	end      time.Time
	endBy    string // clean, stop, error, timeout, handshake, refused, protocol
	err      string
	serial   string // mtls: the server certificate's serial, hex
	gen      int    // the broker generation that accepted it (set by account)
}

type soakMsg struct {
	session                int
	sent, acked, delivered time.Time
	waitEnd                string // how the wait for PUBACK and delivery ended: "" (both came), error, timeout
}

func (s *soakTest) newDevice(kind soakKind, id, label, addr string) *soakDevice {
	return &soakDevice{
		id: id, label: label, kind: kind, addr: addr, refused: map[byte]int{}, bucket: len(s.devices) % max(1, len(s.watchers)),
		rng: mrand.New(mrand.NewPCG(s.seed, uint64(len(s.devices))<<8|uint64(len(label)))),
	}
}

// mtlsDevice is a device with a certificate for CN id from ca.
func (s *soakTest) mtlsDevice(id string, ca *handshaketest.CA, label string) *soakDevice {
	c, err := ca.Issue(handshaketest.Template{CommonName: id})
	if err != nil {
		s.t.Fatal(err)
	}
	cert := c.TLSCertificate()
	d := s.newDevice(soakMTLS, id, label, s.child.addrs["mtls"])
	d.tls = &tls.Config{
		RootCAs:    s.roots,
		ServerName: "127.0.0.1",
		// Always present the certificate (crypto/tls sends none when the server's
		// acceptable CAs do not name its issuer).
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil },
	}
	return d
}

// pskDevice is a TLS-PSK or DTLS-PSK device with identity id from the PSK file.
func (s *soakTest) pskDevice(kind soakKind, id, label string) *soakDevice {
	key := s.psks.keys[id]
	if key == nil {
		s.t.Fatalf("no PSK for %s", id)
	}
	switch kind {
	case soakPSK:
		d := s.newDevice(kind, id, label, s.child.addrs["psk"])
		d.psk = &tlspsk.ClientConfig{Identity: id, Key: key}
		return d
	case soakDTLS, soakDTLSLossy:
		addr := s.child.addrs["dtls"]
		if kind == soakDTLSLossy {
			addr = s.relay.addr()
		}
		d := s.newDevice(kind, id, label, addr)
		suite := []dtls.CipherSuiteID{dtls.TLS_PSK_WITH_AES_128_CCM_8, dtls.TLS_PSK_WITH_AES_128_GCM_SHA256}[len(s.devices)%2]
		d.dtls = []dtls.ClientOption{
			dtls.WithPSK(func([]byte) ([]byte, error) { return key, nil }),
			dtls.WithPSKIdentityHint([]byte(id)), // pion's client sends this as its identity
			dtls.WithCipherSuites(suite),
			dtls.WithConnectionIDGenerator(dtls.OnlySendCIDGenerator()),
			dtls.WithFlightInterval(250 * time.Millisecond),
		}
		return d
	}
	s.t.Fatalf("pskDevice: kind %v", kind)
	return nil
}

// topic is where the device publishes, and what it subscribes to: under its watcher's
// bucket, soak/<bucket>/<id>.
func (d *soakDevice) topic() string { return fmt.Sprintf("soak/%d/%s", d.bucket, d.name()) }

// name tells the device from another with the same identity (a fresh one after the
// load): it is in its topic and its payloads.
func (d *soakDevice) name() string {
	if d.label == "" {
		return d.id
	}
	return d.id + "." + strings.TrimSuffix(d.label, "-")
}

func (d *soakDevice) payload(seq int) string { return soakPayload(d.name(), seq) }

// soakPayload is the content of device id's message seq: distinct per message, and
// checkable byte by byte by whoever receives it.
func soakPayload(id string, seq int) string {
	b := fmt.Appendf(nil, "%s#%d#", id, seq)
	for i := range seq * 37 % 240 {
		b = append(b, byte('a'+(seq+i)%26))
	}
	return string(b)
}

// soakSeq returns the sequence number of a message of device id, or 0 when payload is
// not exactly one.
func soakSeq(id string, payload []byte) int {
	rest, ok := strings.CutPrefix(string(payload), id+"#")
	if !ok {
		return 0
	}
	n, _, _ := strings.Cut(rest, "#")
	seq, err := strconv.Atoi(n)
	if err != nil || seq < 1 || string(payload) != soakPayload(id, seq) {
		return 0
	}
	return seq
}

// allBack reports whether every message from first on was acknowledged and delivered.
func (d *soakDevice) allBack(first int) bool {
	for _, m := range d.msgs[first:] {
		if m.acked.IsZero() || m.delivered.IsZero() {
			return false
		}
	}
	return true
}

// run is the device's life until run.stop: sessions of a few messages each, and between
// them a short pause, or after a failure an exponential backoff with jitter.
func (d *soakDevice) run(run *soakRun) {
	backoff := soakBackoffMin
	for !stopping(run.stop) {
		wait := jitter(d.rng, 300*time.Millisecond)
		if d.session(run, 5+d.rng.IntN(21), soakInterval) {
			backoff = soakBackoffMin
		} else {
			wait = jitter(d.rng, backoff)
			backoff = min(2*backoff, soakBackoffMax)
		}
		if !pause(run.stop, wait) {
			return
		}
	}
}

// jitter is d ± 50%.
func jitter(rng *mrand.Rand, d time.Duration) time.Duration {
	return d/2 + time.Duration(rng.Int64N(int64(d)))
}

// dial connects and runs the handshake, and returns the conn MQTT goes over (for DTLS a
// datagram.Conn) and, for mTLS, the server certificate's serial.
func (d *soakDevice) dial() (net.Conn, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), soakHandshakeTimeout)
	defer cancel()
	switch d.kind {
	case soakMTLS, soakPSK:
		raw, err := (&net.Dialer{}).DialContext(ctx, "tcp", d.addr)
		if err != nil {
			return nil, "", err
		}
		if d.kind == soakPSK {
			conn := tlspsk.Client(raw, d.psk)
			if err := conn.HandshakeContext(ctx); err != nil {
				raw.Close()
				return nil, "", err
			}
			return conn, "", nil
		}
		conn := tls.Client(raw, d.tls)
		if err := conn.HandshakeContext(ctx); err != nil {
			raw.Close()
			return nil, "", err
		}
		return conn, conn.ConnectionState().PeerCertificates[0].SerialNumber.Text(16), nil
	default:
		pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			return nil, "", err
		}
		raddr, err := net.ResolveUDPAddr("udp", d.addr)
		if err != nil {
			pc.Close()
			return nil, "", err
		}
		conn, err := dtls.ClientWithOptions(pc, raddr, d.dtls...)
		if err != nil {
			pc.Close()
			return nil, "", err
		}
		if err := conn.HandshakeContext(ctx); err != nil {
			conn.Close()
			pc.Close()
			return nil, "", err
		}
		return datagram.New(conn, datagram.Options{}), "", nil
	}
}

// credentialRefused reports whether a session failed because the server refused the
// device's valid certificate or key, which no fault of the soak may cause.
func credentialRefused(err error) bool {
	var pe *tlspsk.Error
	if errors.As(err, &pe) {
		return pe.Remote && (pe.Reason == tlspsk.ReasonUnknownPSKIdentity || pe.Reason == tlspsk.ReasonDecryptError)
	}
	var ve *tls.CertificateVerificationError
	if errors.As(err, &ve) {
		return true
	}
	msg := err.Error()
	for _, alert := range []string{"bad certificate", "unknown certificate authority", "certificate required",
		"revoked certificate", "expired certificate", "unknown certificate", "access denied"} {
		if strings.Contains(msg, "remote error: tls: "+alert) {
			return true
		}
	}
	return false
}

// session runs one session of up to n messages, interval apart (jittered): handshake,
// CONNECT, SUBSCRIBE to its own topic at QoS 1, then each message published at QoS 1 and
// waited for twice, its PUBACK and its delivery, then DISCONNECT. It returns whether the
// session got as far as its SUBACK.
func (d *soakDevice) session(run *soakRun, n int, interval time.Duration) bool {
	mc, s := d.open(d.topic())
	if mc == nil {
		return false
	}
	defer mc.conn.Close()
	pid := uint16(1) // the SUBSCRIBE's
	for i := range n {
		if i > 0 && !pause(run.stop, jitter(d.rng, interval)) || stopping(run.stop) {
			break
		}
		if pid++; pid == 0 {
			pid = 1
		}
		if by, err := d.exchange(run, mc, pid); by != "" {
			return d.finish(s, by, err)
		}
	}
	_ = mc.write([]byte{0xe0, 0x00}) // DISCONNECT
	return d.finish(s, "clean", nil)
}

// open starts a session: a new session record, the handshake, CONNECT and CONNACK,
// SUBSCRIBE to filter at QoS 1 and its SUBACK (sent again over the lossy path when it
// does not come). It returns the MQTT stream and the record, or a nil stream when the
// session ended on the way (recorded).
func (d *soakDevice) open(filter string) (*soakMQTT, *soakSession) {
	idx := len(d.sessions)
	d.sessions = append(d.sessions, soakSession{clientID: fmt.Sprintf("%s/%ss%d", d.id, d.label, idx+1), start: time.Now()})
	s := &d.sessions[idx]
	conn, serial, err := d.dial()
	if err != nil {
		d.handshakeFails++
		if d.handshakeErr == "" {
			d.handshakeErr = err.Error()
		}
		d.finish(s, "handshake", err)
		return nil, s
	}
	s.hsDone, s.serial = time.Now(), serial
	lossy := d.kind == soakDTLSLossy
	mc := newSoakMQTT(conn, d.kind == soakDTLS || lossy)
	fail := func(by string, err error) (*soakMQTT, *soakSession) {
		conn.Close()
		d.finish(s, by, err)
		return nil, s
	}

	if err := mc.write(connectPacket(4, s.clientID)); err != nil {
		return fail("error", err)
	}
	wait := soakReplyTimeout
	if lossy {
		wait = soakLossyReply
	}
	typ, body, err := mc.read(time.Now().Add(wait))
	switch {
	case err != nil:
		return fail("error", err)
	case typ != 0x20 || len(body) != 2:
		d.protocolErrs = append(d.protocolErrs, fmt.Sprintf("%s: got %#x % x, want a CONNACK", s.clientID, typ, body))
		return fail("protocol", nil)
	case body[1] != 0:
		d.refused[body[1]]++
		return fail("refused", fmt.Errorf("CONNACK return code %#x", body[1]))
	}

	sub := subscribePacket(1, filter)
	if err := mc.write(sub); err != nil {
		return fail("error", err)
	}
	final := time.Now().Add(soakReplyTimeout)
	for {
		deadline := final
		if lossy {
			if next := time.Now().Add(soakResendEvery); next.Before(final) {
				deadline = next
			}
		}
		typ, body, err := mc.read(deadline)
		if err != nil {
			if lossy && isTimeout(err) && time.Now().Before(final) {
				if err := mc.write(sub); err != nil { // the SUBSCRIBE or its SUBACK was lost: again
					return fail("error", err)
				}
				d.resends++
				continue
			}
			return fail("error", err)
		}
		if typ != 0x90 || len(body) != 3 || body[0] != 0 || body[1] != 1 || body[2] != 1 {
			d.protocolErrs = append(d.protocolErrs, fmt.Sprintf("%s: got %#x % x, want a SUBACK granting QoS 1", s.clientID, typ, body))
			return fail("protocol", nil)
		}
		s.up = time.Now()
		return mc, s
	}
}

// finish records how session s ended and returns whether it had got up. An error that is
// a timeout ends it by "timeout".
func (d *soakDevice) finish(s *soakSession, by string, err error) bool {
	if by == "error" && isTimeout(err) {
		by = "timeout"
	}
	s.end, s.endBy = time.Now(), by
	if err != nil {
		s.err = err.Error()
		if credentialRefused(err) {
			d.credRefused = append(d.credRefused, fmt.Sprintf("%s at %s: %v", s.clientID, s.end.Format(time.TimeOnly), err))
		}
	}
	return !s.up.IsZero()
}

// soakWatcher subscribes to every message of one bucket of devices, soak/<bucket>/#,
// through mqtls like a device (mutual TLS or TLS-PSK). Unlike a device's own
// subscription, its deliveries travel on another connection than the publisher's PUBACK:
// a broker killed between the two takes messages with it that the publisher saw
// acknowledged.
type soakWatcher struct {
	dev    *soakDevice         // how it connects, and its sessions
	got    map[string][]uint64 // device id → bit set of the messages delivered
	n      int                 // deliveries, duplicates included
	last   atomic.Int64        // Unix nanoseconds of the last delivery
	up     chan struct{}       // closed at its first SUBACK
	upOnce sync.Once
}

func (w *soakWatcher) has(id string, seq int) bool {
	b := w.got[id]
	return seq/64 < len(b) && b[seq/64]&(1<<(seq%64)) != 0
}

func (w *soakWatcher) filter() string { return fmt.Sprintf("soak/%d/#", w.dev.bucket) }

// run keeps a session open until stop, reconnecting with backoff.
func (w *soakWatcher) run(stop <-chan struct{}) {
	backoff := soakBackoffMin
	for !stopping(stop) {
		wait := jitter(w.dev.rng, 300*time.Millisecond)
		if w.session(stop) {
			backoff = soakBackoffMin
		} else {
			wait = jitter(w.dev.rng, backoff)
			backoff = min(2*backoff, soakBackoffMax)
		}
		if !pause(stop, wait) {
			return
		}
	}
}

// session receives and acknowledges deliveries until stop (then DISCONNECT) or until the
// session breaks. It sends PINGREQ when it has been quiet for a while, and gives up after
// soakMessageTimeout without a packet.
func (w *soakWatcher) session(stop <-chan struct{}) bool {
	d := w.dev
	mc, s := d.open(w.filter())
	if mc == nil {
		return false
	}
	defer mc.conn.Close()
	w.upOnce.Do(func() { close(w.up) })
	done := make(chan struct{})
	defer close(done)
	go func() { // stop interrupts the read below
		select {
		case <-stop:
			_ = mc.conn.SetReadDeadline(time.Unix(1, 0))
		case <-done:
		}
	}()
	lastRx, lastPing := time.Now(), time.Now()
	for {
		if stopping(stop) {
			_ = mc.write([]byte{0xe0, 0x00}) // DISCONNECT
			return d.finish(s, "clean", nil)
		}
		if time.Since(lastPing) >= 15*time.Second {
			if err := mc.write([]byte{0xc0, 0x00}); err != nil { // PINGREQ
				return d.finish(s, "error", err)
			}
			lastPing = time.Now()
		}
		typ, body, err := mc.read(lastPing.Add(15 * time.Second))
		now := time.Now()
		if err != nil {
			if isTimeout(err) && (stopping(stop) || now.Sub(lastRx) < soakMessageTimeout) {
				continue
			}
			return d.finish(s, "error", err)
		}
		lastRx = now
		switch typ >> 4 {
		case 3:
			topic, id, qos, payload, err := parsePublish(typ, body)
			if err != nil {
				d.corrupt = append(d.corrupt, fmt.Sprintf("%s: %v", s.clientID, err))
				return d.finish(s, "protocol", err)
			}
			if qos == 1 {
				if err := mc.write(pubackPacket(id)); err != nil {
					return d.finish(s, "error", err)
				}
			}
			dev := topic[strings.LastIndexByte(topic, '/')+1:]
			seq := soakSeq(dev, payload)
			if seq == 0 || topic != fmt.Sprintf("soak/%d/%s", d.bucket, dev) {
				d.corrupt = append(d.corrupt, fmt.Sprintf("%s: %q on %q", s.clientID, payload[:min(len(payload), 64)], topic))
				continue
			}
			b := w.got[dev]
			for len(b) <= seq/64 {
				b = append(b, 0)
			}
			b[seq/64] |= 1 << (seq % 64)
			w.got[dev] = b
			w.n++
			w.last.Store(now.UnixNano())
		case 13: // PINGRESP
		default:
			d.protocolErrs = append(d.protocolErrs, fmt.Sprintf("%s: got packet %#x % x", s.clientID, typ, body))
			return d.finish(s, "protocol", nil)
		}
	}
}

// exchange publishes the next message with packet identifier pid and waits for its
// PUBACK and its delivery (the device is subscribed to its own topic), answering
// deliveries with PUBACK. Over the lossy path a PUBLISH not acknowledged in
// soakResendEvery is sent again with DUP set. It returns "" when both came, or how the
// wait ended: error, timeout or protocol.
func (d *soakDevice) exchange(run *soakRun, mc *soakMQTT, pid uint16) (string, error) {
	seq := len(d.msgs) + 1
	d.msgs = append(d.msgs, soakMsg{session: len(d.sessions) - 1, sent: time.Now()})
	m := &d.msgs[seq-1]
	lossy := d.kind == soakDTLSLossy
	pkt := qos1Publish(d.topic(), d.payload(seq), pid)
	end := func(how string, err error) (string, error) {
		m.waitEnd = how
		if how == "timeout" {
			d.timeouts++
		}
		return how, err
	}
	if err := mc.write(pkt); err != nil {
		return end("error", err)
	}
	final := m.sent.Add(soakMessageTimeout)
	resend := m.sent.Add(soakResendEvery)
	for m.acked.IsZero() || m.delivered.IsZero() {
		deadline := final
		if lossy && m.acked.IsZero() && resend.Before(final) {
			deadline = resend
		}
		typ, body, err := mc.read(deadline)
		now := time.Now()
		if err != nil {
			switch {
			case lossy && isTimeout(err) && now.Before(final):
				dup := slices.Clone(pkt)
				dup[0] |= 0x08 // DUP [MQTT-3.3.1-1]
				if err := mc.write(dup); err != nil {
					return end("error", err)
				}
				d.resends++
				resend = now.Add(soakResendEvery)
				continue
			case isTimeout(err):
				return end("timeout", err)
			}
			return end("error", err)
		}
		switch typ >> 4 {
		case 3: // PUBLISH: a delivery
			if err := d.deliver(mc, typ, body, now); err != nil {
				return end("error", err)
			}
		case 4: // PUBACK
			if len(body) == 2 && uint16(body[0])<<8|uint16(body[1]) == pid && m.acked.IsZero() {
				m.acked = now
				run.acked.Add(1)
			}
		case 9, 13: // a SUBACK for a SUBSCRIBE sent again; PINGRESP
		default:
			d.protocolErrs = append(d.protocolErrs, fmt.Sprintf("%s: got packet %#x % x while waiting for message %d", d.sessions[len(d.sessions)-1].clientID, typ, body, seq))
			return end("protocol", fmt.Errorf("unexpected packet %#x", typ))
		}
	}
	return "", nil
}

// deliver records a PUBLISH from the broker and acknowledges it. Anything but a message
// this device published is recorded as corrupt.
func (d *soakDevice) deliver(mc *soakMQTT, first byte, body []byte, now time.Time) error {
	topic, id, qos, payload, err := parsePublish(first, body)
	if err != nil {
		d.corrupt = append(d.corrupt, fmt.Sprintf("%s: %v: % x", d.id, err, body[:min(len(body), 64)]))
		return err
	}
	if qos == 1 {
		if err := mc.write(pubackPacket(id)); err != nil {
			return err
		}
	}
	seq := 0
	if topic == d.topic() {
		if seq = soakSeq(d.name(), payload); seq > len(d.msgs) {
			seq = 0
		}
	}
	if seq == 0 {
		d.corrupt = append(d.corrupt, fmt.Sprintf("%s: %q on %q", d.id, payload[:min(len(payload), 64)], topic))
		return nil
	}
	if m := &d.msgs[seq-1]; m.delivered.IsZero() {
		m.delivered = now
	} else {
		d.dupDeliveries++
	}
	return nil
}

// The accounting.

type soakTally struct {
	kinds                                    string
	sent, acked, delivered, unacked          int
	lostByBroker, lostByMqtls, dupDeliveries int
	// At the watchers: acknowledged messages they were subscribed for when the message was
	// sent, how many of those they got, and how many the broker's kill took.
	watchable, watched, watchLostByBroker    int
	watchDeliveries                          int // duplicates included
	resends, timeouts                        int
	attempts, up, reconnects, handshakeFails int
	refused                                  map[byte]int
	// handshake failures by kind, with the first error of each
	handshakes map[soakKind]int
	firstHSErr map[soakKind]string
}

// What "in flight at the kill" means: a message acknowledged longer than this before the
// broker was killed must have reached its subscriber. A device's own delivery travels on
// the session that carries the PUBACK, right next to it; a watcher's on another session,
// which may lag a little behind.
const (
	soakInflightSelf    = 2 * time.Second
	soakInflightWatcher = 5 * time.Second
)

// account checks every device's and watcher's record against the broker's log and the
// fault events, fails the test for every message lost by mqtls and every other broken
// promise, and returns the totals.
//
// A message the publisher saw acknowledged (PUBACK) must reach both its subscribers: the
// device itself (subscribed to its own topic on the same session) and the watcher of its
// bucket (when the watcher had its SUBACK on the same broker generation before the
// message was sent: then the broker handled the SUBSCRIBE before the PUBLISH). The only
// excuse is the broker's SIGKILL with persistence off, and only for messages in flight at
// the kill: on a session of the killed generation that broke at or after the kill, the
// message acknowledged at most soakInflightSelf (soakInflightWatcher) before it. All else
// is lost by mqtls.
func (s *soakTest) account() soakTally {
	t := s.t
	t.Helper()
	tl := soakTally{refused: map[byte]int{}, handshakes: map[soakKind]int{}, firstHSErr: map[soakKind]string{}}
	kinds := map[soakKind]int{}
	finalGen := s.broker.generation()
	var lost, broken []string
	report := func(list *[]string, format string, args ...any) {
		if len(*list) < 20 {
			*list = append(*list, fmt.Sprintf(format, args...))
		} else if len(*list) == 20 {
			*list = append(*list, "...")
		}
	}

	// Sessions, of watchers and devices alike.
	clients := make([]*soakDevice, 0, len(s.watchers)+len(s.devices))
	for _, w := range s.watchers {
		clients = append(clients, w.dev)
	}
	clients = append(clients, s.devices...)
	for ci, d := range clients {
		watcher := ci < len(s.watchers)
		role := d.kind.String()
		if watcher {
			tl.watchDeliveries += s.watchers[ci].n
			role = "watcher " + role
		} else {
			kinds[d.kind]++
		}
		tl.handshakeFails += d.handshakeFails
		tl.handshakes[d.kind] += d.handshakeFails
		if d.handshakeErr != "" && tl.firstHSErr[d.kind] == "" {
			tl.firstHSErr[d.kind] = d.handshakeErr
		}
		for code, n := range d.refused {
			tl.refused[code] += n
			if code != 0x03 { // server unavailable: the broker is down, or its backlog full
				report(&broken, "%s %s: CONNACK %#x %d time(s), want only 0 or 0x03", role, d.id, code, n)
			}
		}
		for _, c := range d.credRefused {
			report(&broken, "%s %s: valid credentials refused: %s", role, d.id, c)
		}
		for _, c := range d.corrupt {
			report(&broken, "%s %s: a delivery that is no message published: %s", role, d.id, c)
		}
		for _, c := range d.protocolErrs {
			report(&broken, "%s %s: %s", role, d.id, c)
		}
		failedBefore, onFinal := false, false
		for i := range d.sessions {
			ss := &d.sessions[i]
			tl.attempts++
			if ss.up.IsZero() {
				failedBefore = true
				continue
			}
			tl.up++
			if failedBefore {
				tl.reconnects++
			}
			failedBefore = ss.endBy != "clean"
			gen, ok := s.broker.genOf(ss.clientID)
			if !ok {
				report(&broken, "%s %s: session %s got its SUBACK, but no broker logged the client", role, d.id, ss.clientID)
				continue
			}
			ss.gen = gen
			onFinal = onFinal || gen == finalGen
			killedAt, killed := s.broker.killTime(gen)
			switch {
			case ss.endBy == "error" && !(killed && !ss.end.Before(killedAt)):
				report(&broken, "%s %s: session %s (broker generation %d) broke at %s, with no broker kill to explain it: %s",
					role, d.id, ss.clientID, gen, ss.end.Format(time.StampMilli), ss.err)
			case ss.endBy == "timeout" && watcher:
				report(&broken, "%s %s: session %s (broker generation %d) received nothing for %v: %s",
					role, d.id, ss.clientID, gen, soakMessageTimeout, ss.err)
			}
			if d.kind == soakMTLS {
				s.checkServerCert(d, ss, &broken, report)
			}
		}
		if watcher && !onFinal {
			report(&broken, "%s %s: not back on the last broker generation (%d)", role, d.id, finalGen)
		}
	}

	// Messages.
	for _, d := range s.devices {
		tl.dupDeliveries += d.dupDeliveries
		tl.resends += d.resends
		tl.timeouts += d.timeouts
		var w *soakWatcher
		if len(s.watchers) > 0 {
			w = s.watchers[d.bucket]
		}
		backOnFinal := false
		for i, m := range d.msgs {
			tl.sent++
			acked, delivered := !m.acked.IsZero(), !m.delivered.IsZero()
			if acked {
				tl.acked++
			} else {
				tl.unacked++
			}
			if delivered {
				tl.delivered++
			}
			ss := d.sessions[m.session]
			if acked && delivered && ss.gen == finalGen {
				backOnFinal = true
			}
			if !acked {
				continue
			}
			killedAt, killed := s.broker.killTime(ss.gen)
			name := clip(d.payload(i+1), len(d.name())+8)
			if !delivered {
				// The device's own delivery comes on the session that got the PUBACK: only
				// that session breaking at the kill while the device waited for a message
				// acknowledged just before it excuses it.
				if killed && m.waitEnd == "error" && !ss.end.Before(killedAt) && !m.acked.Before(killedAt.Add(-soakInflightSelf)) {
					tl.lostByBroker++
				} else {
					tl.lostByMqtls++
					report(&lost, "%s %s message %q: sent %s on %s (broker generation %d), PUBACK after %v, never delivered to the device; wait ended by %q, session ended by %s at %s: %s",
						d.kind, d.id, name, m.sent.Format(time.StampMilli), ss.clientID, ss.gen,
						m.acked.Sub(m.sent).Round(time.Millisecond), m.waitEnd, ss.endBy, ss.end.Format(time.StampMilli), ss.err)
				}
			}
			if w == nil {
				continue
			}
			var cover *soakSession
			for j := range w.dev.sessions {
				ws := &w.dev.sessions[j]
				if !ws.up.IsZero() && ws.gen == ss.gen && ws.up.Before(m.sent) && m.sent.Before(ws.end) {
					cover = ws
					break
				}
			}
			if cover == nil {
				continue // the watcher was not subscribed on that generation when it was sent
			}
			tl.watchable++
			if w.has(d.name(), i+1) {
				tl.watched++
				continue
			}
			if killed && cover.endBy == "error" && !cover.end.Before(killedAt) && !m.acked.Before(killedAt.Add(-soakInflightWatcher)) {
				tl.watchLostByBroker++
				continue
			}
			tl.lostByMqtls++
			report(&lost, "%s %s message %q: sent %s on %s (broker generation %d), PUBACK after %v, never delivered to watcher %s, subscribed as %s from %s to %s (ended by %s: %s)",
				d.kind, d.id, name, m.sent.Format(time.StampMilli), ss.clientID, ss.gen, m.acked.Sub(m.sent).Round(time.Millisecond),
				w.dev.id, cover.clientID, cover.up.Format(time.StampMilli), cover.end.Format(time.StampMilli), cover.endBy, cover.err)
		}
		if !backOnFinal {
			last := d.sessions[len(d.sessions)-1]
			report(&broken, "%s %s: no message went through on the last broker generation (%d): %d sessions, the last ended by %s: %s",
				d.kind, d.id, finalGen, len(d.sessions), last.endBy, last.err)
		}
		if !d.added.IsZero() {
			joined := false
			for _, ss := range d.sessions {
				if !ss.up.IsZero() && ss.up.Sub(d.added) <= soakJoinWithin {
					joined = true
					break
				}
			}
			if !joined {
				report(&broken, "%s %s: added by a rotation, but not in within %v", d.kind, d.id, soakJoinWithin)
			}
		}
	}
	var parts []string
	for k := soakMTLS; k <= soakDTLSLossy; k++ {
		parts = append(parts, fmt.Sprintf("%d %s", kinds[k], k))
	}
	tl.kinds = strings.Join(parts, ", ")
	for _, k := range s.kills {
		if !k.sawDevicesRefused {
			report(&broken, "broker kill at %s: mqtls answered only %v CONNECTs with server unavailable while it was down", k.at.Format(time.StampMilli), k.refusedWhileDown)
		}
	}
	if tl.acked == 0 || tl.delivered == 0 || tl.watched == 0 {
		report(&broken, "no message went through at all")
	}
	if len(lost) > 0 {
		t.Errorf("%d acknowledged message(s) not delivered with no broker kill to explain it (lost by mqtls):\n%s", tl.lostByMqtls, strings.Join(lost, "\n"))
	}
	if len(broken) > 0 {
		t.Errorf("the soak broke promises:\n%s", strings.Join(broken, "\n"))
	}
	return tl
}

// checkServerCert checks that an mTLS session saw the server certificate of its time: a
// handshake begun after a rotation's "reloaded" line gets the new certificate, one done
// before the swap the old one.
func (s *soakTest) checkServerCert(d *soakDevice, ss *soakSession, broken *[]string, report func(*[]string, string, ...any)) {
	v, ok := s.rotations[ss.serial]
	if !ok {
		report(broken, "mtls %s: session %s saw a server certificate (serial %s) of no version", d.id, ss.clientID, ss.serial)
		return
	}
	for _, r := range s.rotationEvents {
		switch {
		case ss.start.After(r.certReloaded) && v < r.version:
			report(broken, "mtls %s: session %s began %v after rotation %d was reloaded, but saw version %d",
				d.id, ss.clientID, ss.start.Sub(r.certReloaded).Round(time.Millisecond), r.version, v)
		case ss.hsDone.Before(r.swapped) && v >= r.version:
			report(broken, "mtls %s: session %s was done before rotation %d, but saw its certificate", d.id, ss.clientID, r.version)
		}
	}
}

// clip returns s cut to at most n bytes.
func clip(s string, n int) string { return s[:min(len(s), n)] }

func sortedCounts(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "\n  %s: %d", strings.TrimSpace(k), m[k])
	}
	return b.String()
}
