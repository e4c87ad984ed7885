package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/mqtls/mqtls/handshake"
	"github.com/mqtls/mqtls/policy"
)

// Uplink is the remote side of a client-mode listener: it dials the remote broker and
// secures the connection (TLS, mutual TLS or TLS-PSK; see handshake.Client). Local clients
// connect in plain text, so a client-mode Server uses Plain as its Handshaker.
type Uplink interface {
	// Dial connects to addr on network ("tcp" or "unix") and secures the connection. A
	// refused handshake is a *handshake.Error whose reason the audit line reports as
	// "upstream_<reason>".
	Dial(ctx context.Context, network, addr string) (net.Conn, error)
	// Identity is the credential the uplink presents, for Config.Rewrite's templates.
	Identity() handshake.Identity
}

// Plain is the Handshaker of a client-mode listener: local clients speak plain MQTT, so
// there is nothing to secure and no identity.
type Plain struct{}

// Handshake returns c as it is.
func (Plain) Handshake(_ context.Context, c net.Conn) (net.Conn, handshake.Identity, error) {
	return c, handshake.Identity{}, nil
}

// ReasonUpstreamClosed: in client mode, the remote broker closed the connection before its
// CONNACK, without saying why.
const ReasonUpstreamClosed = "upstream_closed"

// Modes of a listener, for logs and metric labels.
const (
	ModeServer = "server"
	ModeClient = "client"
	// ModePlain is the handshake kind of a client-mode session's local side.
	ModePlain = "plain"
)

// mode names the listener's mode.
func (c *Config) mode() string {
	if c.Uplink != nil {
		return ModeClient
	}
	return ModeServer
}

// upstreamReason is the audit reason for a failed dial: the uplink's handshake reason
// behind "upstream_" when the remote was reached but the handshake failed, else
// upstream_unavailable.
func upstreamReason(err error) string {
	var he *handshake.Error
	switch {
	case errors.As(err, &he) && he.Reason == handshake.ReasonClientClosed:
		return ReasonUpstreamClosed // the remote, not a client, closed
	case errors.As(err, &he):
		return "upstream_" + he.Reason
	}
	return ReasonUpstreamUnavailable
}

// maxConnack bounds the remote's first packet: a CONNACK is a few bytes, with MQTT 5
// properties a few hundred.
const maxConnack = 4 << 10

// awaitConnack, in client mode, reads the remote broker's first packet under the connect
// deadline and passes it to the local client. A remote that refuses the gateway after the
// handshake (a TLS 1.3 server judges the client certificate once the client has finished)
// or closes at once is answered to the local client with CONNACK "server unavailable",
// as a remote that cannot be reached is, with the reason in the audit line.
func (c *conn) awaitConnack(local, up net.Conn, cp *policy.Connect) bool {
	_ = up.SetReadDeadline(time.Now().Add(orDuration(c.cfg.ConnectTimeout, DefaultConnectTimeout)))
	pkt, err := readPacket(up, maxConnack)
	_ = up.SetReadDeadline(time.Time{})
	if t := pkt0Type(pkt); err == nil && t != 2 && t != 15 { // CONNACK, or AUTH (MQTT 5 enhanced auth)
		err = fmt.Errorf("remote broker's first packet is of type %d, not CONNACK", t)
	}
	if err != nil {
		var he *handshake.Error
		if herr := handshake.ClassifyClient(err); errors.As(herr, &he) && he.Reason != handshake.ReasonFailed {
			err = herr
		}
		c.outcome, c.reason, c.err = OutcomeUpstreamUnavailable, upstreamReason(err), fmt.Errorf("reading the remote broker's CONNACK: %w", err)
		c.srv.log.Warn().Err(c.err).Uint64(fieldConnID, c.id).Str(fieldReason, c.reason).Msg("remote broker refused the session")
		c.refuse(local, cp, policy.CodeServerUnavailable, "remote broker unavailable")
		return false
	}
	n, err := local.Write(pkt)
	c.bytesOut += int64(n)
	if err != nil {
		c.endedBy, c.err = "device", fmt.Errorf("writing CONNACK to the local client: %w", err)
		return false
	}
	return true
}

// readPacket reads one whole MQTT packet from r, refusing one over max bytes before
// allocating it.
func readPacket(r io.Reader, max int) ([]byte, error) {
	var hdr [5]byte
	for n := 0; ; {
		if _, err := io.ReadFull(r, hdr[n:n+1]); err != nil {
			return nil, err
		}
		n++
		_, remaining, hl, err := policy.ParseFixedHeader(hdr[:n])
		if errors.Is(err, policy.ErrIncomplete) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if err := policy.CheckSize(hl, remaining, max); err != nil {
			return nil, err
		}
		pkt := make([]byte, hl+remaining)
		copy(pkt, hdr[:hl])
		if _, err := io.ReadFull(r, pkt[hl:]); err != nil {
			return nil, err
		}
		return pkt, nil
	}
}

func pkt0Type(pkt []byte) byte {
	if len(pkt) == 0 {
		return 0
	}
	return pkt[0] >> 4
}
