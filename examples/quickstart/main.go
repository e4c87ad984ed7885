// Command quickstart shows what mqtls does, in one process and with nothing to install:
// it makes a throw-away PKI, starts an embedded MQTT broker (mochi-mqtt) on loopback, puts
// mqtls in front of it with mutual TLS and the client ID bound to the certificate's common
// name, and then drives one device through it with paho.golang over MQTT 5:
//
//   - the device with certificate CN "sensor-1", connecting as client ID "sensor-1", is
//     accepted; it subscribes to devices/sensor-1/temp, publishes to it and receives the
//     message back through the broker;
//   - the same device claiming client ID "spoof" is refused by mqtls itself with CONNACK
//     reason 0x85 (client identifier not valid), and the broker never hears of it.
//
// Run it with
//
//	go run ./examples/quickstart
//
// The narrative goes to stdout; mqtls's JSON log (with one "connection" audit line per
// connection, summarized in the narrative) and the broker's warnings go to stderr. It
// exits non-zero if anything does not happen as described.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"slices"
	"time"

	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"
	"github.com/rs/zerolog"

	"github.com/mqtls/mqtls/handshake"
	"github.com/mqtls/mqtls/handshake/handshaketest"
	"github.com/mqtls/mqtls/internal/examplekit"
	"github.com/mqtls/mqtls/policy"
	"github.com/mqtls/mqtls/proxy"
)

const (
	deviceCN = "sensor-1"
	spoofID  = "spoof"
	topic    = "devices/sensor-1/temp"
	payload  = "21.5"

	runTimeout  = time.Minute      // the whole example
	stepTimeout = 10 * time.Second // any single wait: a connect, a message, an audit line
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	ctx, cancel := context.WithTimeout(ctx, runTimeout)
	err := run(ctx, os.Stdout, os.Stderr)
	cancel()
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "quickstart:", err)
		os.Exit(1)
	}
}

// run tells the story on out and writes mqtls's and the broker's logs to logs. It returns
// an error if anything does not go as told, and stops everything it started before
// returning, either way.
func run(ctx context.Context, out, logs io.Writer) (err error) {
	say := func(format string, args ...any) { fmt.Fprintf(out, format+"\n", args...) }

	// 1. A throw-away PKI: one CA that issues both the server's and the device's certificate.
	dir, err := os.MkdirTemp("", "mqtls-quickstart-")
	if err != nil {
		return fmt.Errorf("making a temporary directory: %w", err)
	}
	defer os.RemoveAll(dir)
	p, err := makePKI(dir)
	if err != nil {
		return fmt.Errorf("making the PKI: %w", err)
	}
	say("1. PKI: a throw-away CA issued a server certificate for localhost/127.0.0.1")
	say("   and a device certificate with CN %q (in %s, removed at exit)", deviceCN, dir)

	// 2. A plaintext MQTT broker on loopback, which knows nothing about TLS or identities.
	broker, brokerAddr, seen, err := examplekit.StartBroker(logs)
	if err != nil {
		return fmt.Errorf("starting the broker: %w", err)
	}
	defer func() {
		if cerr := broker.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("stopping the broker: %w", cerr))
		}
	}()
	say("2. broker: mochi-mqtt, plaintext MQTT on %s, allows everyone", brokerAddr)

	// 3. mqtls in front of it: mutual TLS, client ID must equal the certificate's CN.
	audit := examplekit.NewAuditWriter(logs)
	proxyAddr, stopProxy, err := startProxy(p, brokerAddr, audit)
	if err != nil {
		return fmt.Errorf("starting mqtls: %w", err)
	}
	defer func() { err = errors.Join(err, stopProxy()) }()
	say("3. mqtls: mutual TLS on %s -> broker %s", proxyAddr, brokerAddr)
	say("   policy: identity {cn}, client ID enforce (it must equal the certificate's CN)")

	// 4. The honest device: its certificate says sensor-1 and so does its client ID.
	if err := honestDevice(ctx, say, p, proxyAddr); err != nil {
		return err
	}
	if err := sayAudit(ctx, say, audit, proxy.OutcomeForwarded); err != nil {
		return err
	}

	// 5. The same certificate claiming someone else's client ID.
	if err := spoofingDevice(ctx, say, p, proxyAddr); err != nil {
		return err
	}
	if err := sayAudit(ctx, say, audit, proxy.OutcomeRejected); err != nil {
		return err
	}

	ids := seen.IDs()
	if slices.Contains(ids, spoofID) || !slices.Contains(ids, deviceCN) {
		return fmt.Errorf("the broker saw client IDs %q, want only %q", ids, deviceCN)
	}
	say("6. broker: the only client ID it ever saw was %q; the spoofed CONNECT never reached it", deviceCN)
	say("done: stopping mqtls and the broker")
	return nil
}

// pki is the material the example needs, on disk for mqtls and in memory for the device.
type pki struct {
	serverCert, serverKey, caFile string
	device                        tls.Certificate
	roots                         *x509.CertPool
}

func makePKI(dir string) (*pki, error) {
	ca, err := handshaketest.NewCA("mqtls quickstart CA")
	if err != nil {
		return nil, err
	}
	server, err := ca.Issue(handshaketest.Template{
		CommonName:  "localhost",
		DNSNames:    []string{"localhost"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	if err != nil {
		return nil, err
	}
	device, err := ca.Issue(handshaketest.Template{
		CommonName:  deviceCN,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	if err != nil {
		return nil, err
	}
	p := &pki{device: device.TLSCertificate(), roots: ca.Pool()}
	if p.serverCert, p.serverKey, err = server.Files(dir, "server"); err != nil {
		return nil, err
	}
	if p.caFile, err = handshaketest.WriteFile(dir, "ca.crt", ca.CertPEM); err != nil {
		return nil, err
	}
	return p, nil
}

// startProxy starts mqtls on a free loopback port in front of brokerAddr, logging to
// logs. stop shuts it down within stepTimeout and reports anything that went wrong.
func startProxy(p *pki, brokerAddr string, logs io.Writer) (addr string, stop func() error, err error) {
	hs, err := handshake.NewTLSServer(handshake.TLSConfig{
		CertFile:     p.serverCert,
		KeyFile:      p.serverKey,
		ClientCAFile: p.caFile,
		ClientAuth:   handshake.ClientAuthRequire,
	})
	if err != nil {
		return "", nil, err
	}
	pol, err := policy.New(policy.Config{ClientID: policy.ClientIDEnforce})
	if err != nil {
		return "", nil, err
	}
	srv, err := proxy.New(proxy.Config{
		Name:       "quickstart",
		Upstream:   brokerAddr,
		Handshaker: hs,
		Policy:     pol,
		Logger:     zerolog.New(logs).With().Timestamp().Logger(),
	})
	if err != nil {
		return "", nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	stop = func() error {
		ctx, cancel := context.WithTimeout(context.Background(), stepTimeout)
		defer cancel()
		var errs []error
		if err := srv.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("shutting mqtls down: %w", err))
		}
		select {
		case err := <-served:
			if !errors.Is(err, proxy.ErrServerClosed) {
				errs = append(errs, fmt.Errorf("mqtls serving: %w", err))
			}
		case <-ctx.Done():
			errs = append(errs, errors.New("mqtls: Serve did not return after Shutdown"))
		}
		return errors.Join(errs...)
	}
	return ln.Addr().String(), stop, nil
}

// dialDevice opens the device's TLS connection to mqtls, presenting its certificate.
func dialDevice(ctx context.Context, p *pki, addr string) (net.Conn, error) {
	d := tls.Dialer{Config: &tls.Config{
		Certificates: []tls.Certificate{p.device},
		RootCAs:      p.roots,
		ServerName:   "localhost",
		MinVersion:   tls.VersionTLS12,
	}}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("dialing mqtls at %s: %w", addr, err)
	}
	return c, nil
}

// honestDevice connects as the identity its certificate names, then subscribes, publishes
// and waits for its own message to come back through mqtls and the broker.
func honestDevice(ctx context.Context, say func(string, ...any), p *pki, addr string) (err error) {
	ctx, cancel := context.WithTimeout(ctx, stepTimeout)
	defer cancel()
	conn, err := dialDevice(ctx, p, addr)
	if err != nil {
		return err
	}
	msgs := make(chan *paho.Publish, 1)
	c := paho.NewClient(paho.ClientConfig{
		// tls.Conn is not safe for concurrent writes; paho writes from several goroutines.
		Conn: packets.NewThreadSafeConn(conn),
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){
			func(pr paho.PublishReceived) (bool, error) {
				select {
				case msgs <- pr.Packet:
				default:
				}
				return true, nil
			},
		},
	})
	ack, err := c.Connect(ctx, &paho.Connect{ClientID: deviceCN, CleanStart: true, KeepAlive: 30})
	if err != nil { // paho has closed the connection
		if ack != nil {
			return fmt.Errorf("device %q was refused: CONNACK reason %#02x (%s): %w",
				deviceCN, ack.ReasonCode, policy.Code(ack.ReasonCode), err)
		}
		return fmt.Errorf("connecting device %q: %w", deviceCN, err)
	}
	defer func() {
		if derr := c.Disconnect(&paho.Disconnect{ReasonCode: 0}); derr != nil && !errors.Is(derr, net.ErrClosed) {
			err = errors.Join(err, fmt.Errorf("disconnecting device %q: %w", deviceCN, derr))
		}
	}()
	say("4. device %q accepted: certificate CN %q, client ID %q, CONNACK reason %#02x (%s)",
		deviceCN, deviceCN, deviceCN, ack.ReasonCode, policy.Code(ack.ReasonCode))

	sa, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: topic, QoS: 1}}})
	if err != nil {
		return fmt.Errorf("subscribing to %s: %w", topic, err)
	}
	if len(sa.Reasons) != 1 || sa.Reasons[0] >= 0x80 {
		return fmt.Errorf("subscribing to %s: SUBACK reasons %#02x", topic, sa.Reasons)
	}
	say("   subscribed to %s (granted QoS %d)", topic, sa.Reasons[0])

	if _, err := c.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Payload: []byte(payload)}); err != nil {
		return fmt.Errorf("publishing to %s: %w", topic, err)
	}
	say("   published %q to %s", payload, topic)

	select {
	case m := <-msgs:
		if m.Topic != topic || string(m.Payload) != payload {
			return fmt.Errorf("received %q on %s, want %q on %s", m.Payload, m.Topic, payload, topic)
		}
		say("   message received on %s: %q, round trip device -> mqtls -> broker -> mqtls -> device", m.Topic, m.Payload)
	case <-ctx.Done():
		return fmt.Errorf("waiting for the message on %s: %w", topic, ctx.Err())
	}
	say("   disconnecting")
	return nil
}

// spoofingDevice presents the same certificate but claims another client ID, and checks
// that mqtls refuses it with CONNACK 0x85.
func spoofingDevice(ctx context.Context, say func(string, ...any), p *pki, addr string) error {
	ctx, cancel := context.WithTimeout(ctx, stepTimeout)
	defer cancel()
	conn, err := dialDevice(ctx, p, addr)
	if err != nil {
		return err
	}
	c := paho.NewClient(paho.ClientConfig{Conn: packets.NewThreadSafeConn(conn)})
	ack, err := c.Connect(ctx, &paho.Connect{ClientID: spoofID, CleanStart: true, KeepAlive: 30})
	if err == nil {
		_ = c.Disconnect(&paho.Disconnect{ReasonCode: 0})
		return fmt.Errorf("client ID %q with certificate CN %q was accepted, want it refused", spoofID, deviceCN)
	}
	// paho has closed the connection.
	if ack == nil {
		return fmt.Errorf("connecting as %q: no CONNACK: %w", spoofID, err)
	}
	if want := policy.CodeClientIDNotValid; ack.ReasonCode != byte(want) {
		return fmt.Errorf("client ID %q: CONNACK reason %#02x (%s), want %#02x (%s)",
			spoofID, ack.ReasonCode, policy.Code(ack.ReasonCode), byte(want), want)
	}
	reason := ""
	if ack.Properties != nil {
		reason = ack.Properties.ReasonString
	}
	say("5. device with certificate CN %q claiming client ID %q: refused with CONNACK reason %#02x (%s)",
		deviceCN, spoofID, ack.ReasonCode, policy.Code(ack.ReasonCode))
	say("   reason string from mqtls: %q", reason)
	return nil
}

// sayAudit waits for mqtls's next audit line, checks its outcome and summarizes it.
func sayAudit(ctx context.Context, say func(string, ...any), a *examplekit.AuditWriter, want string) error {
	ctx, cancel := context.WithTimeout(ctx, stepTimeout)
	defer cancel()
	l, err := a.Next(ctx, want)
	if err != nil {
		return err
	}
	s := fmt.Sprintf("   mqtls audit: outcome=%s identity=%s client_id=%s", l.Outcome, l.Identity, l.ClientID)
	if l.Forwarded != "" {
		s += " forwarded_as=" + l.Forwarded
	}
	if l.Reason != "" {
		s += " reason=" + l.Reason
	}
	say("%s %s, %d bytes in, %d bytes out", s, l.TLSVersion, l.BytesIn, l.BytesOut)
	return nil
}
