package dtlsflood

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"syscall"
	"time"
)

// Hello returns a cookieless DTLS 1.2 ClientHello datagram (RFC 6347 §4.2.1) offering
// TLS_PSK_WITH_AES_128_CCM_8, with a random client random. It is 67 bytes: larger than
// a HelloVerifyRequest with a 20-byte cookie (48), as a real device's hello is.
func Hello() []byte {
	body := make([]byte, 0, 64)
	body = append(body, 0xfe, 0xfd) // client_version DTLS 1.2
	var random [32]byte
	_, _ = rand.Read(random[:])
	body = append(body, random[:]...)
	body = append(body, 0)                // session_id <0..32>: empty
	body = append(body, 0)                // cookie <0..2^8-1>: empty
	body = append(body, 0, 2, 0xc0, 0xa8) // cipher_suites: TLS_PSK_WITH_AES_128_CCM_8
	body = append(body, 1, 0)             // compression_methods: null
	hs := make([]byte, 0, 12+len(body))
	hs = append(hs, 1)                                      // msg_type client_hello
	hs = append(hs, 0, byte(len(body)>>8), byte(len(body))) // length
	hs = append(hs, 0, 0)                                   // message_seq 0
	hs = append(hs, 0, 0, 0)                                // fragment_offset
	hs = append(hs, 0, byte(len(body)>>8), byte(len(body))) // fragment_length
	hs = append(hs, body...)
	rec := make([]byte, 0, 13+len(hs))
	rec = append(rec, 22, 0xfe, 0xff)                  // handshake, record version DTLS 1.0 (as clients send)
	rec = append(rec, 0, 0, 0, 0, 0, 0, 0, 0)          // epoch 0, sequence_number 0
	rec = append(rec, byte(len(hs)>>8), byte(len(hs))) // length
	return append(rec, hs...)
}

// Source returns the i-th spoofed source address: 127.1.0.1 onward through 127.0.0.0/8,
// skipping host parts 0 and 255, so that up to 16 million sources are distinct.
func Source(i int) netip.Addr {
	last := byte(1 + i%254)
	i /= 254
	return netip.AddrFrom4([4]byte{127, byte(1 + (i/256)%254), byte(i % 256), last})
}

// Config is one flood.
type Config struct {
	Target   netip.AddrPort // a loopback address
	Rate     int            // hellos per second
	Count    int            // hellos in all
	Sources  int            // distinct source addresses, cycled through; 0 means Count
	First    int            // index of the first source address (see Source)
	NoRaw    bool           // bind a socket per hello even with CAP_NET_RAW
	Deadline time.Duration  // bound on the run; 0 means twice Count/Rate plus a second
}

// Result says what a flood did.
type Result struct {
	Sent    int           // hellos sent
	Errors  int           // sends that failed (a full socket buffer, mostly)
	Sources int           // distinct source addresses used
	Elapsed time.Duration // from the first hello to the last
	Raw     bool          // sent through a raw socket (root), not one bound socket per hello
}

// Run floods cfg.Target. With CAP_NET_RAW it writes the IPv4 and UDP headers itself on one
// raw socket, so that any source address and port costs one sendto; without, it binds a
// UDP socket to each source address for each hello (four system calls a hello, no more
// than one file descriptor at a time).
func Run(ctx context.Context, cfg Config) (Result, error) {
	if !cfg.Target.Addr().Is4() || !cfg.Target.Addr().IsLoopback() {
		return Result{}, fmt.Errorf("flood target %s: want an IPv4 loopback address", cfg.Target)
	}
	if cfg.Rate <= 0 || cfg.Count <= 0 {
		return Result{}, errors.New("flood: rate and count must be positive")
	}
	sources := cfg.Sources
	if sources <= 0 || sources > cfg.Count {
		sources = cfg.Count
	}
	deadline := cfg.Deadline
	if deadline <= 0 {
		deadline = 2*time.Duration(cfg.Count)*time.Second/time.Duration(cfg.Rate) + time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, deadline)
	defer cancel()
	var send sender
	closeFn, raw := func() {}, false
	if !cfg.NoRaw {
		send, closeFn, raw = rawSender(cfg.Target)
	}
	if send == nil {
		send, closeFn = boundSender(cfg.Target)
	}
	defer closeFn()
	res := Result{Sources: sources, Raw: raw}
	hello := Hello()
	start := time.Now()
	// Paced in 1 ms steps: at step k, k×Rate/1000 hellos should have gone.
	for res.Sent+res.Errors < cfg.Count {
		due := int(time.Since(start).Seconds() * float64(cfg.Rate))
		for res.Sent+res.Errors < min(due+1, cfg.Count) {
			i := res.Sent + res.Errors
			// A fresh client random per hello (cheaply: vary its first 8 bytes).
			binary.BigEndian.PutUint64(hello[13+12+2:], uint64(i)^uint64(start.UnixNano()))
			if err := send(hello, Source(cfg.First+i%sources), uint16(1024+i%60000)); err != nil {
				res.Errors++
			} else {
				res.Sent++
			}
		}
		select {
		case <-ctx.Done():
			res.Elapsed = time.Since(start)
			return res, fmt.Errorf("flood stopped after %d of %d hellos: %w", res.Sent+res.Errors, cfg.Count, ctx.Err())
		case <-time.After(time.Millisecond):
		}
	}
	res.Elapsed = time.Since(start)
	return res, nil
}

type sender func(b []byte, src netip.Addr, port uint16) error

// rawSender returns a sender on a raw IPv4 socket, or nil without the privilege.
func rawSender(dst netip.AddrPort) (sender, func(), bool) {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_RAW, syscall.IPPROTO_RAW)
	if err != nil {
		return nil, func() {}, false
	}
	to := &syscall.SockaddrInet4{Addr: dst.Addr().As4()}
	pkt := make([]byte, 0, 2048)
	send := func(b []byte, src netip.Addr, port uint16) error {
		n := 20 + 8 + len(b)
		pkt = pkt[:n]
		// IPv4 header (RFC 791); the kernel fills in the checksum and the total length.
		copy(pkt, []byte{0x45, 0, byte(n >> 8), byte(n), 0, 0, 0x40, 0, 64, syscall.IPPROTO_UDP, 0, 0})
		s, d := src.As4(), dst.Addr().As4()
		copy(pkt[12:16], s[:])
		copy(pkt[16:20], d[:])
		// UDP header (RFC 768); checksum 0 means none, allowed over IPv4.
		binary.BigEndian.PutUint16(pkt[20:], port)
		binary.BigEndian.PutUint16(pkt[22:], dst.Port())
		binary.BigEndian.PutUint16(pkt[24:], uint16(8+len(b)))
		binary.BigEndian.PutUint16(pkt[26:], 0)
		copy(pkt[28:], b)
		return syscall.Sendto(fd, pkt, 0, to)
	}
	return send, func() { syscall.Close(fd) }, true
}

// boundSender returns a sender that binds a fresh UDP socket to each source address.
func boundSender(dst netip.AddrPort) (sender, func()) {
	to := &syscall.SockaddrInet4{Addr: dst.Addr().As4(), Port: int(dst.Port())}
	send := func(b []byte, src netip.Addr, _ uint16) error {
		fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_DGRAM, 0)
		if err != nil {
			return err
		}
		syscall.CloseOnExec(fd)
		defer syscall.Close(fd)
		if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: src.As4()}); err != nil {
			return err
		}
		return syscall.Sendto(fd, b, 0, to)
	}
	return send, func() {}
}
