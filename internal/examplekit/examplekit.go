// Package examplekit is what the runnable examples share that is not mqtls itself: an
// in-process broker that records the CONNECTs reaching it, and a log writer that picks
// mqtls's audit lines out of its JSON log so the narrative can quote them.
package examplekit

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
	mochipackets "github.com/mochi-mqtt/server/v2/packets"
)

// StartBroker starts mochi-mqtt on a free loopback port, logging warnings to logs. The
// returned recorder lists the client IDs of every CONNECT that reached the broker.
func StartBroker(logs io.Writer) (*mqtt.Server, string, *ConnectRecorder, error) {
	broker := mqtt.New(&mqtt.Options{
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	seen := &ConnectRecorder{}
	if err := broker.AddHook(new(auth.AllowHook), nil); err != nil {
		return nil, "", nil, err
	}
	if err := broker.AddHook(seen, nil); err != nil {
		return nil, "", nil, err
	}
	tcp := listeners.NewTCP(listeners.Config{ID: "plain", Address: "127.0.0.1:0"})
	if err := broker.AddListener(tcp); err != nil {
		return nil, "", nil, err
	}
	if err := broker.Serve(); err != nil {
		broker.Close()
		return nil, "", nil, err
	}
	return broker, tcp.Address(), seen, nil
}

// ConnectRecorder is a broker hook that remembers the client ID of every CONNECT.
type ConnectRecorder struct {
	mqtt.HookBase
	mu   sync.Mutex
	seen []string
}

func (r *ConnectRecorder) ID() string { return "example-connect-recorder" }

func (r *ConnectRecorder) Provides(b byte) bool { return b == mqtt.OnConnect }

func (r *ConnectRecorder) OnConnect(cl *mqtt.Client, _ mochipackets.Packet) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seen = append(r.seen, cl.ID)
	return nil
}

// IDs returns the client IDs seen so far, in order.
func (r *ConnectRecorder) IDs() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.seen)
}

// AuditLine is the part of mqtls's per-connection audit line the narratives quote.
type AuditLine struct {
	Message     string `json:"message"`
	Outcome     string `json:"outcome"`
	Reason      string `json:"reason"`
	Identity    string `json:"identity"`
	ClientID    string `json:"client_id"`
	Forwarded   string `json:"client_id_forwarded"`
	TLSVersion  string `json:"tls_version"`
	CipherSuite string `json:"cipher_suite"`
	BytesIn     int64  `json:"bytes_in"`
	BytesOut    int64  `json:"bytes_out"`
	Dropped     int64  `json:"datagrams_dropped"`
}

// AuditWriter passes mqtls's JSON log through to w and keeps every "connection" line for
// Next. zerolog writes one whole line per Write; concurrent connections may write at once.
type AuditWriter struct {
	mu    sync.Mutex
	w     io.Writer
	lines chan AuditLine
}

func NewAuditWriter(w io.Writer) *AuditWriter {
	return &AuditWriter{w: w, lines: make(chan AuditLine, 16)}
}

func (a *AuditWriter) Write(p []byte) (int, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	var l AuditLine
	if json.Unmarshal(bytes.TrimSpace(p), &l) == nil && l.Message == "connection" {
		select {
		case a.lines <- l:
		default: // nobody is reading that many; never block mqtls's logging
		}
	}
	return a.w.Write(p)
}

// Next waits (until ctx ends) for the next audit line and checks that its outcome is want.
func (a *AuditWriter) Next(ctx context.Context, want string) (AuditLine, error) {
	var l AuditLine
	select {
	case l = <-a.lines:
	case <-ctx.Done():
		return l, fmt.Errorf("waiting for mqtls's audit line: %w", ctx.Err())
	}
	if l.Outcome != want {
		return l, fmt.Errorf("mqtls audit line says outcome %q (reason %q), want %q", l.Outcome, l.Reason, want)
	}
	return l, nil
}
