// Package admin is mqtls's operations endpoint: the Prometheus metrics (every one is
// declared in metrics.go, fed by proxy's Hooks and by the supervisor's reloads) and the
// HTTP server for /metrics, /healthz, /readyz and, when asked, /debug/pprof.
//
// It sits beside the connection path: it observes accept → handshake → bind → pipe
// through proxy.Hooks and never changes it. It imports proxy (for Hooks and outcomes)
// and handshake (for the files whose expiry it exports), nothing of internal/.
package admin
