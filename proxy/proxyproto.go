package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"syscall"

	"github.com/pires/go-proxyproto"
	"github.com/pires/go-proxyproto/tlvparse"

	"github.com/mqtls/mqtls/handshake"
)

// Reasons for refusing a connection from a source trusted to send PROXY headers
// (Config.TrustProxyFrom).
const (
	// ReasonProxyHeader: the header does not parse, or it forwards a client without naming
	// its IP address (v2 PROXY over UNSPEC or a unix socket), which no per-address limit
	// or log could then apply to.
	ReasonProxyHeader = "bad_proxy_header"
	// ReasonProxyHeaderMissing: no header at all. A client reaching mqtls from a trusted
	// address would otherwise pass for the balancer: no per-address rate, and logs naming
	// the balancer. A balancer's own health checks send a LOCAL header (v1: UNKNOWN).
	ReasonProxyHeaderMissing = "proxy_header_missing"
)

// maxProxyHeader bounds how much is peeked for a PROXY header: v1 is at most 107 bytes, and
// a load balancer's v2 header with its TLVs fits easily.
const maxProxyHeader = 1024

// trustsProxy reports whether addr may send a PROXY header.
func trustsProxy(trusted []netip.Prefix, addr net.Addr) bool {
	ip, ok := hostOf(addr)
	if !ok {
		return false
	}
	for _, p := range trusted {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// readProxyHeader reads a PROXY v1 or v2 header from the start of c, consuming exactly its
// bytes, and returns it; it returns nil, nil when c does not start with one, which the
// caller refuses. It peeks first, so on a socket it costs two reads, not one per byte.
func readProxyHeader(c net.Conn) (*proxyproto.Header, error) {
	peeked, err := peek(c, maxProxyHeader)
	if err != nil {
		return nil, err
	}
	if !hasProxySignature(peeked) {
		return nil, nil
	}
	br := bytes.NewReader(peeked)
	bufr := bufio.NewReaderSize(br, len(peeked)+16)
	h, err := proxyproto.Read(bufr)
	if err != nil {
		return nil, fmt.Errorf("parsing PROXY header: %w", err)
	}
	n := len(peeked) - br.Len() - bufr.Buffered()
	if _, err := io.ReadFull(c, make([]byte, n)); err != nil {
		return nil, fmt.Errorf("reading PROXY header: %w", err)
	}
	return h, nil
}

var proxyV2Sig = []byte("\r\n\r\n\x00\r\nQUIT\n")

func hasProxySignature(b []byte) bool {
	return bytes.HasPrefix(b, []byte("PROXY ")) || bytes.HasPrefix(b, proxyV2Sig)
}

// peek returns up to max bytes at the start of c without consuming them, waiting until at
// least one arrives (under c's read deadline).
func peek(c net.Conn, max int) ([]byte, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil, errors.New("PROXY protocol needs a socket connection")
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return nil, err
	}
	buf := make([]byte, max)
	var n int
	var rerr error
	err = raw.Read(func(fd uintptr) bool {
		for {
			n, _, rerr = syscall.Recvfrom(int(fd), buf, syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
			if rerr != syscall.EINTR {
				break
			}
		}
		return rerr != syscall.EAGAIN
	})
	switch {
	case err != nil:
		return nil, err
	case rerr != nil:
		return nil, rerr
	case n == 0:
		return nil, io.EOF
	}
	return buf[:n], nil
}

// proxyHeaderFor builds the PROXY header sent to the broker for a session: the device's
// real address and the address it connected to, and with v2 the TLS TLVs (version, cipher,
// client certificate CN) that brokers reading them use.
func proxyHeaderFor(version string, src, dst net.Addr, id handshake.Identity) ([]byte, error) {
	v := byte(1)
	if version == "v2" {
		v = 2
	}
	h := proxyproto.HeaderProxyFromAddrs(v, src, dst)
	if v == 2 {
		ssl := tlvparse.PP2SSL{Client: tlvparse.PP2_BITFIELD_CLIENT_SSL}
		if id.Kind == handshake.KindCertificate {
			// Verify 0: the certificate was verified by mqtls.
			ssl.Client |= tlvparse.PP2_BITFIELD_CLIENT_CERT_CONN | tlvparse.PP2_BITFIELD_CLIENT_CERT_SESS
			ssl.TLV = append(ssl.TLV, proxyproto.TLV{Type: proxyproto.PP2_SUBTYPE_SSL_CN, Value: []byte(id.CommonName)})
		} else {
			ssl.Verify = 1 // no client certificate
		}
		if name := id.VersionName(); name != "" {
			ssl.TLV = append(ssl.TLV, proxyproto.TLV{Type: proxyproto.PP2_SUBTYPE_SSL_VERSION, Value: []byte(name)})
		}
		if name := id.CipherSuiteName(); name != "" {
			ssl.TLV = append(ssl.TLV, proxyproto.TLV{Type: proxyproto.PP2_SUBTYPE_SSL_CIPHER, Value: []byte(name)})
		}
		tlv, err := ssl.Marshal()
		if err != nil {
			return nil, err
		}
		if err := h.SetTLVs([]proxyproto.TLV{tlv}); err != nil {
			return nil, err
		}
	}
	return h.Format()
}

// realAddr is a connection whose RemoteAddr is the client a PROXY header named. It keeps
// the socket's other methods (SyscallConn, CloseWrite) by embedding it.
type realTCPConn struct {
	*net.TCPConn
	remote net.Addr
}

func (c *realTCPConn) RemoteAddr() net.Addr { return c.remote }

// LocalProxyHeader is the PROXY header ("v1" or "v2") of a connection mqtls makes on its own
// behalf, such as a health check of the broker: LOCAL, naming no client. A broker that
// requires a header from mqtls accepts it without taking the connection for a device's.
func LocalProxyHeader(version string) ([]byte, error) {
	h := &proxyproto.Header{Version: 1, Command: proxyproto.LOCAL, TransportProtocol: proxyproto.UNSPEC}
	if version == "v2" {
		h.Version = 2
	}
	return h.Format()
}
