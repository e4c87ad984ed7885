//go:build linux

package proxy

import (
	"errors"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/mqtls/mqtls/handshake"
	"github.com/mqtls/mqtls/internal/sockio"
)

// A session piped by two goroutines costs two parked stacks while it is idle (about 8 KiB,
// more than its heap), and most sessions of a device fleet are idle. On Linux a session
// whose device and broker sides are both sockets is parked instead: the socket each
// direction reads from waits in one epoll set shared by the process, and a goroutine
// exists only while bytes move. The set itself is registered with the runtime's poller,
// so no thread blocks in epoll_wait.

// poller is the process's epoll set of parked sockets.
type poller struct {
	epfd *os.File        // non-blocking, so the runtime polls it like a socket
	raw  syscall.RawConn // of epfd
	fd   int

	mu    sync.Mutex
	flows map[uint64]*flow // by the token stored in each epoll event
	next  uint64
}

// pollerFailure logs, once, that the epoll set could not be made (sessions then use the
// goroutine pipe, which works, but costs more memory while idle).
var pollerFailure sync.Once

var sharedPoller = sync.OnceValues(newPoller)

func newPoller() (*poller, error) {
	fd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("epoll_create1", err)
	}
	if err := syscall.SetNonblock(fd, true); err != nil {
		syscall.Close(fd)
		return nil, os.NewSyscallError("setnonblock", err)
	}
	f := os.NewFile(uintptr(fd), "mqtls-idle-epoll")
	raw, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, err
	}
	p := &poller{epfd: f, raw: raw, fd: fd, flows: make(map[uint64]*flow)}
	go p.loop()
	return p, nil
}

// loop wakes the flows whose sockets became readable. It never blocks in epoll_wait: the
// runtime's poller tells it when the set has events.
func (p *poller) loop() {
	events := make([]syscall.EpollEvent, 256)
	n := 0
	collect := func(fd uintptr) bool {
		for {
			var err error
			n, err = syscall.EpollWait(int(fd), events, 0)
			if err == syscall.EINTR {
				continue
			}
			if err != nil {
				n = 0
			}
			return n > 0
		}
	}
	for {
		if err := p.raw.Read(collect); err != nil {
			return
		}
		for _, ev := range events[:n] {
			tok := uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
			p.mu.Lock()
			f := p.flows[tok]
			p.mu.Unlock()
			if f != nil {
				f.wake()
			}
		}
	}
}

func (p *poller) add(f *flow) {
	p.mu.Lock()
	p.next++
	f.token = p.next
	p.flows[f.token] = f
	p.mu.Unlock()
}

func (p *poller) remove(f *flow) {
	p.mu.Lock()
	delete(p.flows, f.token)
	p.mu.Unlock()
}

// Flow states. A wake moves parked to running (and starts a goroutine), or marks a running
// flow notified, so that it looks at its socket again rather than park.
const (
	flowRunning int32 = iota
	flowNotified
	flowParked
	flowDone
)

// flow is one direction of a parked session: it reads src without waiting and writes dst,
// and when src has nothing it arms src's socket in the epoll set and its goroutine ends.
type flow struct {
	p     *poller
	token uint64
	state atomic.Int32

	pp    *parkedPipe
	sock  syscall.RawConn // src's socket, armed in the epoll set
	src   net.Conn        // that socket, for its read deadline while lingering
	tr    tryReader       // the device's secure conn; nil: src is the broker's plain socket
	dst   net.Conn
	armMu sync.Mutex
	added bool

	// deadline mirrors src's read deadline (Unix ns, 0 for none), and the timer wakes the
	// flow when it passes: a parked socket does not see its deadline pass, and the
	// runtime's own deadline timer may fire just after ours.
	deadline atomic.Int64
	timerMu  sync.Mutex
	timer    *time.Timer

	n int64

	parkedAt int64 // Unix ns of the last park, 0 before the first; only the runner uses it
}

// wake runs a parked flow, or makes a running one look at its socket again.
func (f *flow) wake() {
	for {
		switch s := f.state.Load(); s {
		case flowParked:
			if f.state.CompareAndSwap(flowParked, flowRunning) {
				go f.run()
				return
			}
		case flowRunning:
			if f.state.CompareAndSwap(flowRunning, flowNotified) {
				return
			}
		default:
			return
		}
	}
}

// setDeadline makes the flow end with a timeout once t has passed with nothing read. The
// caller has set the same deadline on the socket.
func (f *flow) setDeadline(t time.Time) {
	f.deadline.Store(t.UnixNano())
	f.timerMu.Lock()
	defer f.timerMu.Unlock()
	if f.timer == nil {
		f.timer = time.AfterFunc(time.Until(t), f.wake)
		return
	}
	f.timer.Reset(time.Until(t))
}

func (f *flow) expired() bool {
	dl := f.deadline.Load()
	return dl != 0 && time.Now().UnixNano() >= dl
}

// flowBufSize is what a running flow reads before it writes: up to four TLS records of
// plaintext, so that a stream of records costs one write system call per 64 KiB.
const flowBufSize = 64 << 10

var flowBufPool = sync.Pool{New: func() any { b := make([]byte, flowBufSize); return &b }}

// run copies until src has nothing more, then parks, or until the direction ends. It
// gathers what src has ready (while a whole record's plaintext still fits) into one write.
func (f *flow) run() {
	for {
		bp := flowBufPool.Get().(*[]byte)
		buf := *bp
		n := 0
		var err error
		for err == nil && len(buf)-n >= bufSize {
			var k int
			k, err = f.tryRead(buf[n:])
			n += k
		}
		if n > 0 {
			f.active()
			busyKick()
			nw, werr := f.dst.Write(buf[:n])
			f.n += int64(nw)
			if werr != nil {
				flowBufPool.Put(bp)
				f.finish(werr)
				return
			}
		}
		flowBufPool.Put(bp)
		switch {
		case err == nil:
		case errors.Is(err, sockio.ErrWouldBlock) || handshake.IsWouldBlock(err):
			if f.expired() {
				f.finish(&net.OpError{Op: "read", Net: "tcp", Err: os.ErrDeadlineExceeded})
				return
			}
			if f.conversing() && f.linger() {
				continue
			}
			if f.park() {
				return
			}
		default:
			f.finish(endErr(err))
			return
		}
	}
}

// lingerFor is how long a flow in conversation that found nothing waits for more with its
// goroutine before it parks. A session in conversation (a request, its answer, the next
// request) is then woken by the runtime's poller directly, as in the goroutine pipe; the
// epoll set and a new goroutine per wake-up, which cost about 10 µs more per round trip,
// are for sessions that have gone quiet, and most of a fleet's sessions are.
const lingerFor = time.Second

// conversing reports whether the flow was woken less than lingerFor after it last
// parked: then it lingers rather than park again. A session that has just connected parks
// at once, so a reconnect storm does not leave a goroutine per session behind (the
// runtime keeps every goroutine descriptor it ever made, about 0.4 KiB each).
func (f *flow) conversing() bool {
	return f.parkedAt != 0 && time.Now().UnixNano()-f.parkedAt < int64(lingerFor)
}

// linger waits up to lingerFor (or the flow's deadline, if sooner) for src to become
// readable, holding no buffer. It reports whether it did: false means park.
func (f *flow) linger() bool {
	until := time.Now().Add(lingerFor)
	if dl := f.deadline.Load(); dl != 0 && dl < until.UnixNano() {
		until = time.Unix(0, dl)
	}
	if f.src.SetReadDeadline(until) != nil {
		return false
	}
	err := f.sock.Read(peekReady) // bytes, the end of the stream or an error: the read tells
	// Put back the deadline the flow keeps (it may have changed meanwhile: a half-close's
	// close deadline); expired() and the timer stand in for a stale one.
	restore := time.Time{}
	if dl := f.deadline.Load(); dl != 0 {
		restore = time.Unix(0, dl)
	}
	_ = f.src.SetReadDeadline(restore)
	return err == nil
}

// park arms the socket and lets the goroutine go. It returns false when the flow must run
// on instead: it was woken while running, or the socket is closed and cannot be armed.
func (f *flow) park() bool {
	f.parkedAt = time.Now().UnixNano()
	if !f.state.CompareAndSwap(flowRunning, flowParked) {
		f.state.Store(flowRunning) // notified: look again
		return false
	}
	if err := f.arm(); err != nil {
		// Closed under us: read again to see why, unless a wake has taken over already.
		return !f.state.CompareAndSwap(flowParked, flowRunning)
	}
	return true
}

// arm asks for one readability event on the socket (level-triggered, so bytes that came
// before arming count).
func (f *flow) arm() error {
	f.armMu.Lock()
	defer f.armMu.Unlock()
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP | syscall.EPOLLONESHOT}
	ev.Fd, ev.Pad = int32(uint32(f.token)), int32(uint32(f.token>>32))
	op := syscall.EPOLL_CTL_MOD
	if !f.added {
		op = syscall.EPOLL_CTL_ADD
	}
	var cerr error
	err := f.sock.Control(func(fd uintptr) { cerr = syscall.EpollCtl(f.p.fd, op, int(fd), &ev) })
	if err == nil && cerr != nil {
		err = os.NewSyscallError("epoll_ctl", cerr)
	}
	if err == nil {
		f.added = true
	}
	return err
}

func (f *flow) finish(err error) {
	f.state.Store(flowDone)
	f.timerMu.Lock()
	if f.timer != nil {
		f.timer.Stop()
	}
	f.timerMu.Unlock()
	f.armMu.Lock()
	if f.added {
		_ = f.sock.Control(func(fd uintptr) { _ = syscall.EpollCtl(f.p.fd, syscall.EPOLL_CTL_DEL, int(fd), nil) })
	}
	f.armMu.Unlock()
	f.p.remove(f)
	f.pp.ended(f, copyResult{n: f.n, err: err})
}

func (f *flow) tryRead(p []byte) (int, error) {
	if f.tr != nil {
		return f.tr.TryRead(p)
	}
	return f.pp.upRead.Read(p)
}

// active pushes the idle deadline on after bytes from the device (a session's idleness is
// the device's: a broker's keep-alive traffic does not count).
func (f *flow) active() {
	pp := f.pp
	if f != &pp.toUpstream || pp.idle <= 0 || pp.c.closing.Load() {
		return
	}
	t := time.Now().Add(pp.idle)
	_ = pp.c.device.SetReadDeadline(t)
	f.setDeadline(t)
}

// parkedPipe is a parked session's two directions. The flows reach the session through it
// rather than through closures: an idle session should cost as few allocations as can be.
type parkedPipe struct {
	toUpstream, toDevice flow
	left                 atomic.Int32 // directions not yet ended
	results              [2]copyResult

	c          *conn
	device, up net.Conn         // the device's secure conn, the broker's socket
	idle       time.Duration    // the idle timeout, 0 for none
	upRead     sockio.TryReader // toDevice's reader of the broker's socket
}

// ended is a direction's end.
func (pp *parkedPipe) ended(f *flow, r copyResult) {
	c := pp.c
	if f == &pp.toUpstream {
		c.parkedEnd(pp, 0, "device", r, pp.up, pp.device, pp.up, &pp.toDevice)
		return
	}
	c.parkedEnd(pp, 1, "upstream", r, pp.device, pp.up, c.device, &pp.toUpstream)
}

func (pp *parkedPipe) wake() {
	pp.toUpstream.wake()
	pp.toDevice.wake()
}

// parkPipe starts a parked pipe when both sides allow one: the device's secure conn reads
// without waiting (TryRead: TLS or TLS-PSK) over a socket, and the broker side is a socket.
func (c *conn) parkPipe(device, up net.Conn) bool {
	tr, ok := device.(tryReader)
	if !ok {
		return false
	}
	devSock, upSock := rawConn(c.device), rawConn(up)
	if devSock == nil || upSock == nil {
		return false
	}
	p, err := sharedPoller()
	if err != nil {
		pollerFailure.Do(func() {
			c.srv.log.Warn().Err(err).Msg("cannot park idle sessions; each session keeps two goroutines while idle")
		})
		return false
	}
	pp := &parkedPipe{c: c, device: device, up: up, idle: max(c.cfg.IdleTimeout, 0)}
	pp.left.Store(2)
	pp.upRead.Conn = upSock
	pp.toUpstream = flow{p: p, pp: pp, sock: devSock, src: c.device, tr: tr, dst: up}
	pp.toDevice = flow{p: p, pp: pp, sock: upSock, src: up, dst: device}
	pp.toUpstream.active() // the idle timeout runs from the start
	p.add(&pp.toUpstream)
	p.add(&pp.toDevice)
	c.mu.Lock()
	c.park = pp
	aborted := c.aborted
	c.mu.Unlock()
	go pp.toDevice.run()
	go pp.toUpstream.run()
	if aborted { // abort ran before c.park was set: its close needs the flows to look
		pp.wake()
	}
	return true
}

// parkedEnd is a direction's end: the half-close passed on as in the goroutine pipe, the
// other direction woken (its socket may be closed now, or have a close deadline), and,
// after the second direction, the connection finished.
func (c *conn) parkedEnd(pp *parkedPipe, i int, name string, r copyResult, dst, src, other net.Conn, otherFlow *flow) {
	pp.results[i] = r
	c.mu.Lock()
	if c.endedBy == "" {
		c.endedBy = name
	}
	c.mu.Unlock()
	if t, ok := c.halfClose(dst, src, r, other); ok {
		otherFlow.setDeadline(t)
	}
	otherFlow.wake() // its socket may be closed now, which epoll does not report
	if pp.left.Add(-1) == 0 {
		c.settle(pp.results[1], pp.results[0])
		c.finish()
	}
}
