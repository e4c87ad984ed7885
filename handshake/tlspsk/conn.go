package tlspsk

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/mqtls/mqtls/internal/sockio"
)

// Record content types (RFC 5246 §6.2.1).
const (
	recordTypeChangeCipherSpec uint8 = 20
	recordTypeAlert            uint8 = 21
	recordTypeHandshake        uint8 = 22
	recordTypeApplicationData  uint8 = 23
)

// The protocol versions this package speaks.
const (
	VersionTLS12 uint16 = 0x0303
	VersionTLS13 uint16 = 0x0304
)

// maxEarlyData bounds the refused 0-RTT data skipped (RFC 8446 §4.2.10 lets the server
// pick the limit for an external PSK; no client of this package is told any other).
const maxEarlyData = 1 << 14

// maxRecordsPerKey is how many records a TLS 1.3 Conn writes under one key before it sends
// a KeyUpdate (RFC 8446 §5.5 sets 2^24.5 full-size records for AES-GCM).
const maxRecordsPerKey = 1 << 24

// maxIdleRecords bounds how many records in a row may carry nothing for the caller (empty
// application data, ignored warnings) before the peer is considered abusive.
const maxIdleRecords = 16

// closeNotifyTimeout bounds how long Close waits to send close_notify.
const closeNotifyTimeout = 5 * time.Second

// State describes a connection after its handshake.
type State struct {
	// HandshakeComplete is true once the handshake succeeded; the other fields are only
	// meaningful then.
	HandshakeComplete bool
	// Version is VersionTLS13 or VersionTLS12.
	Version uint16
	// CipherSuite is the negotiated suite (see CipherSuiteName).
	CipherSuite uint16
	// Identity is the PSK identity the client presented and the server knew.
	Identity string
	// ServerName is the SNI host name the client sent, if it was a plausible DNS name.
	ServerName string
	// ExtendedMasterSecret reports that RFC 7627 was negotiated (TLS 1.2 only).
	ExtendedMasterSecret bool
	// EncryptThenMAC reports that RFC 7366 was negotiated (CBC suites only).
	EncryptThenMAC bool
	// Hint is the PSK identity hint the server sent (client side; "" if none).
	Hint string
}

// Conn is a TLS 1.3 or TLS 1.2 PSK connection over a net.Conn. Read and Write may be
// called from different goroutines; Close may be called at any time.
type Conn struct {
	conn     net.Conn
	isClient bool
	cfg      *Config
	ccfg     *ClientConfig

	// hsFragment, when not 0, cuts handshake messages into records of at most that many
	// bytes; tests use it to prove the peer's reassembly.
	hsFragment int

	hsMu   sync.Mutex
	hsDone atomic.Bool
	hsErr  error
	state  State

	// tls13 is set once TLS 1.3 is negotiated; suite13 is its suite, kept for KeyUpdate.
	tls13   bool
	suite13 *suite

	in  inHalf
	out outHalf
}

// inHalf is the reading direction. Its mutex is held by Read and by the handshake.
type inHalf struct {
	mu            sync.Mutex
	cipher        recordCipher
	seq           uint64
	strictVersion bool    // a version was negotiated: every record must carry 0x0303
	sawRecord     bool    // the first record has been checked for "is this TLS at all"
	finishedNext  bool    // the next protected record is the peer's Finished
	raw           []byte  // from recordBufPool once the handshake is over; nil when drained
	rawp          *[]byte // raw's pool entry, nil when raw is not pooled
	rawOff        int     // raw[rawOff:] is received but not yet consumed
	plain         []byte  // application data decrypted but not yet returned
	hs            []byte  // handshake bytes not yet parsed into messages
	idle          int
	err           error // sticky

	// TLS 1.3.
	ccsOK      bool          // a middlebox-compatibility ChangeCipherSpec may come (RFC 8446 §5)
	skipEarly  bool          // refused early data may come (RFC 8446 §4.2.10)
	earlyBytes int           // early data skipped so far
	secret     [hashLen]byte // traffic secret, for KeyUpdate; inline, no allocation

	// nonblock, set by TryRead, makes fill read the socket through sock, without waiting
	// (ErrWouldBlock). sock.Conn is set by the first TryRead.
	nonblock bool
	sock     sockio.TryReader
}

// outHalf is the writing direction. Its mutex is held by Write, alerts and Close.
type outHalf struct {
	mu     sync.Mutex
	cipher recordCipher
	seq    uint64
	buf    []byte // records waiting to be written
	err    error  // sticky
	closed bool   // close_notify sent

	// TLS 1.3.
	secret  [hashLen]byte // traffic secret, for KeyUpdate; inline, no allocation
	maxFrag int           // the peer's record_size_limit less the content type; 0: 2^14
}

// NetConn returns the underlying connection. Writing to it or reading from it directly
// corrupts the TLS session.
func (c *Conn) NetConn() net.Conn { return c.conn }

// LocalAddr returns the local network address.
func (c *Conn) LocalAddr() net.Addr { return c.conn.LocalAddr() }

// RemoteAddr returns the remote network address.
func (c *Conn) RemoteAddr() net.Addr { return c.conn.RemoteAddr() }

// SetDeadline sets the read and write deadlines of the underlying connection. A Write that
// times out leaves the connection unusable (a record may be half written); a Read that
// times out may be retried.
func (c *Conn) SetDeadline(t time.Time) error { return c.conn.SetDeadline(t) }

// SetReadDeadline sets the read deadline of the underlying connection.
func (c *Conn) SetReadDeadline(t time.Time) error { return c.conn.SetReadDeadline(t) }

// SetWriteDeadline sets the write deadline of the underlying connection.
func (c *Conn) SetWriteDeadline(t time.Time) error { return c.conn.SetWriteDeadline(t) }

// ConnectionState returns the parameters of the session. It waits for a handshake in
// progress.
func (c *Conn) ConnectionState() State {
	c.hsMu.Lock()
	defer c.hsMu.Unlock()
	st := c.state
	st.HandshakeComplete = c.hsDone.Load()
	return st
}

// Handshake runs the handshake if it has not run yet; see HandshakeContext.
func (c *Conn) Handshake() error { return c.HandshakeContext(context.Background()) }

// HandshakeContext runs the handshake if it has not run yet and returns its result; Read
// and Write call it implicitly. The caller bounds it with a deadline on the connection or
// with ctx: when ctx ends first, the underlying connection is closed and the error has
// Reason "canceled". A failed handshake fails every later call the same way.
func (c *Conn) HandshakeContext(ctx context.Context) (err error) {
	if c.hsDone.Load() {
		return nil
	}
	c.hsMu.Lock()
	defer c.hsMu.Unlock()
	if c.hsErr != nil {
		return c.hsErr
	}
	if c.hsDone.Load() {
		return nil
	}
	defer func() {
		if err != nil {
			c.hsErr = err
		} else {
			c.hsDone.Store(true)
		}
	}()
	if ctx.Err() != nil {
		return &Error{Reason: ReasonCanceled, Err: ctx.Err()}
	}

	// The watcher and the handshake race to settle the outcome exactly once, so a context
	// that ends just as the handshake succeeds cannot close a good connection behind the
	// caller's back, and an interrupted handshake always reports "canceled".
	const running, finished, interrupted = 0, 1, 2
	var outcome atomic.Int32
	if ctx.Done() != nil {
		stop := make(chan struct{})
		exited := make(chan struct{})
		go func() { // watchHandshakeContext
			defer close(exited)
			select {
			case <-ctx.Done():
				if outcome.CompareAndSwap(running, interrupted) {
					c.conn.Close()
				}
			case <-stop:
			}
		}()
		defer func() {
			close(stop)
			<-exited
		}()
	}

	c.in.mu.Lock()
	if c.isClient {
		err = c.clientHandshake()
	} else {
		err = c.serverHandshake()
	}
	c.in.mu.Unlock()
	if !outcome.CompareAndSwap(running, finished) {
		return &Error{Reason: ReasonCanceled, Err: ctx.Err()}
	}
	return err
}

// Read reads application data, running the handshake first if needed. It returns io.EOF
// once the peer sent close_notify. A TCP close without close_notify is an *Error with
// Reason "eof" (the data may be truncated).
func (c *Conn) Read(b []byte) (int, error) {
	if err := c.Handshake(); err != nil {
		return 0, err
	}
	if len(b) == 0 {
		return 0, nil
	}
	c.in.mu.Lock()
	defer c.in.mu.Unlock()
	return c.readLocked(b)
}

// ErrWouldBlock is what TryRead returns when neither the Conn nor its socket has input.
var ErrWouldBlock = sockio.ErrWouldBlock

// TryRead is Read that never waits for the network: when nothing the Conn holds or the
// socket has makes a whole record, it returns 0 and ErrWouldBlock, keeping any part of a
// record for the next call. It needs a completed handshake over a socket (a
// syscall.Conn); without one it is an ordinary Read. A passed read deadline is an error,
// as for Read.
func (c *Conn) TryRead(b []byte) (int, error) {
	if !c.hsDone.Load() || len(b) == 0 {
		return c.Read(b)
	}
	c.in.mu.Lock()
	if c.in.sock.Conn == nil {
		if sc, ok := c.conn.(syscall.Conn); ok {
			if raw, err := sc.SyscallConn(); err == nil {
				c.in.sock.Conn = raw
			}
		}
		if c.in.sock.Conn == nil {
			c.in.mu.Unlock()
			return c.Read(b)
		}
	}
	defer c.in.mu.Unlock()
	c.in.nonblock = true
	defer func() { c.in.nonblock = false }()
	return c.readLocked(b)
}

func (c *Conn) readLocked(b []byte) (int, error) {
	for len(c.in.plain) == 0 {
		if c.in.err != nil {
			return 0, c.in.err
		}
		if err := c.readApplicationRecord(); err != nil {
			if errors.Is(err, ErrWouldBlock) {
				return 0, ErrWouldBlock
			}
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				c.in.err = err
			}
			return 0, err
		}
	}
	n := copy(b, c.in.plain)
	c.in.plain = c.in.plain[n:]
	if len(c.in.plain) == 0 {
		// An empty slice still points into the buffer and would keep it alive: drop it,
		// so an idle session holds no record buffer (the handshake's is not pooled).
		c.in.plain = nil
		c.in.releaseRaw()
	}
	return n, nil
}

// recordBufPool holds record-sized buffers, so that an idle session owns none: Read gives
// its input buffer back once everything in it was consumed, Write its output buffer once
// the records are written.
var recordBufPool = sync.Pool{New: func() any { b := make([]byte, 0, maxRecordBufferLen); return &b }}

// releaseRaw returns the input buffer to the pool when nothing in it is left to read.
// in.mu is held, and in.plain (which aliases raw) is empty.
// The handshake's own buffer, which is not pooled, is simply dropped.
func (in *inHalf) releaseRaw() {
	if in.raw == nil || in.rawOff != len(in.raw) {
		return
	}
	if in.rawp != nil {
		*in.rawp = in.raw[:0]
		recordBufPool.Put(in.rawp)
	}
	in.raw, in.rawp, in.rawOff = nil, nil, 0
}

// Buffered reports how many received bytes the Conn holds that a Read would return or
// decrypt without touching the network. A caller that waits for the socket to become
// readable (see NetConn) must Read first while this is not 0.
func (c *Conn) Buffered() int {
	c.in.mu.Lock()
	defer c.in.mu.Unlock()
	return len(c.in.plain) + len(c.in.raw) - c.in.rawOff
}

// readApplicationRecord reads one record after the handshake and acts on it.
func (c *Conn) readApplicationRecord() error {
	if len(c.in.hs) > 0 {
		if err := c.postHandshakeMessage(); err != nil {
			return err
		}
	}
	typ, data, err := c.readRecord()
	if err != nil {
		return err
	}
	switch typ {
	case recordTypeApplicationData:
		if len(data) == 0 {
			return c.idleRecord()
		}
		c.in.idle = 0
		c.in.plain = data
		return nil
	case recordTypeAlert:
		return c.handleAlert(data, true)
	case recordTypeHandshake:
		c.in.hs = append(c.in.hs, data...)
		return c.postHandshakeMessage()
	default:
		return c.fatal(ReasonUnexpectedMessage, alertUnexpectedMessage, errors.New("change_cipher_spec after the handshake"))
	}
}

// postHandshakeMessage handles handshake bytes after the handshake: a server refuses a new
// ClientHello (renegotiation), a client answers HelloRequest with no_renegotiation.
func (c *Conn) postHandshakeMessage() error {
	if c.tls13 {
		return c.postHandshake13()
	}
	for len(c.in.hs) > 0 {
		if !c.isClient && c.in.hs[0] == typeClientHello {
			// RFC 5746 §4.4 / RFC 5246 §7.2.2: refuse with the no_renegotiation warning.
			c.sendAlert(alertLevelWarning, alertNoRenegotiation)
			c.in.hs = nil
			return &Error{Reason: ReasonRenegotiationRefused, Alert: alertNoRenegotiation,
				Err: errors.New("client sent a ClientHello after the handshake")}
		}
		if c.isClient && c.in.hs[0] == typeHelloRequest {
			if len(c.in.hs) < handshakeHeaderLen {
				return nil // wait for the rest of the header
			}
			if c.in.hs[1] != 0 || c.in.hs[2] != 0 || c.in.hs[3] != 0 {
				return c.fatal(ReasonMalformedHandshake, alertDecodeError, fmt.Errorf("%w HelloRequest", errMalformed))
			}
			c.in.hs = c.in.hs[handshakeHeaderLen:]
			c.sendAlert(alertLevelWarning, alertNoRenegotiation)
			if err := c.idleRecord(); err != nil {
				return err
			}
			continue
		}
		return c.fatal(ReasonUnexpectedMessage, alertUnexpectedMessage,
			fmt.Errorf("handshake message %d after the handshake", c.in.hs[0]))
	}
	c.in.hs = nil
	return nil
}

func (c *Conn) idleRecord() error {
	c.in.idle++
	if c.in.idle > maxIdleRecords {
		return c.fatal(ReasonUnexpectedMessage, alertUnexpectedMessage, errors.New("too many records without data"))
	}
	return nil
}

// handleAlert acts on a received alert record. Warnings are ignored; close_notify is
// io.EOF after the handshake; anything else ends the connection with a remote *Error.
func (c *Conn) handleAlert(data []byte, established bool) error {
	if len(data) != 2 {
		return c.fatal(ReasonUnexpectedMessage, alertDecodeError, errors.New("alert record is not 2 bytes"))
	}
	level, desc := data[0], data[1]
	if c.tls13 && desc != alertCloseNotify && desc != alertUserCanceled {
		level = alertLevelFatal // RFC 8446 §6: the level is ignored, all errors are fatal
	}
	if desc == alertCloseNotify {
		if established {
			return io.EOF
		}
		return &Error{Reason: AlertName(desc), Alert: desc, Remote: true}
	}
	if level == alertLevelWarning {
		return c.idleRecord()
	}
	c.setOutErr(errPeerAlert)
	return &Error{Reason: AlertName(desc), Alert: desc, Remote: true}
}

var (
	errPeerAlert    = errors.New("tlspsk: connection ended by the peer's alert")
	errLocalAlert   = errors.New("tlspsk: connection failed (fatal alert sent)")
	errSeqExhausted = errors.New("sequence number exhausted")
)

// fatal sends a fatal alert (if alert is not 0) and returns the matching *Error.
func (c *Conn) fatal(reason string, alert uint8, err error) error {
	if alert != 0 {
		c.sendAlert(alertLevelFatal, alert)
	}
	return &Error{Reason: reason, Alert: alert, Err: err}
}

func (c *Conn) setOutErr(err error) {
	c.out.mu.Lock()
	if c.out.err == nil {
		c.out.err = err
	}
	c.out.mu.Unlock()
}

// sendAlert writes an alert record; errors are ignored (the connection is failing anyway,
// or the alert is only a courtesy).
func (c *Conn) sendAlert(level, desc uint8) {
	c.out.mu.Lock()
	defer c.out.mu.Unlock()
	c.sendAlertLocked(level, desc)
}

func (c *Conn) sendAlertLocked(level, desc uint8) error {
	if c.out.err != nil {
		return c.out.err
	}
	c.out.buf = c.appendRecord(c.out.buf[:0], recordTypeAlert, []byte{level, desc})
	err := c.flushLocked()
	if level == alertLevelFatal && c.out.err == nil {
		c.out.err = errLocalAlert
	}
	return err
}

// readRecord reads and, once keys are in use, authenticates one record. The returned data
// aliases the input buffer and is valid until the next readRecord. in.mu must be held.
// In TLS 1.3 it returns the inner content type, and silently drops what RFC 8446 says to
// drop: the middlebox-compatibility ChangeCipherSpec during the handshake (§5) and the
// client's refused early data (§4.2.10).
func (c *Conn) readRecord() (uint8, []byte, error) {
	for {
		typ, data, skip, err := c.readOneRecord()
		if err != nil || !skip {
			return typ, data, err
		}
	}
}

func (c *Conn) readOneRecord() (typ uint8, data []byte, skip bool, err error) {
	in := &c.in
	if err := c.fill(recordHeaderLen); err != nil {
		return 0, nil, false, err
	}
	hdr := in.raw[in.rawOff : in.rawOff+recordHeaderLen]
	typ, major := hdr[0], hdr[1]
	version := uint16(hdr[1])<<8 | uint16(hdr[2])
	n := int(hdr[3])<<8 | int(hdr[4])
	if !in.sawRecord {
		in.sawRecord = true
		if !c.isClient && (typ != recordTypeHandshake || major != 3) {
			return 0, nil, false, &Error{Reason: ReasonNotTLS, Err: errors.New("first bytes are not a TLS handshake record")}
		}
	}
	if typ < recordTypeChangeCipherSpec || typ > recordTypeApplicationData {
		return 0, nil, false, c.fatal(ReasonUnexpectedMessage, alertUnexpectedMessage, fmt.Errorf("record of unknown type %d", typ))
	}
	if major != 3 || (in.strictVersion && version != VersionTLS12) {
		return 0, nil, false, c.fatal(ReasonProtocolVersion, alertProtocolVersion, fmt.Errorf("record version 0x%04X", version))
	}
	// In TLS 1.3 a ChangeCipherSpec, and during the handshake an alert, may come in the
	// clear while keys are in use (RFC 8446 §5); everything else must be protected.
	protected := in.cipher != nil && !(c.tls13 && (typ == recordTypeChangeCipherSpec || typ == recordTypeAlert && in.ccsOK))
	limit := maxPlaintext
	switch {
	case protected && c.tls13:
		limit = maxPlaintext + 256 // RFC 8446 §5.2
	case protected:
		limit = maxCiphertext
	case in.skipEarly && typ == recordTypeApplicationData:
		limit = maxPlaintext + 256 // early data protected with keys this side never has
	}
	if n > limit {
		return 0, nil, false, c.fatal(ReasonRecordOverflow, alertRecordOverflow, fmt.Errorf("record of %d bytes", n))
	}
	if err := c.fill(recordHeaderLen + n); err != nil {
		return 0, nil, false, err
	}
	hdr = in.raw[in.rawOff : in.rawOff+recordHeaderLen]
	data = in.raw[in.rawOff+recordHeaderLen : in.rawOff+recordHeaderLen+n]
	in.rawOff += recordHeaderLen + n
	if c.tls13 && typ == recordTypeChangeCipherSpec {
		// RFC 8446 §5: dropped between the first ClientHello and the peer's Finished, an
		// unexpected_message anywhere else or with any other body.
		if !in.ccsOK || len(data) != 1 || data[0] != 1 {
			return 0, nil, false, c.fatal(ReasonUnexpectedMessage, alertUnexpectedMessage, errors.New("change_cipher_spec outside the TLS 1.3 handshake"))
		}
		return 0, nil, true, c.idleRecord()
	}
	if in.skipEarly && typ == recordTypeApplicationData && (in.cipher == nil || c.tls13) {
		if in.cipher != nil {
			if in.seq == math.MaxUint64 {
				return 0, nil, false, c.fatal(ReasonInternal, alertInternalError, errSeqExhausted)
			}
			if pt, err := in.cipher.open(in.seq, hdr, data); err == nil {
				in.skipEarly = false
				in.seq++
				return c.innerPlaintext(pt)
			}
		}
		// Refused 0-RTT data (RFC 8446 §4.2.10): skipped, up to a limit.
		in.earlyBytes += n
		if in.earlyBytes > maxEarlyData {
			return 0, nil, false, c.fatal(ReasonUnexpectedMessage, alertUnexpectedMessage, fmt.Errorf("over %d bytes of refused early data", maxEarlyData))
		}
		return 0, nil, true, nil
	}
	if protected {
		if c.tls13 && typ != recordTypeApplicationData {
			return 0, nil, false, c.fatal(ReasonUnexpectedMessage, alertUnexpectedMessage, fmt.Errorf("unprotected record of type %d", typ))
		}
		if in.seq == math.MaxUint64 {
			return 0, nil, false, c.fatal(ReasonInternal, alertInternalError, errSeqExhausted)
		}
		pt, err := in.cipher.open(in.seq, hdr, data)
		if err != nil {
			if in.finishedNext {
				// The only protected record of a handshake is the Finished: failing to
				// authenticate it means the two sides derived different keys.
				return 0, nil, false, c.fatal(ReasonDecryptError, alertDecryptError,
					errors.New("the peer's Finished does not authenticate (different keys)"))
			}
			return 0, nil, false, c.fatal(ReasonBadRecordMAC, alertBadRecordMAC, err)
		}
		in.seq++
		if c.tls13 {
			return c.innerPlaintext(pt)
		}
		if len(pt) > maxPlaintext {
			return 0, nil, false, c.fatal(ReasonRecordOverflow, alertRecordOverflow, fmt.Errorf("record of %d plaintext bytes", len(pt)))
		}
		data = pt
	}
	in.finishedNext = false
	if len(data) == 0 && typ != recordTypeApplicationData {
		// RFC 5246 §6.2.1: only application data may be sent in empty fragments.
		return 0, nil, false, c.fatal(ReasonUnexpectedMessage, alertUnexpectedMessage, fmt.Errorf("empty record of type %d", typ))
	}
	return typ, data, false, nil
}

// innerPlaintext unwraps a TLS 1.3 TLSInnerPlaintext (RFC 8446 §5.2): content, then the
// real content type, then zero padding.
func (c *Conn) innerPlaintext(pt []byte) (uint8, []byte, bool, error) {
	c.in.finishedNext = false
	if len(pt) > maxPlaintext+1 {
		return 0, nil, false, c.fatal(ReasonRecordOverflow, alertRecordOverflow, fmt.Errorf("record of %d plaintext bytes", len(pt)))
	}
	i := len(pt) - 1
	for i >= 0 && pt[i] == 0 {
		i--
	}
	if i < 0 {
		return 0, nil, false, c.fatal(ReasonUnexpectedMessage, alertUnexpectedMessage, errors.New("protected record without a content type"))
	}
	typ, data := pt[i], pt[:i]
	switch {
	case typ != recordTypeHandshake && typ != recordTypeAlert && typ != recordTypeApplicationData:
		return 0, nil, false, c.fatal(ReasonUnexpectedMessage, alertUnexpectedMessage, fmt.Errorf("protected record of type %d", typ))
	case len(data) == 0 && typ != recordTypeApplicationData:
		return 0, nil, false, c.fatal(ReasonUnexpectedMessage, alertUnexpectedMessage, fmt.Errorf("empty record of type %d", typ))
	}
	return typ, data, false, nil
}

// fill makes sure at least n unconsumed bytes are buffered. It must not be called while
// in.plain still aliases the buffer.
func (c *Conn) fill(n int) error {
	in := &c.in
	if len(in.raw)-in.rawOff >= n {
		return nil
	}
	if in.raw == nil {
		if c.hsDone.Load() {
			in.rawp = recordBufPool.Get().(*[]byte)
			in.raw = (*in.rawp)[:0]
		} else {
			in.raw = make([]byte, 0, maxRecordBufferLen)
		}
	}
	if in.rawOff > 0 {
		m := copy(in.raw[:cap(in.raw)], in.raw[in.rawOff:])
		in.raw = in.raw[:m]
		in.rawOff = 0
	}
	for len(in.raw) < n {
		var m int
		var err error
		if in.nonblock {
			m, err = in.sock.Read(in.raw[len(in.raw):cap(in.raw)])
		} else {
			m, err = c.conn.Read(in.raw[len(in.raw):cap(in.raw)])
		}
		in.raw = in.raw[:len(in.raw)+m]
		if len(in.raw) >= n {
			return nil
		}
		if err != nil {
			if err == ErrWouldBlock {
				in.releaseRaw() // nothing buffered: an idle conn holds no buffer
				return err
			}
			if errors.Is(err, io.EOF) {
				return &Error{Reason: ReasonEOF, Err: io.ErrUnexpectedEOF}
			}
			return &Error{Reason: ReasonIO, Err: err}
		}
	}
	return nil
}

// readHandshakeMessage returns the next complete handshake message, header included.
// in.mu must be held.
func (c *Conn) readHandshakeMessage() ([]byte, error) {
	in := &c.in
	for {
		if len(in.hs) >= handshakeHeaderLen {
			n := int(in.hs[1])<<16 | int(in.hs[2])<<8 | int(in.hs[3])
			if n > maxHandshakeLen {
				return nil, c.fatal(ReasonMalformedHandshake, alertDecodeError,
					fmt.Errorf("handshake message of %d bytes is over the %d limit", n, maxHandshakeLen))
			}
			if len(in.hs) >= handshakeHeaderLen+n {
				msg := slices.Clone(in.hs[:handshakeHeaderLen+n])
				in.hs = in.hs[handshakeHeaderLen+n:]
				if len(in.hs) == 0 {
					in.hs = nil
				}
				return msg, nil
			}
		}
		typ, data, err := c.readRecord()
		if err != nil {
			return nil, err
		}
		switch typ {
		case recordTypeHandshake:
			in.idle = 0
			in.hs = append(in.hs, data...)
		case recordTypeAlert:
			if err := c.handleAlert(data, false); err != nil {
				return nil, err
			}
		default:
			return nil, c.fatal(ReasonUnexpectedMessage, alertUnexpectedMessage,
				fmt.Errorf("record of type %d while a handshake message was expected", typ))
		}
	}
}

// readChangeCipherSpec reads the peer's ChangeCipherSpec, which must fall between two
// handshake messages. in.mu must be held.
func (c *Conn) readChangeCipherSpec() error {
	for {
		typ, data, err := c.readRecord()
		if err != nil {
			return err
		}
		switch {
		case typ == recordTypeAlert:
			if err := c.handleAlert(data, false); err != nil {
				return err
			}
			continue
		case typ != recordTypeChangeCipherSpec:
			return c.fatal(ReasonUnexpectedMessage, alertUnexpectedMessage,
				fmt.Errorf("record of type %d while ChangeCipherSpec was expected", typ))
		case len(data) != 1 || data[0] != 1:
			return c.fatal(ReasonUnexpectedMessage, alertDecodeError, errors.New("malformed ChangeCipherSpec"))
		case len(c.in.hs) != 0:
			return c.fatal(ReasonUnexpectedMessage, alertUnexpectedMessage,
				errors.New("ChangeCipherSpec in the middle of a handshake message"))
		}
		return nil
	}
}

// appendRecord appends one record holding frag (at most maxPlaintext bytes), protected if
// the write keys are in use. out.mu must be held.
func (c *Conn) appendRecord(dst []byte, typ uint8, frag []byte) []byte {
	return c.appendRecordVersion(dst, typ, VersionTLS12, frag)
}

func (c *Conn) appendRecordVersion(dst []byte, typ uint8, version uint16, frag []byte) []byte {
	start := len(dst)
	extra := 0
	if c.out.cipher != nil {
		extra = c.out.cipher.overhead()
	}
	dst = slices.Grow(dst, recordHeaderLen+len(frag)+extra)
	if c.tls13 && c.out.cipher != nil {
		// TLSCiphertext (RFC 8446 §5.2): the header claims application data and carries
		// the ciphertext length; the real type ends the inner plaintext. Sealed in place.
		n := len(frag) + extra
		dst = append(dst, recordTypeApplicationData, 3, 3, byte(n>>8), byte(n))
		p := len(dst)
		dst = append(dst, frag...)
		dst = append(dst, typ)
		dst = c.out.cipher.seal(dst[:p], c.out.seq, dst[start:p], dst[p:])
		c.out.seq++
		return dst
	}
	dst = append(dst, typ, byte(version>>8), byte(version), byte(len(frag)>>8), byte(len(frag)))
	if c.out.cipher == nil {
		dst = append(dst, frag...)
	} else {
		hdr := dst[start : start+recordHeaderLen]
		dst = c.out.cipher.seal(dst, c.out.seq, hdr, frag)
		c.out.seq++
		n := len(dst) - start - recordHeaderLen
		dst[start+3], dst[start+4] = byte(n>>8), byte(n)
	}
	return dst
}

// appendRecords fragments data into as many records as needed.
func (c *Conn) appendRecords(dst []byte, typ uint8, data []byte) []byte {
	return c.appendRecordsVersion(dst, typ, VersionTLS12, data)
}

func (c *Conn) appendRecordsVersion(dst []byte, typ uint8, version uint16, data []byte) []byte {
	size := c.maxFragment()
	if typ == recordTypeHandshake && c.hsFragment > 0 {
		size = c.hsFragment
	}
	for len(data) > 0 {
		n := min(len(data), size)
		dst = c.appendRecordVersion(dst, typ, version, data[:n])
		data = data[n:]
	}
	return dst
}

// maxFragment is the most content one record may carry: 2^14, or less when a TLS 1.3
// peer sent record_size_limit (RFC 8449 §4). out.mu must be held.
func (c *Conn) maxFragment() int {
	if c.out.cipher != nil && c.out.maxFrag > 0 {
		return c.out.maxFrag
	}
	return maxPlaintext
}

// flushLocked writes out.buf. A failed write leaves the writing direction broken (part of
// a record may have gone out). out.mu must be held.
func (c *Conn) flushLocked() error {
	if len(c.out.buf) == 0 {
		return nil
	}
	_, err := c.conn.Write(c.out.buf)
	c.out.buf = c.out.buf[:0]
	if err != nil {
		e := &Error{Reason: ReasonIO, Err: err}
		if c.out.err == nil {
			c.out.err = e
		}
		return e
	}
	return nil
}

// Write writes application data, running the handshake first if needed. Data is cut into
// records of at most 16 KiB.
func (c *Conn) Write(b []byte) (int, error) {
	if err := c.Handshake(); err != nil {
		return 0, err
	}
	c.out.mu.Lock()
	defer c.out.mu.Unlock()
	if c.out.err != nil {
		return 0, c.out.err
	}
	if c.out.closed {
		return 0, errShutdown
	}
	written := 0
	bp := recordBufPool.Get().(*[]byte)
	c.out.buf = (*bp)[:0]
	defer func() {
		*bp = c.out.buf[:0] // appendRecord may have grown it
		recordBufPool.Put(bp)
		c.out.buf = nil
	}()
	for len(b) > 0 {
		if c.out.seq == math.MaxUint64 {
			c.out.err = &Error{Reason: ReasonInternal, Err: errSeqExhausted}
			return written, c.out.err
		}
		if c.tls13 && c.out.seq >= maxRecordsPerKey {
			// RFC 8446 §5.5: change keys long before AES-GCM's limit of 2^24.5 records.
			if err := c.keyUpdateLocked(false); err != nil {
				return written, err
			}
		}
		n := min(len(b), c.maxFragment())
		c.out.buf = c.appendRecord(c.out.buf[:0], recordTypeApplicationData, b[:n])
		if err := c.flushLocked(); err != nil {
			return written, err
		}
		written += n
		b = b[n:]
	}
	return written, nil
}

// CloseWrite sends close_notify and then half-closes the underlying connection if it can
// (*net.TCPConn can); the peer reads io.EOF while this side may go on reading.
func (c *Conn) CloseWrite() error {
	if !c.hsDone.Load() {
		return errors.New("tlspsk: CloseWrite before the handshake completed")
	}
	if err := c.closeNotify(false); err != nil {
		return err
	}
	if cw, ok := c.conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// Close sends close_notify (if the handshake completed and it was not sent yet, waiting at
// most 5 s) and closes the underlying connection.
func (c *Conn) Close() error {
	if c.hsDone.Load() {
		c.closeNotify(true)
	}
	return c.conn.Close()
}

func (c *Conn) closeNotify(closing bool) error {
	if closing {
		// Unblocks a Write stuck on a peer that does not read, so the lock comes free.
		c.conn.SetWriteDeadline(time.Now().Add(closeNotifyTimeout))
	}
	c.out.mu.Lock()
	defer c.out.mu.Unlock()
	if c.out.closed {
		return nil
	}
	c.out.closed = true
	return c.sendAlertLocked(alertLevelWarning, alertCloseNotify)
}
