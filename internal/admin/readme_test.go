package admin

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// TestReadmeMetrics keeps the README's metric names (the operations table and the sample
// alert) in step with what /metrics serves.
func TestReadmeMetrics(t *testing.T) {
	data, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(data)
	m := NewMetrics()
	m.active.WithLabelValues("tcp") // vectors are listed once they have a series
	m.connections.WithLabelValues("tcp", "server", "forwarded")
	m.refused.WithLabelValues("tcp", "max_connections")
	m.handshakeErr.WithLabelValues("tcp", "not_tls")
	m.DTLSDropped("dtls")("dtls_stale_cookie")
	m.handshakeDur.WithLabelValues("mtls")
	m.decisions.WithLabelValues("tcp", "forwarded", "")
	m.bytes.WithLabelValues("tcp", "in")
	m.dialFailures.WithLabelValues("tcp")
	m.reloads.WithLabelValues("f", "ok")
	m.expiry.WithLabelValues("f", "server", "s")
	families, err := m.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var served []string
	for _, f := range families {
		served = append(served, f.GetName())
	}
	mentioned := regexp.MustCompile(`mqtls_[a-z_]+`).FindAllString(readme, -1)
	if len(mentioned) == 0 {
		t.Fatal("README.md names no metric")
	}
	for _, name := range mentioned {
		if !slices.Contains(served, name) {
			t.Errorf("README.md names metric %s, which /metrics does not serve", name)
		}
	}
	for _, name := range served {
		if strings.HasPrefix(name, "mqtls_") && !slices.Contains(mentioned, name) {
			t.Errorf("metric %s is missing from README.md", name)
		}
	}
}
