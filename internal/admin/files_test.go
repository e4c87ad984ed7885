package admin

import (
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/mqtls/mqtls/handshake"
)

// TestSetFilesKeepsEarliestCRL: two CRLs of one issuer in one file share their labels;
// the gauge shows the one that goes stale first, whatever their order in the file.
func TestSetFilesKeepsEarliestCRL(t *testing.T) {
	early, late := time.Unix(1_900_000_000, 0), time.Unix(1_900_086_400, 0)
	for _, order := range [][]time.Time{{early, late}, {late, early}} {
		m := NewMetrics()
		var files []handshake.FileInfo
		for i, at := range order {
			files = append(files, handshake.FileInfo{File: "ca.crl", Role: "crl", Subject: "CN=CA", NotAfter: at, Block: i + 1})
		}
		m.SetFiles(files)
		var pb dto.Metric
		if err := m.expiry.WithLabelValues("ca.crl", "crl", "CN=CA").Write(&pb); err != nil {
			t.Fatal(err)
		}
		if got := pb.GetGauge().GetValue(); got != float64(early.Unix()) {
			t.Errorf("order %v: expiry gauge %v, want the earlier %d", order, got, early.Unix())
		}
	}
}
