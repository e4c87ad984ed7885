package handshake

import (
	"context"
	"crypto/subtle"
	"errors"
	"hash/maphash"
	"net"
	"net/netip"
	"os"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/dtls/v3"
	"github.com/pion/dtls/v3/pkg/protocol/extension"
	dtlshs "github.com/pion/dtls/v3/pkg/protocol/handshake"
	"github.com/pion/dtls/v3/pkg/protocol/recordlayer"

	"github.com/mqtls/mqtls/handshake/tlspsk"
)

// The DTLS front: mqtls's own UDP socket in front of pion. It sees every datagram before
// pion does and decides how much state a source address gets:
//
//   - A datagram from an unknown address gets state only if it is a ClientHello without a
//     cookie, at least as large as the HelloVerifyRequest it will cause. Anything else is
//     dropped with no state at all.
//   - Such an address is "unproven": it gets a pion conn (which answers with a
//     HelloVerifyRequest) in a table of at most MaxUnproven entries, for at most
//     UnprovenTimeout; when the table is full, the oldest unproven entry is dropped once
//     it is unprovenMinAge old, and until then new hellos are shed. A spoofed source
//     never answers, so a flood only churns this table.
//   - When pion is behind answering (maxPending hellos not yet answered), new hellos are
//     shed too, so that work never queues up in front of a device's hello. A shed address
//     that asks again within seconds (a device retransmitting) gets in regardless.
//   - The front reads the cookie from pion's HelloVerifyRequest as it goes out. When the
//     address sends a ClientHello carrying that cookie, it has proven it receives at the
//     address: it leaves the table, can no longer be displaced, and only then does Accept
//     hand it to the caller (whose handshake slots it then takes).
//
// pion cannot do a stateless cookie (its cookie is a random value kept in its conn, and
// its message sequence cannot start after a HelloVerifyRequest it did not send), so
// bounded, short-lived unproven state is the cheapest design that pion allows.

// Defaults for the unproven table.
const (
	// DefaultMaxUnproven bounds the addresses waiting to return their cookie. An entry
	// is safe for unprovenMinAge, so new unproven state is made at most
	// MaxUnproven/unprovenMinAge times a second (16,000/s), and the table's memory is
	// bounded by (MaxUnproven + maxPending) × the cost of one pion conn waiting for its
	// cookie (about 34 KiB of heap and goroutine stacks): 150 MiB.
	DefaultMaxUnproven = 4096
	// DefaultUnprovenTimeout is how long an address may take to return its cookie when
	// the table is not full.
	DefaultUnprovenTimeout = 3 * time.Second
)

// Reasons for datagrams and records the front drops or notes, passed to DTLSConfig.OnDrop.
const (
	// DropNotClientHello: a datagram from an unknown address that is not a ClientHello
	// without a cookie (no state is created for it).
	DropNotClientHello = "dtls_not_client_hello"
	// DropStaleCookie: a ClientHello with a cookie from an address that holds no state
	// (its unproven entry expired or was displaced, or the cookie was never issued).
	DropStaleCookie = "dtls_stale_cookie"
	// DropSmallHello: a ClientHello smaller than the HelloVerifyRequest it would cause.
	DropSmallHello = "dtls_hello_too_small"
	// DropUnprovenEvicted: an unproven address displaced by a newer one (the table was
	// full), its state freed.
	DropUnprovenEvicted = "dtls_unproven_evicted"
	// DropUnprovenExpired: an unproven address that did not return its cookie within
	// UnprovenTimeout, its state freed.
	DropUnprovenExpired = "dtls_unproven_expired"
	// DropBusy: a cookieless ClientHello shed without state because pion has not yet
	// answered maxPending earlier ones (the CPU is saturated).
	DropBusy = "dtls_unproven_busy"
	// DropFull: a cookieless ClientHello shed without state because the unproven table
	// is full of entries younger than unprovenMinAge.
	DropFull = "dtls_unproven_full"
	// DropQueueFull: a datagram for a session whose pion conn is not reading fast enough.
	DropQueueFull = "dtls_queue_full"
	// DropAcceptQueueFull: a proven session nobody accepted in time.
	DropAcceptQueueFull = "dtls_accept_queue_full"
	// DropLateRecord: an encrypted record that arrived after a later one of the same
	// session. pion discards it once it has authenticated it (its replay window is one
	// record wide), so MQTT bytes never reach the broker out of order; the count is taken
	// before authentication.
	DropLateRecord = "dtls_record_late"
	// DropProtocolVersion: a cookieless ClientHello whose client_version is older than
	// DTLS 1.2 (DTLS 1.0). It is noted, not dropped: pion answers it with a
	// protocol_version alert and no HelloVerifyRequest, so the address is never proven
	// and no handshake (with its reason) follows; the source address may be spoofed.
	DropProtocolVersion = "dtls_protocol_version"
)

// Record layer constants (RFC 6347 §4.1, RFC 9146 §4).
const (
	recHeaderLen     = 13
	ctHandshake      = 22
	ctConnectionID   = 25
	hsClientHello    = 1
	hsHeaderLen      = 12
	frontQueueLen    = 32 // datagrams waiting for one pion conn
	frontAcceptQueue = 256
	// maxPending bounds the cookieless hellos admitted but not yet answered by pion. Each
	// costs pion about 40 µs of CPU; 256 of them are a few milliseconds of work, so an
	// admitted hello is answered promptly even when hellos come faster than the CPU can
	// answer them, and the excess is shed at the cost of a parse.
	maxPending = 256
	// unprovenMinAge is how long an unproven entry is safe from displacement by a newer
	// one: several round trips on any network a device should be on. With the default
	// MaxUnproven it caps the rate at which new unproven state is made at 16,000/s.
	unprovenMinAge = 250 * time.Millisecond
	// hvrLen is the size of pion's HelloVerifyRequest datagram: record header, handshake
	// header, version (2), cookie length (1), cookie (20).
	hvrLen = recHeaderLen + hsHeaderLen + 3 + 20
)

// clientHelloCookie parses b, a datagram, as a DTLS ClientHello in epoch 0 and returns its
// cookie (empty when it has none). ok is false for anything else. It reads only the first
// record and allocates nothing; the returned cookie aliases b.
func clientHelloCookie(b []byte) (cookie []byte, ok bool) {
	_, cookie, _, ok = clientHelloFields(b)
	return cookie, ok
}

// clientHelloFields is clientHelloCookie's parse, also returning the hello's client_version
// and the rest of its body after the cookie (rest aliases b).
func clientHelloFields(b []byte) (version uint16, cookie, rest []byte, ok bool) {
	if len(b) < recHeaderLen+hsHeaderLen || b[0] != ctHandshake || b[1] != 0xfe {
		return 0, nil, nil, false
	}
	if b[3] != 0 || b[4] != 0 { // epoch 0
		return 0, nil, nil, false
	}
	recLen := int(b[11])<<8 | int(b[12])
	rec := b[recHeaderLen:]
	if recLen > len(rec) {
		return 0, nil, nil, false
	}
	rec = rec[:recLen]
	if len(rec) < hsHeaderLen || rec[0] != hsClientHello {
		return 0, nil, nil, false
	}
	if rec[6] != 0 || rec[7] != 0 || rec[8] != 0 { // fragment_offset 0
		return 0, nil, nil, false
	}
	fragLen := int(rec[9])<<16 | int(rec[10])<<8 | int(rec[11])
	body := rec[hsHeaderLen:]
	if fragLen > len(body) {
		return 0, nil, nil, false
	}
	body = body[:fragLen]
	// client_version (2), random (32), session_id <0..32>, cookie <0..255>.
	const fixed = 2 + 32
	if len(body) < fixed+1 {
		return 0, nil, nil, false
	}
	version = uint16(body[0])<<8 | uint16(body[1])
	sid := int(body[fixed])
	if sid > 32 || len(body) < fixed+1+sid+1 {
		return 0, nil, nil, false
	}
	body = body[fixed+1+sid:]
	n := int(body[0])
	if len(body) < 1+n {
		return 0, nil, nil, false
	}
	return version, body[1 : 1+n], body[1+n:], true
}

// dtlsVersion12 is DTLS 1.2's wire version. DTLS versions count down (RFC 6347 §4.1: 1.0
// is 0xfeff), so a client_version above it is older.
const dtlsVersion12 = 0xfefd

// helloVerdict names why the ClientHello in b cannot succeed against a server offering
// suites, in the terms TLS listeners use: protocol_version if the client's newest version
// is older than DTLS 1.2, no_shared_cipher if it offers none of suites; "" if neither, or
// if b does not parse (pion's own refusal then stands). It allocates nothing.
func helloVerdict(b []byte, suites []dtls.CipherSuiteID) string {
	version, _, rest, ok := clientHelloFields(b)
	if !ok {
		return ""
	}
	if version > dtlsVersion12 {
		return tlspsk.ReasonProtocolVersion
	}
	// cipher_suites <2..2^16-2>: a list that is cut short or odd is pion's to refuse.
	if len(rest) < 2 {
		return ""
	}
	n := int(rest[0])<<8 | int(rest[1])
	if n%2 != 0 || len(rest) < 2+n {
		return ""
	}
	for list := rest[2 : 2+n]; len(list) >= 2; list = list[2:] {
		id := dtls.CipherSuiteID(uint16(list[0])<<8 | uint16(list[1]))
		for _, s := range suites {
			if s == id {
				return ""
			}
		}
	}
	return tlspsk.ReasonNoSharedCipher
}

// recordSeq returns the epoch and sequence number of the first record in b.
func recordSeq(b []byte) (epoch uint16, seq uint64, ok bool) {
	if len(b) < recHeaderLen {
		return 0, 0, false
	}
	epoch = uint16(b[3])<<8 | uint16(b[4])
	for _, c := range b[5:11] {
		seq = seq<<8 | uint64(c)
	}
	return epoch, seq, true
}

// front owns the UDP socket of a DTLS listener; see the comment at the top of the file.
type front struct {
	pc          *net.UDPConn
	srv         *DTLSServer
	opts        []dtls.ServerOption
	cidLen      int
	maxUnproven int
	ttl         time.Duration
	onDrop      func(reason string)

	accepted chan *DTLSSession
	closing  chan struct{}
	closeErr error
	once     sync.Once
	wg       sync.WaitGroup // the read loop, the janitor, every driver

	mu       sync.Mutex
	byAddr   map[netip.AddrPort]*frontConn
	byCID    map[string]*frontConn
	head     *frontConn // oldest unproven
	tail     *frontConn // newest unproven
	unproven int
	pending  int // unproven entries pion has not answered yet
	peak     int // most unproven entries since the table was last empty
	shed     shedSet
	stopping bool // Close was called: no new state
	closed   bool // the socket is closing: nothing is routed

	stats frontStats
}

type frontStats struct {
	hellos, proven, evicted, expired, dropped atomic.Uint64
}

// FrontStats is a snapshot of a DTLS listener's front socket, for tests, benchmarks and
// metrics.
type FrontStats struct {
	Unproven int    // addresses now waiting to return their cookie
	Sessions int    // proven sessions the front still routes datagrams for
	Hellos   uint64 // cookieless ClientHellos that created unproven state
	Proven   uint64 // addresses that returned their cookie
	Evicted  uint64 // unproven entries displaced by newer ones
	Expired  uint64 // unproven entries that outlived UnprovenTimeout
	Dropped  uint64 // datagrams dropped without state (every OnDrop reason but the two above)
}

func newFront(pc *net.UDPConn, srv *DTLSServer, opts []dtls.ServerOption, cfg DTLSConfig) *front {
	f := &front{
		pc: pc, srv: srv, opts: opts, cidLen: dtlsCIDLen,
		maxUnproven: cfg.MaxUnproven, ttl: cfg.UnprovenTimeout, onDrop: cfg.OnDrop,
		accepted: make(chan *DTLSSession, frontAcceptQueue),
		closing:  make(chan struct{}),
		byAddr:   make(map[netip.AddrPort]*frontConn),
		byCID:    make(map[string]*frontConn),
	}
	if f.maxUnproven <= 0 {
		f.maxUnproven = DefaultMaxUnproven
	}
	if f.ttl <= 0 {
		f.ttl = DefaultUnprovenTimeout
	}
	f.wg.Add(2)
	go f.readLoop()
	go f.janitor()
	return f
}

func (f *front) drop(reason string) {
	if reason != DropUnprovenEvicted && reason != DropUnprovenExpired && reason != DropLateRecord && reason != DropProtocolVersion {
		f.stats.dropped.Add(1)
	}
	if f.onDrop != nil {
		f.onDrop(reason)
	}
}

// readLoop routes every datagram: by connection ID, then by source address, else to new
// unproven state if it is a cookieless ClientHello.
func (f *front) readLoop() {
	defer f.wg.Done()
	buf := make([]byte, 1<<16)
	for {
		n, from, err := f.pc.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue // ICMP-induced errors and the like: the socket is still good
		}
		from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
		f.route(buf[:n], from)
	}
}

func (f *front) route(b []byte, from netip.AddrPort) {
	if len(b) < recHeaderLen {
		f.drop(DropNotClientHello)
		return
	}
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return
	}
	var fc *frontConn
	if b[0] == ctConnectionID && len(b) >= recHeaderLen+f.cidLen {
		fc = f.byCID[string(b[11:11+f.cidLen])]
	}
	if fc == nil {
		fc = f.byAddr[from]
	}
	if fc != nil {
		if !fc.proven {
			cookie, ok := clientHelloCookie(b)
			switch {
			case ok && len(cookie) > 0 && fc.cookie != nil && subtle.ConstantTimeCompare(cookie, fc.cookie) == 1:
				f.promote(fc)
				if fc.session != nil {
					// This is the hello pion negotiates from: what it cannot agree to
					// is named now, as TLS listeners name it.
					fc.session.verdict = helloVerdict(b, f.srv.suites)
				}
			case ok && len(cookie) > 0:
				// The cookie of an earlier HelloVerifyRequest to this address, whose state
				// is gone: pion would end the handshake with access_denied. Dropped, the
				// device answers the newer HelloVerifyRequest instead.
				f.mu.Unlock()
				f.drop(DropStaleCookie)
				return
			case ok:
				fc.hellos++ // a retransmitted hello may be answered again
			}
		}
		late := fc.proven && fc.noteRecord(b)
		f.mu.Unlock()
		if late {
			f.drop(DropLateRecord)
		}
		fc.push(b, from)
		return
	}
	version, cookie, _, ok := clientHelloFields(b)
	switch {
	case f.stopping:
		f.mu.Unlock()
		return
	case !ok:
		f.mu.Unlock()
		f.drop(DropNotClientHello)
		return
	case len(cookie) > 0:
		f.mu.Unlock()
		f.drop(DropStaleCookie)
		return
	case len(b) < hvrLen:
		// The HelloVerifyRequest must never be larger than what caused it.
		f.mu.Unlock()
		f.drop(DropSmallHello)
		return
	}
	// Shed this hello, for the cost of a parse, rather than take state when:
	//   - pion is behind answering the hellos already admitted (the CPU is saturated):
	//     queued work would delay every answer, a real device's too, and the read loop
	//     must keep draining the socket;
	//   - the table is full of entries younger than unprovenMinAge: displacing one that
	//     has been answered strands its device, which keeps sending a cookie nobody
	//     holds any more, while a device whose hello is shed simply sends it again.
	// An address shed a moment ago that asks again (a device retransmits its hello
	// after a second; a spoofed address rarely comes back) gets in regardless, up to a
	// harder bound on pending work.
	now := time.Now()
	busy := f.pending >= maxPending
	full := f.unproven >= f.maxUnproven && now.Sub(f.head.born) < unprovenMinAge
	if (busy || full) && (f.pending >= 4*maxPending || !f.shed.seen(from)) {
		f.shed.mark(from)
		f.mu.Unlock()
		if busy {
			f.drop(DropBusy)
		} else {
			f.drop(DropFull)
		}
		return
	}
	// Displace the oldest entry only if it has had unprovenMinAge; an address let in
	// above instead overflows the table, by at most maxPending.
	var victim *frontConn
	if f.unproven >= f.maxUnproven && (now.Sub(f.head.born) >= unprovenMinAge || f.unproven >= f.maxUnproven+maxPending) {
		victim = f.head
		f.forget(victim)
	}
	fc = &frontConn{f: f, addr: from, udpAddr: net.UDPAddrFromAddrPort(from), born: now, hellos: 1,
		notify: make(chan struct{}, 1), closed: make(chan struct{})}
	f.byAddr[from] = fc
	f.link(fc)
	f.pending++
	f.wg.Add(1)
	f.mu.Unlock()
	f.stats.hellos.Add(1)
	if victim != nil {
		f.stats.evicted.Add(1)
		victim.shut()
		f.drop(DropUnprovenEvicted)
	}
	if version > dtlsVersion12 {
		f.drop(DropProtocolVersion)
	}
	fc.push(b, from)
	go fc.drive()
}

// promote makes fc proven: out of the unproven table, into the accept queue. f.mu is held.
func (f *front) promote(fc *frontConn) {
	f.unlink(fc)
	fc.proven = true
	f.stats.proven.Add(1)
	fc.session = &DTLSSession{fc: fc, done: make(chan struct{})}
	select {
	case f.accepted <- fc.session:
	default:
		// Nobody accepts: drive closes the conn, as for one never proven.
		fc.session = nil
		f.forget(fc)
		go fc.shut()
		go f.drop(DropAcceptQueueFull)
	}
}

// link appends fc to the unproven list; unlink removes it. f.mu is held.
func (f *front) link(fc *frontConn) {
	fc.prev, fc.next = f.tail, nil
	if f.tail != nil {
		f.tail.next = fc
	} else {
		f.head = fc
	}
	f.tail = fc
	f.unproven++
	fc.linked = true
}

func (f *front) unlink(fc *frontConn) {
	if !fc.linked {
		return
	}
	if fc.prev != nil {
		fc.prev.next = fc.next
	} else {
		f.head = fc.next
	}
	if fc.next != nil {
		fc.next.prev = fc.prev
	} else {
		f.tail = fc.prev
	}
	fc.prev, fc.next, fc.linked = nil, nil, false
	f.unproven--
}

// answered notes that fc has had its HelloVerifyRequest (or never will). f.mu is held.
func (f *front) answered(fc *frontConn) {
	if !fc.answered {
		fc.answered = true
		f.pending--
	}
}

// forget removes fc from every table. f.mu is held.
func (f *front) forget(fc *frontConn) {
	f.answered(fc)
	f.unlink(fc)
	if f.byAddr[fc.addr] == fc {
		delete(f.byAddr, fc.addr)
	}
	if fc.cid != "" && f.byCID[fc.cid] == fc {
		delete(f.byCID, fc.cid)
	}
}

// janitor frees unproven entries older than the timeout, so that after a flood the
// table, and the memory behind it, empties even when no datagram arrives.
func (f *front) janitor() {
	defer f.wg.Done()
	t := time.NewTicker(max(f.ttl/4, 10*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-f.closing:
			return
		case now := <-t.C:
			var old []*frontConn
			f.mu.Lock()
			f.shed.rotate(now)
			for f.head != nil && now.Sub(f.head.born) >= f.ttl {
				fc := f.head
				f.forget(fc)
				old = append(old, fc)
			}
			f.peak = max(f.peak, f.unproven)
			drained := f.unproven == 0 && f.peak >= f.maxUnproven/4
			if drained {
				f.peak = 0
			}
			f.mu.Unlock()
			if drained {
				// A flood has ended. Its garbage would go back to the OS over minutes;
				// give it back now, once, so that the process returns to its size.
				f.wg.Add(1)
				go func() {
					defer f.wg.Done()
					time.Sleep(time.Second) // the drivers of the last entries finish
					debug.FreeOSMemory()
				}()
			}
			for _, fc := range old {
				f.stats.expired.Add(1)
				fc.shut()
				f.drop(DropUnprovenExpired)
			}
		}
	}
}

func (f *front) snapshot() FrontStats {
	f.mu.Lock()
	st := FrontStats{Unproven: f.unproven, Sessions: len(f.byAddr) - f.unproven}
	f.mu.Unlock()
	st.Hellos, st.Proven = f.stats.hellos.Load(), f.stats.proven.Load()
	st.Evicted, st.Expired, st.Dropped = f.stats.evicted.Load(), f.stats.expired.Load(), f.stats.dropped.Load()
	return st
}

// Accept returns the next session whose address has returned its cookie. Its handshake
// is already running; DTLSServer.Handshake waits for it.
func (f *front) Accept() (net.Conn, error) {
	select {
	case s := <-f.accepted:
		return s, nil
	case <-f.closing:
		return nil, net.ErrClosed
	}
}

// Close stops the listener and frees every unproven entry and every session not yet
// accepted. Accepted sessions stay up (as with net.Listener), routed by the read loop
// until they end; the socket closes when the last of them has.
func (f *front) Close() error {
	f.once.Do(func() {
		close(f.closing)
		f.mu.Lock()
		f.stopping = true
		var shut []*frontConn
		for fc := f.head; fc != nil; fc = fc.next {
			shut = append(shut, fc)
		}
		for _, fc := range shut {
			f.forget(fc)
		}
		f.mu.Unlock()
		for _, fc := range shut {
			fc.shut()
		}
		for {
			select {
			case s := <-f.accepted:
				go s.Close()
				continue
			default:
			}
			break
		}
		go f.closeWhenIdle()
	})
	return nil
}

// closeWhenIdle closes the socket once no session is left on it. The listener's Close
// returns at once, as net.Listener's does.
func (f *front) closeWhenIdle() {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		f.mu.Lock()
		idle := len(f.byAddr) == 0 && len(f.byCID) == 0
		if idle {
			f.closed = true
		}
		f.mu.Unlock()
		if idle {
			break
		}
		<-t.C
	}
	f.pc.Close()
}

func (f *front) Addr() net.Addr { return f.pc.LocalAddr() }

// frontConn is one source address (or connection ID) as pion sees it: a net.PacketConn
// whose ReadFrom returns the datagrams the front routed to it.
type frontConn struct {
	f       *front
	addr    netip.AddrPort
	udpAddr *net.UDPAddr
	born    time.Time

	// Guarded by f.mu.
	prev, next *frontConn
	linked     bool
	proven     bool
	answered   bool   // pion has sent its HelloVerifyRequest (or fc is gone)
	cookie     []byte // from pion's HelloVerifyRequest
	hellos     int    // ClientHellos received while unproven: HelloVerifyRequests allowed
	hvrs       int    // HelloVerifyRequests sent
	cid        string // the connection ID pion gave the peer
	maxRec     uint64 // highest epoch<<48|seq seen in an encrypted record
	session    *DTLSSession

	qmu      sync.Mutex
	q        []datagram
	notify   chan struct{} // a datagram was queued, or the deadline changed
	closed   chan struct{}
	shutOnce sync.Once
	deadline time.Time
	dlTimer  *time.Timer
}

type datagram struct {
	b    []byte
	from netip.AddrPort
}

// noteRecord reports whether the first record of b, if encrypted (epoch ≥ 1), comes after
// a later one already seen. f.mu is held.
func (fc *frontConn) noteRecord(b []byte) bool {
	epoch, seq, ok := recordSeq(b)
	if !ok || epoch == 0 {
		return false
	}
	k := uint64(epoch)<<48 | seq
	if k <= fc.maxRec {
		return true
	}
	fc.maxRec = k
	return false
}

func (fc *frontConn) push(b []byte, from netip.AddrPort) {
	fc.qmu.Lock()
	select {
	case <-fc.closed:
		fc.qmu.Unlock()
		return
	default:
	}
	if len(fc.q) >= frontQueueLen {
		fc.qmu.Unlock()
		fc.f.drop(DropQueueFull)
		return
	}
	fc.q = append(fc.q, datagram{b: append([]byte(nil), b...), from: from})
	fc.qmu.Unlock()
	select {
	case fc.notify <- struct{}{}:
	default:
	}
}

// shut ends fc's reads, which ends pion's handshake on it; drive then closes the conn.
func (fc *frontConn) shut() {
	fc.shutOnce.Do(func() {
		fc.qmu.Lock()
		close(fc.closed)
		fc.q = nil
		if fc.dlTimer != nil {
			fc.dlTimer.Stop()
		}
		fc.qmu.Unlock()
	})
}

// drive creates the pion conn and runs its handshake, from the first ClientHello on. The
// caller of DTLSServer.Handshake waits for the result.
func (fc *frontConn) drive() {
	f := fc.f
	defer f.wg.Done()
	dc, err := dtls.ServerWithOptions(fc, fc.udpAddr, f.opts...)
	if err == nil {
		err = dc.HandshakeContext(context.Background())
	}
	f.mu.Lock()
	s := fc.session
	if s == nil || dc == nil {
		f.forget(fc)
	}
	f.mu.Unlock()
	if s == nil || dc == nil {
		fc.shut()
	}
	if s == nil {
		// Never proven: nobody will accept it.
		if dc != nil {
			dc.Close()
		}
		return
	}
	s.conn, s.err = dc, err
	close(s.done)
}

// ReadFrom returns the next datagram routed to fc, honouring the read deadline (pion
// cancels reads by setting one in the past).
func (fc *frontConn) ReadFrom(p []byte) (int, net.Addr, error) {
	for {
		fc.qmu.Lock()
		if len(fc.q) > 0 {
			d := fc.q[0]
			fc.q[0] = datagram{}
			fc.q = fc.q[1:]
			if len(fc.q) == 0 {
				fc.q = nil
			}
			fc.qmu.Unlock()
			n := copy(p, d.b)
			if d.from == fc.addr {
				return n, fc.udpAddr, nil
			}
			return n, net.UDPAddrFromAddrPort(d.from), nil
		}
		select {
		case <-fc.closed:
			fc.qmu.Unlock()
			return 0, nil, net.ErrClosed
		default:
		}
		var expired <-chan time.Time
		if !fc.deadline.IsZero() {
			d := time.Until(fc.deadline)
			if d <= 0 {
				fc.qmu.Unlock()
				return 0, nil, os.ErrDeadlineExceeded
			}
			t := time.NewTimer(d)
			defer t.Stop()
			expired = t.C
		}
		fc.qmu.Unlock()
		select {
		case <-fc.notify:
		case <-fc.closed:
		case <-expired:
		}
	}
}

// WriteTo sends b to addr. While fc is unproven, it reads the cookie from pion's
// HelloVerifyRequest and sends at most one per ClientHello received (no amplification);
// once proven, it reads the connection ID from pion's ServerHello so that records
// carrying it are routed here from any address.
func (fc *frontConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	select {
	case <-fc.closed:
		return 0, net.ErrClosed
	default:
	}
	f := fc.f
	f.mu.Lock()
	if !fc.proven {
		if fc.hvrs >= fc.hellos {
			f.mu.Unlock()
			return len(b), nil // pion's retransmission timer: the peer has not asked again
		}
		fc.hvrs++
		if fc.cookie == nil {
			fc.cookie = hvrCookie(b)
			f.answered(fc)
		}
	} else if fc.cid == "" && f.cidLen > 0 {
		if cid, ok := serverHelloCID(b); ok && len(cid) == f.cidLen {
			fc.cid = string(cid)
			f.byCID[fc.cid] = fc
		}
	}
	f.mu.Unlock()
	ua, ok := addr.(*net.UDPAddr)
	if !ok {
		return 0, &net.AddrError{Err: "not a UDP address", Addr: addr.String()}
	}
	return f.pc.WriteToUDP(b, ua)
}

// hvrCookie returns a copy of the cookie in b, pion's HelloVerifyRequest datagram, or nil.
func hvrCookie(b []byte) []byte {
	const off = recHeaderLen + hsHeaderLen + 2 // record, handshake header, server_version
	if len(b) < off+1 || b[0] != ctHandshake || b[recHeaderLen] != byte(dtlshs.TypeHelloVerifyRequest) {
		return nil
	}
	n := int(b[off])
	if n == 0 || len(b) < off+1+n {
		return nil
	}
	return append([]byte(nil), b[off+1:off+1+n]...)
}

// serverHelloCID returns the connection ID in the ServerHello that starts b, pion's
// datagram, if any.
func serverHelloCID(b []byte) ([]byte, bool) {
	recs, err := recordlayer.UnpackDatagram(b)
	if err != nil || len(recs) == 0 {
		return nil, false
	}
	rec := recs[0]
	if len(rec) < recHeaderLen+hsHeaderLen || rec[0] != ctHandshake || rec[recHeaderLen] != byte(dtlshs.TypeServerHello) {
		return nil, false
	}
	var sh dtlshs.MessageServerHello
	if err := sh.Unmarshal(rec[recHeaderLen+hsHeaderLen:]); err != nil {
		return nil, false
	}
	for _, e := range sh.Extensions {
		if c, ok := e.(*extension.ConnectionID); ok {
			return c.CID, true
		}
	}
	return nil, false
}

// Close is pion closing its conn: fc leaves every table.
func (fc *frontConn) Close() error {
	fc.shut()
	fc.f.mu.Lock()
	fc.f.forget(fc)
	fc.f.mu.Unlock()
	return nil
}

func (fc *frontConn) LocalAddr() net.Addr { return fc.f.pc.LocalAddr() }

func (fc *frontConn) SetDeadline(t time.Time) error { return fc.SetReadDeadline(t) }

func (fc *frontConn) SetReadDeadline(t time.Time) error {
	fc.qmu.Lock()
	fc.deadline = t
	fc.qmu.Unlock()
	select {
	case fc.notify <- struct{}{}:
	default:
	}
	return nil
}

// SetWriteDeadline does nothing: a write to a UDP socket does not block for long.
func (fc *frontConn) SetWriteDeadline(time.Time) error { return nil }

// DTLSSession is a connection from a DTLS listener: an address that has returned its
// cookie, whose handshake runs from the moment it did. DTLSServer.Handshake waits for
// that handshake; the session is a net.Conn only so that a listener can return it, and
// reads and writes on it before Handshake returns fail.
type DTLSSession struct {
	fc   *frontConn
	done chan struct{} // closed when the handshake has ended
	conn *dtls.Conn    // set before done closes; nil if pion refused to start
	err  error
	// verdict is why the hello pion negotiates from cannot succeed (protocol_version,
	// no_shared_cipher), found by the front, or "": pion's errors for these are
	// unexported. Set under f.mu before the session is accepted.
	verdict string
}

var errSessionNotReady = errors.New("DTLS session used before its handshake finished")

func (s *DTLSSession) Read([]byte) (int, error)  { return 0, errSessionNotReady }
func (s *DTLSSession) Write([]byte) (int, error) { return 0, errSessionNotReady }

// Close ends the session: its handshake if it is still running, else its conn (with a
// close_notify, so it must not shut the conn's socket first).
func (s *DTLSSession) Close() error {
	select {
	case <-s.done:
	default:
		s.fc.shut()
		<-s.done
	}
	if s.conn != nil {
		return s.conn.Close()
	}
	return nil
}

func (s *DTLSSession) LocalAddr() net.Addr  { return s.fc.f.pc.LocalAddr() }
func (s *DTLSSession) RemoteAddr() net.Addr { return s.fc.udpAddr }

// The deadlines apply to the secure conn once the handshake has ended; until then the
// context given to DTLSServer.Handshake bounds it, and they are ignored.
func (s *DTLSSession) SetDeadline(t time.Time) error {
	return s.withConn(func(c *dtls.Conn) error { return c.SetDeadline(t) })
}

func (s *DTLSSession) SetReadDeadline(t time.Time) error {
	return s.withConn(func(c *dtls.Conn) error { return c.SetReadDeadline(t) })
}

func (s *DTLSSession) SetWriteDeadline(t time.Time) error {
	return s.withConn(func(c *dtls.Conn) error { return c.SetWriteDeadline(t) })
}

func (s *DTLSSession) withConn(fn func(*dtls.Conn) error) error {
	select {
	case <-s.done:
		if s.conn != nil {
			return fn(s.conn)
		}
	default:
	}
	return nil
}

// shedSet remembers, approximately and in fixed memory, the addresses whose hello was shed
// in the last two to four seconds: two generations of a bitmap indexed by a keyed hash of
// the address (a false positive only lets a hello in under the harder bound).
type shedSet struct {
	seed    maphash.Seed
	gen     [2][]uint64
	rotated time.Time
}

const (
	shedBits  = 1 << 20 // 128 KiB a generation
	shedEvery = 2 * time.Second
)

func (s *shedSet) index(a netip.AddrPort) (int, uint64) {
	if s.gen[0] == nil {
		s.seed = maphash.MakeSeed()
		s.gen[0], s.gen[1] = make([]uint64, shedBits/64), make([]uint64, shedBits/64)
	}
	h := maphash.Comparable(s.seed, a) % shedBits
	return int(h / 64), 1 << (h % 64)
}

func (s *shedSet) mark(a netip.AddrPort) {
	i, bit := s.index(a)
	s.gen[0][i] |= bit
}

func (s *shedSet) seen(a netip.AddrPort) bool {
	i, bit := s.index(a)
	return (s.gen[0][i]|s.gen[1][i])&bit != 0
}

// rotate starts a new generation every shedEvery.
func (s *shedSet) rotate(now time.Time) {
	if s.gen[0] == nil || now.Sub(s.rotated) < shedEvery {
		return
	}
	s.rotated = now
	s.gen[0], s.gen[1] = s.gen[1], s.gen[0]
	clear(s.gen[0])
}
