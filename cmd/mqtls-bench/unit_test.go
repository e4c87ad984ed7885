package main

import (
	"bufio"
	"bytes"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	ms := func(ns ...int) []time.Duration {
		var out []time.Duration
		for _, n := range ns {
			out = append(out, time.Duration(n)*time.Millisecond)
		}
		return out
	}
	hundred := make([]time.Duration, 100)
	for i := range hundred {
		hundred[i] = time.Duration(i+1) * time.Millisecond
	}
	for _, tc := range []struct {
		name   string
		sorted []time.Duration
		p      float64
		want   time.Duration
	}{
		{"empty", nil, 50, 0},
		{"one value is every percentile", ms(7), 99, 7 * time.Millisecond},
		{"p50 of 1..100 is 50 (nearest rank)", hundred, 50, 50 * time.Millisecond},
		{"p99 of 1..100 is 99", hundred, 99, 99 * time.Millisecond},
		{"p99.9 of 1..100 rounds up to the max", hundred, 99.9, 100 * time.Millisecond},
		{"p100 is the max", hundred, 100, 100 * time.Millisecond},
		{"p0 clamps to the min", hundred, 0, time.Millisecond},
		{"p50 of four is the second", ms(1, 2, 3, 4), 50, 2 * time.Millisecond},
		{"p51 of four is the third", ms(1, 2, 3, 4), 51, 3 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := percentile(tc.sorted, tc.p); got != tc.want {
				t.Errorf("percentile(%v) = %v, want %v", tc.p, got, tc.want)
			}
		})
	}
}

func TestSummarize(t *testing.T) {
	ds := []time.Duration{300 * time.Microsecond, 100 * time.Microsecond, 200 * time.Microsecond, 1400 * time.Microsecond}
	got := summarize(ds)
	want := Latency{N: 4, Min: 100, P50: 200, P90: 1400, P99: 1400, P999: 1400, Max: 1400, Mean: 500}
	if got != want {
		t.Errorf("summarize = %+v, want %+v", got, want)
	}
	if ds[0] != 100*time.Microsecond {
		t.Error("summarize did not sort its input")
	}
	if (summarize(nil) != Latency{}) {
		t.Error("summarize(nil) is not zero")
	}
}

func TestMedian(t *testing.T) {
	if !math.IsNaN(median(nil)) {
		t.Error("median of nothing is not NaN")
	}
	xs := []float64{3, 1, 2}
	if got := median(xs); got != 2 {
		t.Errorf("median odd = %v", got)
	}
	if xs[0] != 3 {
		t.Error("median modified its input")
	}
	if got := median([]float64{4, 1, 3, 2}); got != 2.5 {
		t.Errorf("median even = %v", got)
	}
}

func TestParseStatCPU(t *testing.T) {
	for _, tc := range []struct {
		name string
		stat string
		want time.Duration
		bad  bool
	}{
		{
			name: "ordinary",
			// pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime cutime ...
			stat: "1234 (mqtls) S 1 1234 1234 0 -1 4194560 5000 0 0 0 250 130 7 9 20 0 8 0 100 0 0",
			want: 3800 * time.Millisecond,
		},
		{
			name: "command name with spaces and parentheses",
			stat: "77 (a) b (c d)) R 1 77 77 0 -1 0 0 0 0 0 1 2 0 0 20 0 1 0 5 0 0",
			want: 30 * time.Millisecond,
		},
		{name: "no command name", stat: "1234 mqtls S 1", bad: true},
		{name: "too few fields", stat: "1 (x) S 1 2 3 4 5 6 7 8 9 10", bad: true},
		{name: "utime not a number", stat: "1 (x) S 1 1 1 0 -1 0 0 0 0 0 x 2 0 0", bad: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseStatCPU([]byte(tc.stat))
			if tc.bad {
				if err == nil {
					t.Fatalf("parsed %q as %v, want an error", tc.stat, got)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("parseStatCPU = %v, %v; want %v", got, err, tc.want)
			}
		})
	}
}

const statusFixture = `Name:	mqtls
Umask:	0022
State:	S (sleeping)
VmPeak:	 1256788 kB
VmRSS:	   23456 kB
RssAnon:	   15000 kB
Threads:	7
`

const smapsRollupFixture = `55d0c0a00000-7ffd1b1f2000 ---p 00000000 00:00 0                          [rollup]
Rss:               23456 kB
Pss:               21000 kB
Pss_Anon:          15000 kB
Pss_File:           6000 kB
Shared_Clean:       3000 kB
`

func TestParseKiB(t *testing.T) {
	for _, tc := range []struct {
		data, name string
		want       int64
		bad        bool
	}{
		{statusFixture, "VmRSS", 23456, false},
		{smapsRollupFixture, "Pss", 21000, false}, // not Pss_Anon
		{smapsRollupFixture, "Pss_File", 6000, false},
		{statusFixture, "VmSwap", 0, true},
		{"VmRSS:\t12 MB\n", "VmRSS", 0, true},
	} {
		got, err := parseKiB([]byte(tc.data), tc.name)
		if tc.bad != (err != nil) || got != tc.want {
			t.Errorf("parseKiB(%s) = %v, %v; want %v (error: %v)", tc.name, got, err, tc.want, tc.bad)
		}
	}
}

// TestProcFiles reads CPU and memory from a fixture /proc tree, summing two processes as
// for nginx's master and worker.
func TestProcFiles(t *testing.T) {
	root := t.TempDir()
	write := func(pid, name, data string) {
		dir := filepath.Join(root, pid)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, pid := range []string{"10", "11"} {
		write(pid, "stat", pid+" (nginx) S 1 10 10 0 -1 0 0 0 0 0 100 50 0 0 20 0 1 0 5 0 0")
		write(pid, "status", statusFixture)
		write(pid, "smaps_rollup", smapsRollupFixture)
	}
	old := procRoot
	procRoot = root
	t.Cleanup(func() { procRoot = old })

	tg := target{10, 11}
	cpu, err := tg.cpu()
	if err != nil || cpu != 3*time.Second {
		t.Errorf("cpu = %v, %v; want 3s", cpu, err)
	}
	m, err := tg.memory()
	if err != nil || m != (Memory{RSS: 2 * 23456, PSS: 2 * 21000}) {
		t.Errorf("memory = %+v, %v", m, err)
	}
	if _, err := (target{12}).cpu(); err == nil {
		t.Error("no error for a missing process")
	}
}

func TestProcSelf(t *testing.T) {
	m, err := memory(os.Getpid())
	if err != nil || m.RSS <= 0 || m.PSS <= 0 {
		t.Fatalf("memory(self) = %+v, %v", m, err)
	}
	if _, err := cpuTime(os.Getpid()); err != nil {
		t.Fatal(err)
	}
}

func TestParseSources(t *testing.T) {
	s, err := parseSources("127.0.0.2-127.0.0.254")
	if err != nil || len(s.ips) != 253 {
		t.Fatalf("range: %v, %v", s, err)
	}
	if got := []string{s.pick().String(), s.pick().String()}; got[0] != "127.0.0.2" || got[1] != "127.0.0.3" {
		t.Errorf("first picks %v", got)
	}
	for range 251 {
		s.pick()
	}
	if got := s.pick().String(); got != "127.0.0.2" {
		t.Errorf("after a full round, pick = %s, want 127.0.0.2 again", got)
	}
	if s, err := parseSources("127.0.0.9"); err != nil || len(s.ips) != 1 {
		t.Errorf("one address: %v, %v", s, err)
	}
	if s, err := parseSources("none"); err != nil || s != nil || s.pick() != nil {
		t.Errorf("none: %v, %v", s, err)
	}
	for _, bad := range []string{"127.0.0.9-127.0.0.2", "::1", "localhost", "127.0.0.1-x"} {
		if _, err := parseSources(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestPackets(t *testing.T) {
	// CONNECT, MQTT 3.1.1 [MQTT-3.1]: fixed header, "MQTT", level 4, clean session, keep-alive, client ID.
	want := []byte{0x10, 15, 0, 4, 'M', 'Q', 'T', 'T', 4, 0x02, 0, 60, 0, 3, 'd', 'e', 'v'}
	if got := connectPacket("dev", 60); !bytes.Equal(got, want) {
		t.Errorf("CONNECT % x, want % x", got, want)
	}
	// PUBLISH QoS 1: flags 0010, topic "t", packet ID 0x0102, payload "hi" [MQTT-3.3].
	pub := appendPublish(nil, "t", 1, 0x0102, []byte("hi"))
	if want := []byte{0x32, 7, 0, 1, 't', 1, 2, 'h', 'i'}; !bytes.Equal(pub, want) {
		t.Errorf("PUBLISH % x, want % x", pub, want)
	}
	// SUBSCRIBE: flags 0010 [MQTT-3.8.1-1], ID, filter, requested QoS.
	if got, want := subscribePacket(1, "a/#", 1), []byte{0x82, 8, 0, 1, 0, 3, 'a', '/', '#', 1}; !bytes.Equal(got, want) {
		t.Errorf("SUBSCRIBE % x, want % x", got, want)
	}
	// Remaining length of 321 takes two bytes: 0xC1 0x02 [MQTT-2.2.3].
	if got := appendVarint(nil, 321); !bytes.Equal(got, []byte{0xC1, 0x02}) {
		t.Errorf("varint 321 = % x", got)
	}
	big := appendPublish(nil, "topic", 0, 0, make([]byte, 200000))
	stream := append(append(append([]byte{}, pub...), big...), pingresp...)
	r := bufio.NewReader(bytes.NewReader(stream))
	h, body, err := readPacket(r, nil)
	if err != nil || h != 0x32 {
		t.Fatalf("first packet %#x, %v", h, err)
	}
	if qos, id, err := publishInfo(h, body); err != nil || qos != 1 || id != 0x0102 {
		t.Errorf("publishInfo = %d, %#x, %v", qos, id, err)
	}
	h, body, err = readPacket(r, body)
	if err != nil || h != 0x30 || len(body) != 2+5+200000 {
		t.Fatalf("big packet %#x, %d bytes, %v", h, len(body), err)
	}
	if qos, _, err := publishInfo(h, body); err != nil || qos != 0 {
		t.Errorf("publishInfo QoS 0: %d, %v", qos, err)
	}
	if h, _, err := readPacket(r, nil); err != nil || h != typePingresp {
		t.Fatalf("third packet %#x, %v", h, err)
	}
	for name, in := range map[string][]byte{
		"truncated body":   {0x30, 5, 0, 1},
		"five-byte length": {0x30, 0xff, 0xff, 0xff, 0xff, 0x01},
		"over the cap":     append([]byte{0x30}, appendVarint(nil, maxPacket+1)...),
		"connack refused":  {0x20, 2, 0, 5},
		"not a connack":    {0xD0, 0},
		"truncated header": {0x30},
	} {
		if err := expectConnack(bufio.NewReader(bytes.NewReader(in))); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if err := expectConnack(bufio.NewReader(bytes.NewReader(connackOK))); err != nil {
		t.Errorf("CONNACK accepted: %v", err)
	}
	if _, _, err := publishInfo(0x32, []byte{0, 5, 'a'}); err == nil {
		t.Error("publishInfo accepted a topic longer than the packet")
	}
}

func TestReport(t *testing.T) {
	lines := strings.Join([]string{
		`{"cmd":"meta","date":"2030-01-02","targets":["mqtls","stunnel","haproxy","mosquitto","direct"],"names":{"haproxy":"HAProxy"},"reps":2,"hold_small":1000,"hold_large":8000,"nproc":2,"cpu_model":"Test CPU","kernel":"6.0","note":"noisy"}`,
		`{"cmd":"conns","label":"mqtls","tag":"conns-mtls","per_s":1000,"target_cpu_us_per_conn":100,"failed":0}`,
		`{"cmd":"conns","label":"mqtls","tag":"conns-mtls","per_s":1200,"target_cpu_us_per_conn":120,"failed":0}`,
		`{"cmd":"conns","label":"stunnel","tag":"conns-mtls","per_s":900,"target_cpu_us_per_conn":200,"failed":0}`,
		`{"cmd":"conns","label":"haproxy","tag":"conns-mtls","per_s":1500,"target_cpu_us_per_conn":150,"failed":0}`,
		`{"cmd":"conns","label":"haproxy","tag":"conns-mtls","per_s":99999,"target_cpu_us_per_conn":1,"failed":3}`,
		`{"cmd":"conns","label":"mosquitto","tag":"conns-mtls","per_s":2000,"target_cpu_us_per_conn":300,"failed":0}`,
		`{"cmd":"conns","label":"mqtls","tag":"conns-resume","ok":3000,"resumed":2990,"per_s":4000,"target_cpu_us_per_conn":90,"failed":0}`,
		`{"cmd":"conns","label":"stunnel","tag":"conns-resume","ok":3000,"resumed":12,"per_s":600,"target_cpu_us_per_conn":1500,"failed":0}`,
		`{"cmd":"conns","label":"haproxy","tag":"conns-resume","ok":3000,"resumed":2999,"per_s":3000,"target_cpu_us_per_conn":180,"failed":0}`,
		`{"cmd":"ping","label":"direct","tag":"ping","rtt_us":{"p50":20,"p99":40}}`,
		`{"cmd":"ping","label":"mqtls","tag":"ping","rtt_us":{"p50":70,"p99":200}}`,
		`{"cmd":"ping","label":"mqtls","tag":"ping-busy","rtt_us":{"p50":60,"p99":150}}`,
		`{"cmd":"ping","label":"haproxy","tag":"ping-busy","rtt_us":{"p50":80,"p99":170}}`,
		`{"cmd":"pub","label":"mqtls","tag":"pub-qos0","ok":true,"target_cpu_us_per_msg":0.8}`,
		`{"cmd":"pub","label":"stunnel","tag":"pub-qos0","ok":false,"target_cpu_us_per_msg":0.1}`,
		`{"cmd":"conns","label":"mqtls","tag":"conns-psk","per_s":3000,"target_cpu_us_per_conn":50,"failed":0}`,
		`{"cmd":"conns","label":"stunnel","tag":"conns-psk","per_s":1000,"target_cpu_us_per_conn":200,"failed":0}`,
		`{"cmd":"conns","label":"mqtls","tag":"conns-psk13","per_s":2500,"target_cpu_us_per_conn":80,"failed":0}`,
		`{"cmd":"conns","label":"stunnel","tag":"conns-psk13","per_s":900,"target_cpu_us_per_conn":250,"failed":0}`,
	}, "\n")
	dir := t.TempDir()
	file := filepath.Join(dir, "r.jsonl")
	if err := os.WriteFile(file, []byte(lines), 0o644); err != nil {
		t.Fatal(err)
	}
	rs, err := readResults(file)
	if err != nil {
		t.Fatal(err)
	}
	md, err := buildReport(rs)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"| mqtls | 1,100 | 110 |",   // medians of two runs
		"| HAProxy | 1,500 | 150 |", // the run with failures does not count
		"| **mqtls ÷ best peer** | 0.55 (mosquitto) | 0.73 (HAProxy) |",
		"| **mqtls ÷ best proxy** | 0.73 (HAProxy) | 0.73 (HAProxy) |", // without the broker's own listener
		"| *mqtls, lowest–highest run* | 1,000–1,200 | 100–120 |",
		"| 50 | 160 |",         // ping added: 70-20, 200-40
		"p50 20 µs, p99 40 µs", // the direct baseline
		"| 0.80 | — |",         // stunnel's QoS 0 run lost messages: no value
		"RSS KiB/idle session @1,000",
		"| TLS-PSK sessions/s ≥ 2× stunnel's | 3,000 | 1,000 (stunnel) | yes |",
		"| TLS-PSK sessions/s per target core ≥ 2× stunnel's | 20,000 | 5,000 (stunnel) | yes |",
		"| TLS 1.3 PSK sessions/s per target core ≥ 2× stunnel's | 12,500 | 4,000 (stunnel) | yes |",
		"| 2,500 | 80 | 12,500 |", // mqtls's TLS 1.3 PSK columns
		"| mTLS CPU per session ≤ ⅔ of the best peer's (µs) | 110 | 150 (HAProxy) | no |",
		"| ping p50 added ≤ 80 µs (target on CPU 1) | 50.0 | — | yes |",
		"| ping p99 added ≤ 150 µs (target on CPU 1, busy polling) | 110 | 130 (HAProxy) | yes |",
		"| 50 | 160 | — | — | 40 | 110 |",             // mqtls's latency row, busy polling last
		"| mqtls | 4,000 | 90 |\n| stunnel | — | — |", // stunnel resumed too few to count
		"| **mqtls ÷ best peer** | 1.33 (HAProxy) | 0.50 (HAProxy) |",
		"> **Caveat.** noisy",
		"Test CPU",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
	if _, err := buildReport(rs[1:]); err == nil {
		t.Error("a report without a meta line")
	}
}

func TestCPUDelta(t *testing.T) {
	ms := time.Millisecond
	th := func(kv ...int) map[[2]int]time.Duration {
		m := map[[2]int]time.Duration{}
		for i := 0; i < len(kv); i += 2 {
			m[[2]int{1, kv[i]}] = time.Duration(kv[i+1]) * time.Microsecond
		}
		return m
	}
	for _, tc := range []struct {
		name       string
		stat0      time.Duration
		stat1      time.Duration
		th0, th1   map[[2]int]time.Duration
		want       time.Duration
		wantSource string
	}{
		{"threads agree with stat: nanoseconds", 100 * ms, 130 * ms, th(1, 100000, 2, 5000), th(1, 121500, 2, 5000, 3, 2000), 23500 * time.Microsecond, "schedstat"},
		{"a thread ended: stat", 100 * ms, 400 * ms, th(1, 100000, 2, 5000), th(1, 150000), 300 * ms, "stat"},
		{"no thread times: stat", 0, 50 * ms, nil, th(1, 1), 50 * ms, "stat"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, src := cpuDelta(tc.stat0, tc.stat1, tc.th0, tc.th1)
			if got != tc.want || src != tc.wantSource {
				t.Errorf("cpuDelta = %v (%s), want %v (%s)", got, src, tc.want, tc.wantSource)
			}
		})
	}
	if d, err := parseSchedstat([]byte("1489176220 4802612647 20458\n")); err != nil || d != 1489176220 {
		t.Errorf("parseSchedstat = %v, %v", d, err)
	}
	for _, bad := range []string{"", "x 1 2"} {
		if _, err := parseSchedstat([]byte(bad)); err == nil {
			t.Errorf("parseSchedstat(%q) accepted", bad)
		}
	}
}

func TestLoopbackOnly(t *testing.T) {
	for addr, ok := range map[string]bool{
		"127.0.0.1:8883":   true,
		"127.9.9.9:1":      true,
		"[::1]:8883":       true,
		"localhost:8883":   true,
		"10.0.0.1:8883":    false,
		"192.168.1.1:1883": false,
		"example.com:443":  false,
		":8883":            false,
		"127.0.0.1":        false,
	} {
		if err := loopbackOnly("--addr", addr); (err == nil) != ok {
			t.Errorf("loopbackOnly(%q) = %v, want allowed %v", addr, err, ok)
		}
	}
}
