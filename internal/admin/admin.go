package admin

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// ReadyInterval is how recently the broker must have been reached for /readyz.
const ReadyInterval = 10 * time.Second

// Readiness is what /readyz reports: listeners bound, not draining, and the broker reached
// recently (by a session's dial or by the probe).
type Readiness struct {
	Bound      atomic.Bool
	Draining   atomic.Bool
	UpstreamOK atomic.Int64 // Unix nanoseconds of the last successful dial
	Interval   time.Duration
}

func (r *Readiness) ready(now time.Time) (bool, string) {
	switch {
	case !r.Bound.Load():
		return false, "listeners not bound"
	case r.Draining.Load():
		return false, "draining"
	case now.Sub(time.Unix(0, r.UpstreamOK.Load())) > 2*r.Interval:
		return false, "upstream not reached in the last " + (2 * r.Interval).String()
	}
	return true, "ready"
}

// ProbeUpstream dials the broker every interval unless a session did so since, so /readyz
// knows the broker is reachable even when no device connects.
func (r *Readiness) ProbeUpstream(ctx context.Context, upstream string, dialTimeout time.Duration) {
	network, addr := "tcp", upstream
	if p, ok := strings.CutPrefix(upstream, "unix:"); ok {
		network, addr = "unix", p
	}
	t := time.NewTicker(r.Interval / 2)
	defer t.Stop()
	for {
		if time.Since(time.Unix(0, r.UpstreamOK.Load())) >= r.Interval/2 {
			d := net.Dialer{Timeout: dialTimeout}
			if c, err := d.DialContext(ctx, network, addr); err == nil {
				c.Close()
				r.UpstreamOK.Store(time.Now().UnixNano())
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// NewServer serves /metrics, /healthz, /readyz and, when asked, /debug/pprof.
func NewServer(m *Metrics, r *Readiness, pprofOn bool) *http.Server {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		ok, why := r.ready(time.Now())
		if !ok {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		fmt.Fprintln(w, why)
	})
	if pprofOn {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	return &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
}
