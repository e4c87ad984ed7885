package admin

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/mqtls/mqtls/handshake"
	"github.com/mqtls/mqtls/proxy"
)

// Metrics are mqtls's Prometheus metrics. Every label set is bounded: listener names come
// from the configuration, outcomes and reasons are the stable constants of handshake,
// policy and proxy, files are the configured ones. No client ID or identity is ever a label.
type Metrics struct {
	reg *prometheus.Registry

	active       *prometheus.GaugeVec     // listener
	connections  *prometheus.CounterVec   // listener, outcome
	refused      *prometheus.CounterVec   // listener, reason (at accept, before work)
	handshakeErr *prometheus.CounterVec   // listener, reason
	dtlsDropped  *prometheus.CounterVec   // listener, reason
	handshakeDur *prometheus.HistogramVec // kind
	decisions    *prometheus.CounterVec   // listener, outcome, reason (CONNECTs judged)
	bytes        *prometheus.CounterVec   // listener, direction
	dialFailures *prometheus.CounterVec   // listener
	reloads      *prometheus.CounterVec   // file, result
	expiry       *prometheus.GaugeVec     // file, role, subject
	pskLoaded    prometheus.Gauge
}

// NewMetrics declares the metrics in a registry of their own.
func NewMetrics() *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry()}
	m.active = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "mqtls_connections_active", Help: "Connections open now, handshakes included.",
	}, []string{"listener"})
	m.connections = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "mqtls_connections_total", Help: "Connections ended, by mode (server, client) and outcome (forwarded, rejected, handshake_failed, bad_first_packet, upstream_unavailable, refused).",
	}, []string{"listener", "mode", "outcome"})
	m.refused = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "mqtls_connections_refused_total", Help: "Connections closed at accept by a limit (max_connections, per_ip_rate).",
	}, []string{"listener", "reason"})
	m.dtlsDropped = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "mqtls_dtls_dropped_total", Help: "Datagrams and unproven addresses a DTLS listener dropped before a handshake, by reason (dtls_unproven_evicted, dtls_stale_cookie, ...).",
	}, []string{"listener", "reason"})
	m.handshakeErr = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "mqtls_handshake_failures_total", Help: "Failed handshakes by reason.",
	}, []string{"listener", "reason"})
	m.handshakeDur = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "mqtls_handshake_duration_seconds",
		Help:    "Time from accept to a completed handshake, by kind (tls, mtls, psk, dtls).",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14), // 0.5 ms .. 4 s
	}, []string{"kind"})
	m.decisions = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "mqtls_connect_decisions_total", Help: "CONNECT packets judged by the binding policy, by outcome (forwarded, rejected) and reason.",
	}, []string{"listener", "outcome", "reason"})
	m.bytes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "mqtls_bytes_total", Help: "Bytes piped, by direction (in: from devices, out: to devices).",
	}, []string{"listener", "direction"})
	m.dialFailures = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "mqtls_upstream_dial_failures_total", Help: "Failed dials of the upstream broker.",
	}, []string{"listener"})
	m.reloads = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "mqtls_reloads_total", Help: "Reloads of certificate, CA, CRL and PSK files, by result (ok, error).",
	}, []string{"file", "result"})
	m.expiry = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "mqtls_certificate_expiry_timestamp_seconds", Help: "When each loaded certificate expires, or each CRL's next update is due (Unix time), by role (server, client_ca, crl).",
	}, []string{"file", "role", "subject"})
	m.pskLoaded = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "mqtls_psk_identities", Help: "PSK identities loaded.",
	})
	m.reg.MustRegister(m.active, m.connections, m.refused, m.handshakeErr, m.dtlsDropped, m.handshakeDur, m.decisions,
		m.bytes, m.dialFailures, m.reloads, m.expiry, m.pskLoaded,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Hooks feeds the metrics from a listener.
func (m *Metrics) Hooks() proxy.Hooks {
	return proxy.Hooks{
		Opened: func(l string) { m.active.WithLabelValues(l).Inc() },
		Handshake: func(l, kind, reason string, took time.Duration) {
			if reason != "" {
				m.handshakeErr.WithLabelValues(l, reason).Inc()
				return
			}
			m.handshakeDur.WithLabelValues(kind).Observe(took.Seconds())
		},
		Closed: func(s proxy.Summary) {
			m.active.WithLabelValues(s.Listener).Dec()
			if s.Tenant != "" { // an SNI tenant's sessions are counted under its name
				s.Listener = s.Tenant
			}
			m.connections.WithLabelValues(s.Listener, s.Mode, s.Outcome).Inc()
			switch s.Outcome {
			case proxy.OutcomeForwarded, proxy.OutcomeRejected:
				reason := s.Reason
				if s.Outcome == proxy.OutcomeForwarded {
					reason = "" // how a forwarded session ended is not part of the decision
				}
				m.decisions.WithLabelValues(s.Listener, s.Outcome, reason).Inc()
			}
			m.bytes.WithLabelValues(s.Listener, "in").Add(float64(s.BytesIn))
			m.bytes.WithLabelValues(s.Listener, "out").Add(float64(s.BytesOut))
		},
		Refused: func(l, reason string) { m.refused.WithLabelValues(l, reason).Inc() },
		UpstreamDial: func(l string, err error) {
			if err != nil {
				m.dialFailures.WithLabelValues(l).Inc()
			}
		},
	}
}

// SetFiles records the expiry of what a TLS server loaded, replacing what was there.
func (m *Metrics) SetFiles(files []handshake.FileInfo) {
	m.expiry.Reset()
	// Two CRLs of one issuer in one file share their labels: the earlier expiry is the one
	// to act on.
	earliest := map[[3]string]int64{}
	for _, f := range files {
		if f.NotAfter.IsZero() {
			continue
		}
		k := [3]string{f.File, f.Role, f.Subject}
		if t, ok := earliest[k]; !ok || f.NotAfter.Unix() < t {
			earliest[k] = f.NotAfter.Unix()
			m.expiry.WithLabelValues(k[:]...).Set(float64(earliest[k]))
		}
	}
}

// CountReload counts one reload of file with result ok or error.
func (m *Metrics) CountReload(file, result string) { m.reloads.WithLabelValues(file, result).Inc() }

// SetPSKIdentities records how many PSK identities the listeners loaded.
func (m *Metrics) SetPSKIdentities(n int) { m.pskLoaded.Set(float64(n)) }

// DTLSDropped returns the hook a DTLS listener calls for each datagram or unproven address
// it drops before a handshake; it never blocks.
func (m *Metrics) DTLSDropped(listener string) func(reason string) {
	return func(reason string) { m.dtlsDropped.WithLabelValues(listener, reason).Inc() }
}
