package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strings"

	"github.com/urfave/cli/v2"
)

func reportCommand() *cli.Command {
	return &cli.Command{
		Name:      "report",
		Usage:     "turn result lines (with a meta line) into the markdown of BENCHMARKS.md: medians, ratios, goals",
		ArgsUsage: "RESULTS.jsonl...",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "out", Value: "-", Usage: "markdown `file` to write (- for stdout)"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() == 0 {
				return errors.New("report: name at least one results file")
			}
			var lines []map[string]any
			for _, f := range c.Args().Slice() {
				l, err := readResults(f)
				if err != nil {
					return err
				}
				lines = append(lines, l...)
			}
			md, err := buildReport(lines)
			if err != nil {
				return err
			}
			if c.String("out") == "-" {
				_, err = io.WriteString(c.App.Writer, md)
				return err
			}
			return os.WriteFile(c.String("out"), []byte(md), 0o644)
		},
	}
}

func readResults(file string) ([]map[string]any, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []map[string]any
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] != '{' {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			return nil, fmt.Errorf("%s:%d: %w", file, n, err)
		}
		out = append(out, m)
	}
	return out, sc.Err()
}

// field returns the number at a dotted path in m, if there is one.
func field(m map[string]any, path string) (float64, bool) {
	var v any = m
	for _, k := range strings.Split(path, ".") {
		mm, ok := v.(map[string]any)
		if !ok {
			return 0, false
		}
		v = mm[k]
	}
	f, ok := v.(float64)
	return f, ok
}

func str(m map[string]any, path string) string {
	var v any = m
	for _, k := range strings.Split(path, ".") {
		mm, ok := v.(map[string]any)
		if !ok {
			return ""
		}
		v = mm[k]
	}
	s, _ := v.(string)
	return s
}

// column is one measured quantity: the median over runs of path in the lines tagged tag.
type column struct {
	title    string
	tag      string
	path     string
	lower    bool // lower is better
	decimals int
	// minusDirect subtracts the "direct" target's median for directTag (latency added by
	// the front end).
	minusDirect bool
	directTag   string
}

// results indexes values by target, tag and path.
type results struct {
	lines []map[string]any
}

func (r results) values(label, tag, path string) []float64 {
	var out []float64
	for _, l := range r.lines {
		if str(l, "label") == label && str(l, "tag") == tag {
			if v, ok := field(l, path); ok {
				out = append(out, v)
			}
		}
	}
	return out
}

// okValues is values, except that a pub run that lost messages or a conns run with
// failures does not count.
func (r results) okValues(label, tag, path string) []float64 {
	var out []float64
	for _, l := range r.lines {
		if str(l, "label") != label || str(l, "tag") != tag {
			continue
		}
		if ok, present := l["ok"].(bool); present && !ok && str(l, "cmd") == "pub" {
			continue
		}
		if f, _ := field(l, "failed"); f > 0 {
			continue
		}
		// A --resume run in which the target resumed few sessions measured full handshakes.
		if res, present := field(l, "resumed"); present {
			if ok, _ := field(l, "ok"); res < 0.9*ok {
				continue
			}
		}
		if v, ok := field(l, path); ok {
			out = append(out, v)
		}
	}
	return out
}

func (r results) median(label string, c column) float64 {
	v := median(r.okValues(label, c.tag, c.path))
	if c.minusDirect && !math.IsNaN(v) {
		d := median(r.okValues("direct", c.directTag, c.path))
		if math.IsNaN(d) {
			return math.NaN()
		}
		v -= d
	}
	return v
}

// best returns the best peer's median for c (mqtls, the direct baseline and the targets in
// skip excluded), and which peer that is.
func (r results) best(targets []string, c column, skip ...string) (float64, string) {
	best, who := math.NaN(), ""
	for _, t := range targets {
		if t == "mqtls" || t == "direct" || slices.Contains(skip, t) {
			continue
		}
		v := r.median(t, c)
		if math.IsNaN(v) {
			continue
		}
		if math.IsNaN(best) || (c.lower && v < best) || (!c.lower && v > best) {
			best, who = v, t
		}
	}
	return best, who
}

func fmtNum(v float64, decimals int) string {
	if math.IsNaN(v) {
		return "—"
	}
	s := fmt.Sprintf("%.*f", decimals, v)
	// Thousands separators for the integer part of large numbers.
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	intPart, frac, hasFrac := strings.Cut(s, ".")
	if len(intPart) > 3 {
		var b strings.Builder
		for i, ch := range intPart {
			if i > 0 && (len(intPart)-i)%3 == 0 {
				b.WriteByte(',')
			}
			b.WriteRune(ch)
		}
		intPart = b.String()
	}
	if hasFrac {
		intPart += "." + frac
	}
	if neg {
		intPart = "-" + intPart
	}
	return intPart
}

func ratio(a, b float64) string {
	if math.IsNaN(a) || math.IsNaN(b) || b == 0 {
		return "—"
	}
	return fmt.Sprintf("%.2f", a/b)
}

// table writes a markdown table of targets × columns with a ratio row.
func (r results) table(b *strings.Builder, targets []string, cols []column, names map[string]string) {
	b.WriteString("| target |")
	for _, c := range cols {
		b.WriteString(" " + c.title + " |")
	}
	b.WriteString("\n|---|")
	for range cols {
		b.WriteString("---:|")
	}
	b.WriteString("\n")
	for _, t := range targets {
		if t == "direct" {
			continue // the baseline, quoted under the table
		}
		name := names[t]
		if name == "" {
			name = t
		}
		fmt.Fprintf(b, "| %s |", name)
		for _, c := range cols {
			fmt.Fprintf(b, " %s |", fmtNum(r.median(t, c), c.decimals))
		}
		b.WriteString("\n")
	}
	ratioRow := func(title string, skip ...string) {
		fmt.Fprintf(b, "| **%s** |", title)
		for _, c := range cols {
			best, who := r.best(targets, c, skip...)
			s := ratio(r.median("mqtls", c), best)
			if who != "" && s != "—" {
				if n := names[who]; n != "" {
					who = n
				}
				s += " (" + who + ")"
			}
			fmt.Fprintf(b, " %s |", s)
		}
		b.WriteString("\n")
	}
	ratioRow("mqtls ÷ best peer")
	if slices.Contains(targets, brokerTarget) {
		ratioRow("mqtls ÷ best proxy", brokerTarget)
	}
	// How much mqtls's own runs differed: the noise to read the ratios against.
	b.WriteString("| *mqtls, lowest–highest run* |")
	for _, c := range cols {
		lo, hi := r.span("mqtls", c)
		if math.IsNaN(lo) {
			b.WriteString(" — |")
			continue
		}
		fmt.Fprintf(b, " %s–%s |", fmtNum(lo, c.decimals), fmtNum(hi, c.decimals))
	}
	b.WriteString("\n")
}

// span returns the lowest and highest single-run value of c for label (NaN for none).
func (r results) span(label string, c column) (float64, float64) {
	vs := r.okValues(label, c.tag, c.path)
	if len(vs) == 0 {
		return math.NaN(), math.NaN()
	}
	lo, hi := slices.Min(vs), slices.Max(vs)
	if c.minusDirect {
		d := median(r.okValues("direct", c.directTag, c.path))
		lo, hi = lo-d, hi-d
	}
	return lo, hi
}

// brokerTarget is the peer that is the broker itself (Mosquitto's own TLS listener): no
// second hop, no upstream socket, so the proxies are also compared among themselves.
const brokerTarget = "mosquitto"

var (
	colMTLSRate  = column{title: "mTLS sessions/s", tag: "conns-mtls", path: "per_s", decimals: 0}
	colMTLSCPU   = column{title: "CPU µs/mTLS session", tag: "conns-mtls", path: "target_cpu_us_per_conn", lower: true, decimals: 0}
	colResRate   = column{title: "resumed mTLS sessions/s", tag: "conns-resume", path: "per_s", decimals: 0}
	colResCPU    = column{title: "CPU µs/resumed mTLS session", tag: "conns-resume", path: "target_cpu_us_per_conn", lower: true, decimals: 0}
	colHoldS     = column{title: "RSS KiB/idle session (small)", tag: "hold-small", path: "hold.rss_kib_per_session", lower: true, decimals: 1}
	colHoldL     = column{title: "RSS KiB/idle session (large)", tag: "hold-large", path: "hold.rss_kib_per_session", lower: true, decimals: 1}
	colQoS0      = column{title: "QoS 0 CPU µs/msg", tag: "pub-qos0", path: "target_cpu_us_per_msg", lower: true, decimals: 2}
	colQoS1      = column{title: "QoS 1 CPU µs/msg", tag: "pub-qos1", path: "target_cpu_us_per_msg", lower: true, decimals: 2}
	colPing50    = column{title: "p50 added µs, CPU 1", tag: "ping", path: "rtt_us.p50", lower: true, decimals: 0, minusDirect: true, directTag: "ping"}
	colPing99    = column{title: "p99 added µs, CPU 1", tag: "ping", path: "rtt_us.p99", lower: true, decimals: 0, minusDirect: true, directTag: "ping"}
	colSame50    = column{title: "p50 added µs, same CPU", tag: "ping-cpu0", path: "rtt_us.p50", lower: true, decimals: 0, minusDirect: true, directTag: "ping"}
	colSame99    = column{title: "p99 added µs, same CPU", tag: "ping-cpu0", path: "rtt_us.p99", lower: true, decimals: 0, minusDirect: true, directTag: "ping"}
	colBusy50    = column{title: "p50 added µs, busy polling", tag: "ping-busy", path: "rtt_us.p50", lower: true, decimals: 0, minusDirect: true, directTag: "ping"}
	colBusy99    = column{title: "p99 added µs, busy polling", tag: "ping-busy", path: "rtt_us.p99", lower: true, decimals: 0, minusDirect: true, directTag: "ping"}
	colBulkMB    = column{title: "bulk MB/s", tag: "bulk", path: "mb_per_s", decimals: 0}
	colBulkCPU   = column{title: "bulk CPU s/GB", tag: "bulk", path: "target_cpu_s_per_gb", lower: true, decimals: 2}
	colPSKRate   = column{title: "TLS-PSK sessions/s", tag: "conns-psk", path: "per_s", decimals: 0}
	colPSKCPU    = column{title: "CPU µs/TLS-PSK session", tag: "conns-psk", path: "target_cpu_us_per_conn", lower: true, decimals: 0}
	colPSK13Rate = column{title: "TLS 1.3 PSK sessions/s", tag: "conns-psk13", path: "per_s", decimals: 0}
	colPSK13CPU  = column{title: "CPU µs/TLS 1.3 PSK session", tag: "conns-psk13", path: "target_cpu_us_per_conn", lower: true, decimals: 0}
	colDTLSRate  = column{title: "DTLS-PSK sessions/s", tag: "conns-dtls", path: "per_s", decimals: 0}
	colDTLSCPU   = column{title: "CPU µs/DTLS-PSK session", tag: "conns-dtls", path: "target_cpu_us_per_conn", lower: true, decimals: 0}
	// Client mode (#18).
	colClientRate = column{title: "client-mode sessions/s", tag: "conns-client", path: "per_s", decimals: 0}
	colClientCPU  = column{title: "CPU µs/client-mode session", tag: "conns-client", path: "target_cpu_us_per_conn", lower: true, decimals: 0}
)

func buildReport(lines []map[string]any) (string, error) {
	var meta map[string]any
	for _, l := range lines {
		if str(l, "cmd") == "meta" {
			meta = l
		}
	}
	if meta == nil {
		return "", errors.New("report: no meta line (cmd \"meta\") in the results")
	}
	r := results{lines: lines}
	var targets []string
	if ts, ok := meta["targets"].([]any); ok {
		for _, t := range ts {
			if s, ok := t.(string); ok {
				targets = append(targets, s)
			}
		}
	}
	if !slices.Contains(targets, "mqtls") {
		return "", errors.New("report: the meta line's targets do not include mqtls")
	}
	names := map[string]string{}
	if ns, ok := meta["names"].(map[string]any); ok {
		for k, v := range ns {
			if s, ok := v.(string); ok {
				names[k] = s
			}
		}
	}
	small, _ := field(meta, "hold_small")
	large, _ := field(meta, "hold_large")
	hs, hl := colHoldS, colHoldL
	hs.title = fmt.Sprintf("RSS KiB/idle session @%s", fmtNum(small, 0))
	hl.title = fmt.Sprintf("RSS KiB/idle session @%s", fmtNum(large, 0))

	var b strings.Builder
	b.WriteString("# Benchmarks: mqtls and other TLS front ends for Mosquitto\n\n")
	b.WriteString("<!-- Generated by scripts/bench-peers.sh (mqtls-bench report); do not edit by hand. -->\n\n")
	fmt.Fprintf(&b, "Measured %s by `scripts/bench-peers.sh%s`: %s, medians of %s repetition(s), targets run in alternation.\n\n",
		str(meta, "date"), str(meta, "args"), str(meta, "mode"), fmtNum(numOr(meta, "reps"), 0))
	if note := str(meta, "note"); note != "" {
		fmt.Fprintf(&b, "> **Caveat.** %s\n\n", note)
	}
	b.WriteString("## Machine\n\n")
	fmt.Fprintf(&b, "- CPU: %s, `nproc` %s; target pinned to CPU 1, load tool, broker and sink to CPU 0 (`taskset`)\n",
		str(meta, "cpu_model"), fmtNum(numOr(meta, "nproc"), 0))
	fmt.Fprintf(&b, "- kernel %s, %s, Go %s\n", str(meta, "kernel"), str(meta, "os"), str(meta, "go"))
	if vs, ok := meta["versions"].(map[string]any); ok {
		keys := make([]string, 0, len(vs))
		for k := range vs {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		var parts []string
		for _, k := range keys {
			parts = append(parts, fmt.Sprintf("%s %v", k, vs[k]))
		}
		fmt.Fprintf(&b, "- versions: %s\n", strings.Join(parts, ", "))
	}
	if s := str(meta, "setup"); s != "" {
		fmt.Fprintf(&b, "- %s\n", s)
	}

	b.WriteString("\n## Mutual TLS\n\n")
	b.WriteString("TLS 1.3, X25519, ECDSA P-256 server and client certificates from one CA, no resumption; every target forwards to the same plaintext Mosquitto.\n\n")
	r.table(&b, targets, []column{colMTLSRate, colMTLSCPU, hs, hl, colQoS0, colQoS1, colBulkMB, colBulkCPU}, names)

	b.WriteString("\n### Resumed mutual-TLS sessions\n\n")
	b.WriteString("The same sessions, each resuming the TLS 1.3 session of an earlier one with its ticket (PSK with X25519; the client certificate is not sent again, and mqtls checks it against the CAs and CRLs again). \"—\": fewer than 90% of the sessions resumed.\n\n")
	r.table(&b, targets, []column{colResRate, colResCPU}, names)

	b.WriteString("\n### Latency added: PINGREQ→PINGRESP over one mutual-TLS session\n\n")
	r.table(&b, targets, []column{colPing50, colPing99, colSame50, colSame99, colBusy50, colBusy99}, names)
	if d := median(r.okValues("direct", "ping", "rtt_us.p50")); !math.IsNaN(d) {
		fmt.Fprintf(&b, "\nStraight to Mosquitto without TLS (the baseline subtracted): p50 %s µs, p99 %s µs.\n",
			fmtNum(d, 0), fmtNum(median(r.okValues("direct", "ping", "rtt_us.p99")), 0))
	}

	b.WriteString("\n## Pre-shared keys\n\n")
	b.WriteString("TLS 1.2 `TLS_PSK_WITH_AES_128_GCM_SHA256`; TLS 1.3 external PSK `TLS_AES_128_GCM_SHA256` with psk_dhe_ke over X25519; DTLS 1.2 `TLS_PSK_WITH_AES_128_CCM_8` with cookie exchange and connection IDs (mqtls only: no peer here speaks DTLS). \"per core\" is 10⁶ ÷ the target's CPU µs per session: the rate one core of the target could sustain if the load tool were not the limit.\n\n")
	pskPerCore := column{title: "TLS-PSK per core", tag: "conns-psk", path: "target_cpu_us_per_conn", decimals: 0}
	dtlsPerCore := column{title: "DTLS-PSK per core", tag: "conns-dtls", path: "target_cpu_us_per_conn", decimals: 0}
	var pskTargets []string
	for _, t := range targets {
		if len(r.values(t, "conns-psk", "per_s")) > 0 || len(r.values(t, "conns-psk13", "per_s")) > 0 || len(r.values(t, "conns-dtls", "per_s")) > 0 {
			pskTargets = append(pskTargets, t)
		}
	}
	psk13PerCore := column{title: "TLS 1.3 PSK per core", tag: "conns-psk13", path: "target_cpu_us_per_conn", decimals: 0}
	b.WriteString("| target | TLS-PSK sessions/s | CPU µs/TLS-PSK session | TLS-PSK per core | TLS 1.3 PSK sessions/s | CPU µs/TLS 1.3 PSK session | TLS 1.3 PSK per core | DTLS-PSK sessions/s | CPU µs/DTLS-PSK session | DTLS-PSK per core |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	perCore := func(t string, c column) float64 {
		v := r.median(t, c)
		if math.IsNaN(v) || v <= 0 {
			return math.NaN()
		}
		return 1e6 / v
	}
	for _, t := range pskTargets {
		name := names[t]
		if name == "" {
			name = t
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", name,
			fmtNum(r.median(t, colPSKRate), 0), fmtNum(r.median(t, colPSKCPU), 0), fmtNum(perCore(t, pskPerCore), 0),
			fmtNum(r.median(t, colPSK13Rate), 0), fmtNum(r.median(t, colPSK13CPU), 0), fmtNum(perCore(t, psk13PerCore), 0),
			fmtNum(r.median(t, colDTLSRate), 0), fmtNum(r.median(t, colDTLSCPU), 0), fmtNum(perCore(t, dtlsPerCore), 0))
	}

	var clientTargets []string
	for _, t := range targets {
		if len(r.values(t, "conns-client", "per_s")) > 0 {
			clientTargets = append(clientTargets, t)
		}
	}
	if len(clientTargets) > 0 {
		b.WriteString("\n## Client mode (stunnel's client = yes)\n\nPlain MQTT sessions in, TLS 1.3 mutual TLS out to a second Mosquitto that requires the client certificate; the remote's CONNACK back to the local client.\n\n")
		r.table(&b, clientTargets, []column{colClientRate, colClientCPU}, names)
	}

	b.WriteString("\n## Goals (issue 8)\n\n| goal | mqtls | best peer | met |\n|---|---:|---:|:---:|\n")
	goal := func(name string, v float64, peer string, met bool, known bool) {
		m := "no"
		if !known {
			m = "—"
		} else if met {
			m = "yes"
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", name, fmtNumAuto(v), peer, m)
	}
	peerStr := func(c column) (float64, string) {
		v, who := r.best(targets, c)
		if who == "" {
			return v, "—"
		}
		if n := names[who]; n != "" {
			who = n
		}
		return v, fmt.Sprintf("%s (%s)", fmtNumAuto(v), who)
	}
	{
		v := r.median("mqtls", colMTLSCPU)
		p, ps := peerStr(colMTLSCPU)
		goal("mTLS CPU per session ≤ ⅔ of the best peer's (µs)", v, ps, v <= p*2/3, !math.IsNaN(v) && !math.IsNaN(p))
	}
	for _, c := range []column{hs, hl} {
		v := r.median("mqtls", c)
		_, ps := peerStr(c)
		goal(strings.Replace(c.title, "RSS KiB/idle session", "RSS per idle mTLS session ≤ 16 KiB", 1), v, ps, v <= 16, !math.IsNaN(v))
	}
	{
		v := r.median("mqtls", colQoS0)
		_, ps := peerStr(colQoS0)
		goal("CPU per QoS 0 message ≤ 1.0 µs", v, ps, v <= 1.0, !math.IsNaN(v))
	}
	for _, c := range []struct {
		col   column
		name  string
		limit float64
	}{
		{colPing50, "ping p50 added ≤ 80 µs (target on CPU 1)", 80},
		{colPing99, "ping p99 added ≤ 150 µs (target on CPU 1)", 150},
		{colSame50, "ping p50 added ≤ 80 µs (same CPU)", 80},
		{colSame99, "ping p99 added ≤ 150 µs (same CPU)", 150},
		{colBusy50, "ping p50 added ≤ 80 µs (target on CPU 1, busy polling)", 80},
		{colBusy99, "ping p99 added ≤ 150 µs (target on CPU 1, busy polling)", 150},
	} {
		v := r.median("mqtls", c.col)
		_, ps := peerStr(c.col)
		goal(c.name, v, ps, v <= c.limit, !math.IsNaN(v))
	}
	{
		v := r.median("mqtls", colBulkCPU)
		_, ps := peerStr(colBulkCPU)
		goal("bulk ≤ 0.5 CPU-s/GB", v, ps, v <= 0.5, !math.IsNaN(v))
	}
	{
		v := r.median("mqtls", colPSKRate)
		s := r.median("stunnel", colPSKRate)
		ps := "—"
		if !math.IsNaN(s) {
			ps = fmtNumAuto(s) + " (stunnel)"
		}
		goal("TLS-PSK sessions/s ≥ 2× stunnel's", v, ps, v >= 2*s, !math.IsNaN(v) && !math.IsNaN(s))
		vc, sc := perCore("mqtls", pskPerCore), perCore("stunnel", pskPerCore)
		ps = "—"
		if !math.IsNaN(sc) {
			ps = fmtNumAuto(sc) + " (stunnel)"
		}
		goal("TLS-PSK sessions/s per target core ≥ 2× stunnel's", vc, ps, vc >= 2*sc, !math.IsNaN(vc) && !math.IsNaN(sc))
		vc, sc = perCore("mqtls", psk13PerCore), perCore("stunnel", psk13PerCore)
		ps = "—"
		if !math.IsNaN(sc) {
			ps = fmtNumAuto(sc) + " (stunnel)"
		}
		goal("TLS 1.3 PSK sessions/s per target core ≥ 2× stunnel's", vc, ps, vc >= 2*sc, !math.IsNaN(vc) && !math.IsNaN(sc))
	}
	{
		v := r.median("mqtls", colDTLSRate)
		goal("DTLS-PSK ≥ 5,000 sessions/s", v, "—", v >= 5000, !math.IsNaN(v))
		vc := perCore("mqtls", dtlsPerCore)
		goal("DTLS-PSK per target core ≥ 5,000 sessions/s", vc, "—", vc >= 5000, !math.IsNaN(vc))
	}

	if s := str(meta, "method"); s != "" {
		b.WriteString("\n## Method\n\n" + s + "\n")
	}
	return b.String(), nil
}

func numOr(m map[string]any, k string) float64 {
	v, ok := field(m, k)
	if !ok {
		return math.NaN()
	}
	return v
}

// fmtNumAuto picks decimals by magnitude.
func fmtNumAuto(v float64) string {
	switch a := math.Abs(v); {
	case math.IsNaN(v):
		return "—"
	case a >= 100:
		return fmtNum(v, 0)
	case a >= 10:
		return fmtNum(v, 1)
	default:
		return fmtNum(v, 2)
	}
}
