package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/pires/go-proxyproto"
	"github.com/rs/zerolog"

	"github.com/mqtls/mqtls/handshake"
	"github.com/mqtls/mqtls/policy"
	"github.com/mqtls/mqtls/proxy/datagram"
)

// conn is one accepted connection, from accept to its audit line.
type conn struct {
	srv    *Server
	cfg    *Config  // the listener's configuration when this connection was accepted
	device net.Conn // as accepted; closing it ends everything built on it
	id     uint64
	start  time.Time

	mu       sync.Mutex
	upstream net.Conn // set once dialled, for abort
	secure   net.Conn // the handshake's conn, nil until it succeeds
	hello    []byte   // the ClientHello SNI routing read, replayed to the tenant's handshaker
	tenant   string   // the SNI tenant chosen, "" if none
	park     *parkedPipe
	aborted  bool
	secured  bool        // the handshake succeeded; ident is set (under mu, for CloseMatching)
	revoked  bool        // closed by CloseMatching
	closing  atomic.Bool // a close deadline is armed on the device; idle no longer applies

	// What the audit line reports; written only by the serving goroutine until pipe
	// starts, then by the two copiers (one field each) before serve reads them.
	remote    string // the device's address for logs (the PROXY header's client, if any)
	proxiedBy string // the load balancer that sent a PROXY header, "" if none
	outcome   string
	reason    string
	ident     handshake.Identity
	identity  string // rendered
	clientID  string
	forwarded string
	level     byte
	bytesIn   int64          // device → broker, the CONNECT included
	bytesOut  int64          // broker → device, a rejection CONNACK included
	dgram     *datagram.Conn // the framing layer of a DTLS session, nil on TCP
	// heldIdentity is the identity whose per-identity slot this session holds, "" if none.
	heldIdentity string
	endedBy      string
	err          error
}

// dropped logs a datagram the framing layer dropped; the audit line counts them.
func (c *conn) dropped(err error) {
	l := c.logger()
	l.Debug().Str(fieldReason, "datagram_not_whole_packets").Err(err).Msg("datagram dropped")
}

// logger builds the connection's child logger when a line is written, rather than once
// per connection: a logger held by every session would cost each idle one its context
// buffer. Only the serving goroutine calls it.
func (c *conn) logger() zerolog.Logger {
	ctx := c.srv.log.With().Uint64(fieldConnID, c.id).Str(fieldRemote, c.remote)
	if c.proxiedBy != "" {
		ctx = ctx.Str("proxied_by", c.proxiedBy)
	}
	if c.secured {
		ctx = ctx.Str(fieldIdentity, c.identity)
	}
	return ctx.Logger()
}

// abort closes the connection's sockets so that whatever it is blocked on returns.
func (c *conn) abort() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.aborted = true
	c.device.Close()
	if c.upstream != nil {
		c.upstream.Close()
	}
	if c.park != nil { // parked sockets wait in epoll, which does not report a close
		c.park.wake()
	}
}

// identityIfSecured returns the session's identity once its handshake succeeded. The
// caller holds the server's lock; c.mu orders it with the serving goroutine.
func (c *conn) identityIfSecured() (handshake.Identity, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ident, c.secured
}

// revoke closes the session because its credentials are no longer valid.
func (c *conn) revoke() {
	c.mu.Lock()
	c.revoked = true
	c.mu.Unlock()
	c.abort()
}

func (c *conn) setUpstream(u net.Conn) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.aborted {
		return false
	}
	c.upstream = u
	return true
}

// serve runs the connection's whole life: handshake, first packet, bind, dial, pipe.
func (c *conn) serve() {
	if c.run() {
		return // parked: the pipe finishes the connection when both directions end
	}
	c.finish()
}

// finish ends every connection, on whichever goroutine saw it end: the sockets closed, the
// audit line written, its place among the server's connections given up.
func (c *conn) finish() {
	if c.upstream != nil {
		c.upstream.Close()
	}
	if c.secure != nil {
		c.secure.Close()
	}
	c.audit()
	c.device.Close()
	c.srv.forget(c)
}

// run takes the connection from accept to the pipe. It reports whether the pipe parked the
// session, which then calls finish itself.
func (c *conn) run() (parked bool) {
	c.remote = c.device.RemoteAddr().String()
	if len(c.cfg.TrustProxyFrom) > 0 && trustsProxy(c.cfg.TrustProxyFrom, c.device.RemoteAddr()) && !c.acceptProxyHeader() {
		return false
	}
	if c.cfg.SNI != nil && !c.route() { // sni.go
		return false
	}
	secure, ok := c.handshake()
	if !ok {
		return false
	}
	c.secure = secure
	if c.cfg.Datagram {
		c.dgram = datagram.New(secure, datagram.Options{MaxDatagram: c.cfg.MaxDatagram, OnDrop: c.dropped})
		secure = c.dgram
	}
	pkt, ok := c.readConnect(secure)
	if !ok {
		return false
	}
	var cp policy.Connect // the first packet as parsed, for answering in its version
	out, ok := c.bind(secure, pkt, &cp)
	if !ok {
		return false
	}
	up, ok := c.dial(secure, &cp)
	if !ok {
		return false
	}
	// The device's deadline covered the handshake and the first packet; from here on an
	// idle session is the broker's business (keep-alive), not ours.
	_ = c.device.SetDeadline(time.Time{})
	c.outcome = OutcomeForwarded
	if v := c.cfg.SendProxyHeader; v != "" {
		hdr, err := proxyHeaderFor(v, c.device.RemoteAddr(), c.device.LocalAddr(), c.ident)
		if err != nil {
			c.endedBy, c.err = "upstream", fmt.Errorf("building PROXY header: %w", err)
			return false
		}
		out = append(hdr, out...)
	}
	if _, err := up.Write(out); err != nil {
		// In client mode the remote's refusal (an alert after a TLS 1.3 handshake) may be
		// waiting to be read: awaitConnack reads it and answers the local client.
		if c.cfg.Uplink == nil || c.awaitConnack(secure, up, &cp) {
			c.endedBy, c.err = "upstream", fmt.Errorf("writing CONNECT upstream: %w", err)
		}
		return false
	}
	if c.cfg.Uplink != nil && !c.awaitConnack(secure, up, &cp) {
		return false
	}
	// The parsed CONNECT aliases the packet's bytes: let a long session not keep them
	// (this frame lives as long as the session when the goroutine pipe serves it).
	cp = policy.Connect{}
	return c.pipe(secure, up)
}

// acceptProxyHeader reads the PROXY header a trusted load balancer put before the TLS
// bytes, under the handshake deadline, and makes the client it names the remote address;
// the per-address rate limit, skipped at accept for the balancer, applies to that client.
func (c *conn) acceptProxyHeader() bool {
	_ = c.device.SetDeadline(c.start.Add(orDuration(c.cfg.HandshakeTimeout, DefaultHandshakeTimeout)))
	h, err := readProxyHeader(c.device)
	switch {
	case err != nil:
		c.outcome, c.reason, c.err = OutcomeHandshakeFailed, ReasonProxyHeader, err
		return false
	case h == nil:
		c.outcome, c.reason = OutcomeRefused, ReasonProxyHeaderMissing
		c.err = fmt.Errorf("no PROXY header from %s, a source trusted to send one: a client there would pass for the balancer and skip the per-address rate (a health check sends PROXY LOCAL, or UNKNOWN in v1)", c.remote)
		return false
	case h.Command == proxyproto.LOCAL:
		return true // a health check (v1 UNKNOWN parses as LOCAL): the balancer speaks for itself
	}
	if h.SourceAddr == nil || !hasIP(h.SourceAddr) {
		c.outcome, c.reason = OutcomeHandshakeFailed, ReasonProxyHeader
		c.err = fmt.Errorf("PROXY header from %s forwards a client without an IP address (%v), so no per-address limit could apply to it", c.remote, h.TransportProtocol)
		return false
	}
	lb := c.device.RemoteAddr().String()
	if tc, ok := c.device.(*net.TCPConn); ok {
		c.mu.Lock() // abort closes c.device
		c.device = &realTCPConn{TCPConn: tc, remote: h.SourceAddr}
		c.mu.Unlock()
	}
	c.remote, c.proxiedBy = h.SourceAddr.String(), lb
	c.srv.mu.Lock()
	limited := c.srv.perIP != nil && !c.srv.perIP.allow(h.SourceAddr, time.Now())
	c.srv.mu.Unlock()
	if limited {
		c.outcome, c.reason = OutcomeRefused, ReasonPerIPRate
		c.err = fmt.Errorf("client %s over the per-address rate", h.SourceAddr)
		return false
	}
	return true
}

// handshake secures the device's connection under the handshake deadline, which bounds
// both the socket and the context (some handshakers, pion's DTLS, follow only the latter).
func (c *conn) handshake() (net.Conn, bool) {
	s := c.srv
	if max := int64(c.cfg.MaxHandshakes); max > 0 {
		if s.handshakes.Add(1) > max {
			s.handshakes.Add(-1)
			c.outcome, c.reason = OutcomeRefused, ReasonMaxHandshakes
			c.err = fmt.Errorf("%d handshakes already in progress", max)
			return nil, false
		}
		defer s.handshakes.Add(-1)
	}
	deadline := c.start.Add(orDuration(c.cfg.HandshakeTimeout, DefaultHandshakeTimeout))
	_ = c.device.SetDeadline(deadline)
	ctx, cancel := context.WithDeadline(s.ctx, deadline)
	defer cancel()
	var secure net.Conn
	var id handshake.Identity
	var err error
	if c.hello != nil { // SNI routing read the ClientHello
		secure, id, err = c.cfg.Handshaker.(HelloHandshaker).HandshakeHello(ctx, c.device, c.hello)
		c.hello = nil
	} else {
		secure, id, err = c.cfg.Handshaker.Handshake(ctx, c.device)
	}
	took := time.Since(c.start)
	if err != nil {
		c.outcome, c.reason, c.err = OutcomeHandshakeFailed, handshake.Reason(err), err
		if h := c.cfg.Hooks.Handshake; h != nil {
			h(c.cfg.name(), "", c.reason, took)
		}
		return nil, false
	}
	if h := c.cfg.Hooks.Handshake; h != nil {
		kind := sessionKind(id.DTLS, id.Kind.String())
		if c.cfg.Uplink != nil {
			kind = ModePlain // client mode: the local side is not secured
		}
		h(c.cfg.name(), kind, "", took)
	}
	c.mu.Lock()
	c.ident, c.secured = id, true
	c.mu.Unlock()
	c.identity = c.cfg.Policy.Template().Render(id)
	return secure, true
}

// readConnect reads the first packet under the connect deadline: the fixed header a byte at
// a time (the secure conn buffers the record, so this costs no syscalls), the size cap
// checked before the body is allocated, then exactly the body. Reading no further than the
// packet means nothing the device pipelined after it is lost: the pipe forwards it.
func (c *conn) readConnect(secure net.Conn) ([]byte, bool) {
	_ = c.device.SetDeadline(time.Now().Add(orDuration(c.cfg.ConnectTimeout, DefaultConnectTimeout)))
	var hdr [5]byte
	n := 0
	var remaining, hl int
	for {
		if _, err := io.ReadFull(secure, hdr[n:n+1]); err != nil {
			return nil, c.badFirstPacket(readReason(err), err)
		}
		n++
		var err error
		_, remaining, hl, err = policy.ParseFixedHeader(hdr[:n])
		if n == 1 && hdr[0]>>4 != 1 {
			return nil, c.badFirstPacket(ReasonNotConnect, fmt.Errorf("%w: packet type %d", policy.ErrNotConnect, hdr[0]>>4))
		}
		if err == nil {
			break
		}
		if !errors.Is(err, policy.ErrIncomplete) {
			return nil, c.badFirstPacket(ReasonMalformedPacket, err)
		}
	}
	if err := policy.CheckSize(hl, remaining, c.cfg.maxConnectSize()); err != nil {
		return nil, c.badFirstPacket(ReasonPacketTooLarge, err)
	}
	pkt := make([]byte, hl+remaining)
	copy(pkt, hdr[:hl])
	n, err := io.ReadFull(secure, pkt[hl:])
	c.bytesIn = int64(hl + n)
	if err != nil {
		return nil, c.badFirstPacket(readReason(err), err)
	}
	return pkt, true
}

func readReason(err error) string {
	if isTimeout(err) {
		return ReasonFirstPacketTimeout
	}
	if r := handshake.SessionReason(err); r != "" {
		return r // e.g. renegotiation_refused: the device did not just close
	}
	return ReasonClientClosed
}

func (c *conn) badFirstPacket(reason string, err error) bool {
	c.outcome, c.reason, c.err = OutcomeBadFirstPacket, reason, err
	return false
}

// bind parses the CONNECT and applies the policy. A refusal is answered with a CONNACK in
// the client's protocol version; a malformed packet is only closed, as the spec wants.
func (c *conn) bind(secure net.Conn, pkt []byte, cp *policy.Connect) ([]byte, bool) {
	var err error
	*cp, err = policy.ParseConnect(pkt)
	c.level = cp.Level
	c.clientID = logString(cp.ClientID)
	var rej *policy.Reject
	if err != nil && !errors.As(err, &rej) {
		return nil, c.badFirstPacket(ReasonMalformedPacket, err)
	}
	var d policy.Decision
	switch {
	case err == nil && c.cfg.Rewrite != nil:
		d, err = c.cfg.Rewrite.Bind(c.cfg.Uplink.Identity(), cp)
		errors.As(err, &rej)
	case err == nil:
		d, err = c.cfg.Policy.Bind(c.ident, cp)
		errors.As(err, &rej)
	}
	if rej != nil {
		c.outcome, c.reason, c.err = OutcomeRejected, rej.Reason, rej
		c.refuse(secure, cp, rej.Code, rej.Reason)
		return nil, false
	}
	if max := c.cfg.MaxPerIdentity; max > 0 && d.Identity != "" {
		if !c.srv.identities.acquire(d.Identity, max) {
			c.outcome, c.reason = OutcomeRejected, ReasonMaxPerIdentity
			c.err = fmt.Errorf("identity %q already holds %d sessions", d.Identity, max)
			c.refuse(secure, cp, policy.CodeServerBusy, ReasonMaxPerIdentity)
			return nil, false
		}
		c.heldIdentity = d.Identity
	}
	c.forwarded = logString(d.ClientID)
	return d.Packet, true
}

// dial connects to the broker; when it cannot, the device hears "server unavailable".
func (c *conn) dial(secure net.Conn, cp *policy.Connect) (net.Conn, bool) {
	up, err := dialUpstream(c.srv.ctx, c.cfg)
	if h := c.cfg.Hooks.UpstreamDial; h != nil {
		h(c.cfg.name(), err)
	}
	if err == nil && !c.setUpstream(up) {
		up.Close()
		err = errors.New("dialing upstream: server shutting down")
	}
	if err != nil {
		c.outcome, c.reason, c.err = OutcomeUpstreamUnavailable, upstreamReason(err), err
		c.srv.log.Warn().Err(err).Uint64(fieldConnID, c.id).Msg("broker unreachable")
		c.refuse(secure, cp, policy.CodeServerUnavailable, "broker unavailable")
		return nil, false
	}
	return up, true
}

// refuse writes a CONNACK carrying code and closes the device's side cleanly: close_notify
// and FIN first, then a short drain of whatever the device still sends, so that unread
// bytes do not turn the close into a reset that destroys the CONNACK in flight.
func (c *conn) refuse(secure net.Conn, cp *policy.Connect, code policy.Code, reason string) {
	ack := cp.AppendConnack(make([]byte, 0, 64), code, reason)
	_ = c.device.SetDeadline(time.Now().Add(closeLinger))
	n, err := secure.Write(ack)
	c.bytesOut += int64(n)
	if err != nil {
		return
	}
	// DTLS has no half-close, and a close_notify right behind the CONNACK can cost the
	// device the CONNACK (pion's Read, for one, picks at random between a record it holds
	// and the close that followed it): there the device is left to close first.
	cw, ok := secure.(closeWriter)
	if c.dgram != nil || ok && cw.CloseWrite() == nil {
		_, _ = io.CopyN(io.Discard, secure, 64<<10)
	}
}

// closeLinger bounds writing a refusal and draining the device after it.
const closeLinger = 2 * time.Second

// audit writes the connection's one summary line and tells the hooks.
func (c *conn) audit() {
	if c.heldIdentity != "" {
		c.srv.identities.release(c.heldIdentity)
	}
	c.mu.Lock()
	if c.revoked && c.outcome == OutcomeForwarded {
		c.reason, c.endedBy = ReasonRevoked, "revoked"
	}
	c.mu.Unlock()
	if c.outcome == "" {
		c.outcome = OutcomeHandshakeFailed
	}
	// The hooks (metrics) first: whoever reads the audit line then finds it counted.
	c.summarize()
	if c.cfg.NoAudit {
		return
	}
	// The audit line is written whatever the logger's level: --log-level warn must not
	// silently drop every refusal.
	l := c.logger().Level(zerolog.TraceLevel)
	ev := l.Info()
	ev = ev.Str(fieldOutcome, c.outcome).
		Str(fieldReason, c.reason).
		Str(fieldIdentityKind, c.ident.Kind.String())
	if !c.secured { // the child logger carries it once the handshake succeeded
		ev = ev.Str(fieldIdentity, "")
	}
	if c.level != 0 {
		ev = ev.Uint8(fieldProtocolLevel, c.level).Str(fieldClientID, c.clientID)
	}
	if c.outcome == OutcomeForwarded {
		ev = ev.Str(fieldClientIDForward, c.forwarded)
	}
	if v := c.ident.VersionName(); v != "" {
		ev = ev.Str(fieldTLSVersion, v).Str(fieldCipherSuite, c.ident.CipherSuiteName())
	}
	if c.ident.PSKIdentity != "" {
		ev = ev.Str(fieldPSKIdentity, c.ident.PSKIdentity)
	}
	if c.dgram != nil {
		ev = ev.Uint64(fieldDropped, c.dgram.Dropped())
	}
	if c.cfg.Uplink != nil {
		ev = ev.Str(fieldMode, ModeClient)
	}
	if c.tenant != "" {
		ev = ev.Str(fieldTenant, c.tenant)
	}
	if c.endedBy != "" {
		ev = ev.Str(fieldEndedBy, c.endedBy)
	}
	if c.err != nil && !isClosed(c.err) {
		ev = ev.AnErr("error", c.err)
	}
	ev.Int64(fieldBytesIn, c.bytesIn).
		Int64(fieldBytesOut, c.bytesOut).
		Float64(fieldDuration, float64(time.Since(c.start))/float64(time.Millisecond)).
		Msg("connection")
}

func (c *conn) summarize() {
	h := c.cfg.Hooks.Closed
	if h == nil {
		return
	}
	kind := ""
	if c.ident.TLSVersion != 0 {
		kind = sessionKind(c.ident.DTLS, c.ident.Kind.String())
	}
	h(Summary{
		Listener: c.srv.cfgName,
		Tenant:   c.tenant,
		Mode:     c.cfg.mode(),
		Outcome:  c.outcome,
		Reason:   c.reason,
		Kind:     kind,
		BytesIn:  c.bytesIn,
		BytesOut: c.bytesOut,
		Duration: time.Since(c.start),
	})
}

// isTimeout reports a deadline that passed. pion's DTLS conn reports its own timeout
// error, not os.ErrDeadlineExceeded, but as a net.Error with Timeout.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) || errors.As(err, &ne) && ne.Timeout()
}

// maxLogString bounds a peer-chosen string in the audit line: a client ID may be 64 KiB.
const maxLogString = 256

// logString is b for a log line, cut to maxLogString bytes (at a UTF-8 boundary) with "…"
// appended when it was longer.
func logString(b []byte) string {
	if len(b) <= maxLogString {
		return string(b)
	}
	n := maxLogString
	for n > 0 && !utf8.RuneStart(b[n]) {
		n--
	}
	return string(b[:n]) + "…"
}

// isClosed reports the errors every ended connection produces, which add nothing to a log.
func isClosed(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE)
}
