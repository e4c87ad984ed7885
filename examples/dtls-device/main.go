// Command dtls-device shows a constrained device talking MQTT over DTLS with a pre-shared
// key, through mqtls, to a plaintext broker, in one process and with nothing but Go
// installed:
//
//   - it writes a PSK file in Mosquitto's format (identity:hexkey) holding one device,
//     "dev-1", with a random 256-bit key, starts an embedded MQTT broker (mochi-mqtt) on
//     loopback, and puts mqtls's DTLS listener in front of it, with the client ID bound to
//     the PSK identity;
//   - the device, a paho.golang MQTT 5 client over a pion/dtls v3 DTLS 1.2 session
//     (TLS_PSK_WITH_AES_128_CCM_8, the suite of many mbedTLS devices), connects as "dev-1"
//     and publishes a temperature to devices/dev-1/temp; a dashboard subscribed on the
//     broker receives it;
//   - the same device claiming client ID "dev-2" is refused by mqtls with CONNACK 0x85, and
//     the broker never hears of it.
//
// UDP has no byte stream, so MQTT over DTLS needs a framing rule: each datagram carries
// whole MQTT packets. mqtls applies it on its side; on the device side, Go code gets it
// from package github.com/mqtls/mqtls/proxy/datagram: datagram.New wraps the DTLS conn
// into a stream that an MQTT library can use unchanged, sending each packet whole even
// though paho writes one packet in several pieces. That is what this example's device does.
//
// Run it with
//
//	go run ./examples/dtls-device
//
// The narrative goes to stdout; mqtls's JSON log (one "connection" audit line per
// session, summarized in the narrative) and the broker's warnings go to stderr. It exits
// non-zero if anything does not happen as described.
//
// # Against a real gateway
//
// With --addr it starts nothing itself: it is one device talking to the mqtls DTLS listener
// at that address (mqtls serve --dtls-listen=... --psk-file=...), as the given PSK identity,
// with that identity's key. It connects (client ID: the identity, or --client-id), publishes
// --payload to --topic (devices/<identity>/temp) with QoS 1, waits for the broker's
// acknowledgement and disconnects:
//
//	go run ./examples/dtls-device --addr=gateway.example:5684 --identity=dev-1 --key-file=dev-1.psk
//
// --key-file is a PSK file in Mosquitto's format (identity:hexkey lines, the format of
// mqtls's --psk-file); the line for --identity is used, so a copy of the gateway's own file
// works for a test. --psk-hex gives the key on the command line instead, where other users
// of the machine can read it (ps): use it for throw-away keys only.
package main

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"
	"github.com/pion/dtls/v3"
	"github.com/rs/zerolog"

	"github.com/mqtls/mqtls/handshake"
	"github.com/mqtls/mqtls/internal/examplekit"
	"github.com/mqtls/mqtls/policy"
	"github.com/mqtls/mqtls/proxy"
	"github.com/mqtls/mqtls/proxy/datagram"
)

const (
	deviceID = "dev-1"
	spoofID  = "dev-2"
	topic    = "devices/dev-1/temp"
	payload  = "21.5"
	suite    = dtls.TLS_PSK_WITH_AES_128_CCM_8

	runTimeout  = time.Minute      // the whole example
	stepTimeout = 10 * time.Second // any single wait: a handshake, a message, an audit line
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	ctx, cancel := context.WithTimeout(ctx, runTimeout)
	err := runArgs(ctx, os.Args[1:], os.Stdout, os.Stderr)
	cancel()
	stop()
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "dtls-device:", err)
		os.Exit(1)
	}
}

// device is one device's settings: who it is and what it publishes.
type device struct {
	identity string // the PSK identity it sends
	key      []byte
	clientID string
	topic    string
	payload  string
}

// runArgs runs the self-contained demo without flags, and one device against the gateway
// at --addr with them.
func runArgs(ctx context.Context, args []string, out, logs io.Writer) error {
	fs := flag.NewFlagSet("dtls-device", flag.ContinueOnError)
	fs.SetOutput(logs)
	addr := fs.String("addr", "", "a real gateway's DTLS listener, host:port (mqtls serve --dtls-listen); without it, the self-contained demo runs")
	identity := fs.String("identity", "", "the device's PSK identity (with --addr)")
	keyFile := fs.String("key-file", "", "a PSK file in Mosquitto's format (identity:hexkey lines); the line for --identity is used")
	pskHex := fs.String("psk-hex", "", "the key in hex, instead of --key-file (visible to other users in ps: throw-away keys only)")
	clientID := fs.String("client-id", "", "the MQTT client ID (default: --identity)")
	topicFlag := fs.String("topic", "", "where to publish (default: devices/<identity>/temp)")
	payloadFlag := fs.String("payload", payload, "what to publish")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q: every setting is a flag (-h lists them)", fs.Arg(0))
	}
	if *addr == "" {
		var set []string
		fs.Visit(func(f *flag.Flag) { set = append(set, "--"+f.Name) })
		if len(set) > 0 {
			verb := "needs"
			if len(set) > 1 {
				verb = "need"
			}
			return fmt.Errorf("%s %s --addr, the gateway to talk to; without flags the self-contained demo runs", strings.Join(set, ", "), verb)
		}
		return run(ctx, out, logs)
	}
	d := device{identity: *identity, clientID: cmp.Or(*clientID, *identity), payload: *payloadFlag,
		topic: cmp.Or(*topicFlag, "devices/"+*identity+"/temp")}
	if d.identity == "" {
		return errors.New("--addr needs --identity, the device's PSK identity")
	}
	var err error
	if d.key, err = loadKey(d.identity, *keyFile, *pskHex); err != nil {
		return err
	}
	return runGateway(ctx, out, *addr, d)
}

// loadKey reads identity's key from keyFile (Mosquitto's PSK file format, as mqtls's
// --psk-file) or from pskHex: exactly one of them. No error holds key material.
func loadKey(identity, keyFile, pskHex string) ([]byte, error) {
	switch {
	case (keyFile == "") == (pskHex == ""):
		return nil, errors.New("--addr needs the device's key: give --key-file or --psk-hex, not both")
	case pskHex != "":
		key, err := hex.DecodeString(pskHex)
		if err != nil || len(key) == 0 {
			return nil, errors.New("--psk-hex is not a key in hex (an even number of 0-9a-f digits)")
		}
		return key, nil
	}
	data, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("reading --key-file: %w", err)
	}
	keys, err := handshake.ParsePSKs(keyFile, data, handshake.PSKFormatMosquitto)
	if err != nil {
		return nil, fmt.Errorf("--key-file: %w", err)
	}
	key, ok := keys[identity]
	if !ok {
		return nil, fmt.Errorf("--key-file %s has no line for identity %q (want %s:<hex key>)", keyFile, identity, identity)
	}
	return key, nil
}

// runGateway is one device d talking to the mqtls DTLS listener at addr: it connects,
// publishes d.payload to d.topic with QoS 1 and disconnects.
func runGateway(ctx context.Context, out io.Writer, addr string, d device) error {
	say := func(format string, args ...any) { fmt.Fprintf(out, format+"\n", args...) }
	say("device %q -> gateway udp %s (DTLS 1.2, PSK, %s)", d.identity, addr, dtls.CipherSuiteName(suite))
	if err := honestDevice(ctx, say, d, addr, nil); err != nil {
		return err
	}
	say("done")
	return nil
}

// run tells the story on out and writes mqtls's and the broker's logs to logs. It returns
// an error if anything does not go as told, and stops everything it started before
// returning, either way.
func run(ctx context.Context, out, logs io.Writer) (err error) {
	say := func(format string, args ...any) { fmt.Fprintf(out, format+"\n", args...) }
	if err := ctx.Err(); err != nil {
		return err
	}

	// 1. The device's pre-shared key, in the file mqtls reads (Mosquitto's psk_file format).
	dir, err := os.MkdirTemp("", "mqtls-dtls-device-")
	if err != nil {
		return fmt.Errorf("making a temporary directory: %w", err)
	}
	defer os.RemoveAll(dir)
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return err
	}
	pskFile := filepath.Join(dir, "psk.txt")
	if err := os.WriteFile(pskFile, []byte(deviceID+":"+hex.EncodeToString(key)+"\n"), 0o600); err != nil {
		return fmt.Errorf("writing the PSK file: %w", err)
	}
	say("1. PSK file: one device, identity %q, a random 256-bit key (%s, removed at exit)", deviceID, pskFile)

	// 2. A plaintext MQTT broker on loopback, which knows nothing about DTLS or identities.
	broker, brokerAddr, seen, err := examplekit.StartBroker(logs)
	if err != nil {
		return fmt.Errorf("starting the broker: %w", err)
	}
	defer func() {
		if cerr := broker.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("stopping the broker: %w", cerr))
		}
	}()
	say("2. broker: mochi-mqtt, plaintext MQTT on %s", brokerAddr)

	// 3. mqtls's DTLS listener in front of it.
	audit := examplekit.NewAuditWriter(logs)
	proxyAddr, stopProxy, err := startProxy(pskFile, brokerAddr, audit)
	if err != nil {
		return fmt.Errorf("starting mqtls: %w", err)
	}
	defer func() { err = errors.Join(err, stopProxy()) }()
	say("3. mqtls: DTLS 1.2 with PSKs on udp %s -> broker %s", proxyAddr, brokerAddr)
	say("   policy: identity {psk}, client ID enforce (it must equal the PSK identity)")

	// 4. A dashboard, subscribed on the broker itself.
	msgs := make(chan *paho.Publish, 1)
	dashboard, err := subscribe(ctx, brokerAddr, msgs)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, dashboard()) }()
	say("4. dashboard: subscribed to devices/+/temp on the broker")

	// 5. The device, over DTLS.
	dev := device{identity: deviceID, key: key, clientID: deviceID, topic: topic, payload: payload}
	say("5. the device, over DTLS to mqtls:")
	if err := honestDevice(ctx, say, dev, proxyAddr, msgs); err != nil {
		return err
	}
	if err := sayAudit(ctx, say, audit, proxy.OutcomeForwarded); err != nil {
		return err
	}

	// 6. The same key, claiming another device's client ID.
	if err := spoofingDevice(ctx, say, dev, proxyAddr); err != nil {
		return err
	}
	if err := sayAudit(ctx, say, audit, proxy.OutcomeRejected); err != nil {
		return err
	}

	ids := seen.IDs()
	if slices.Contains(ids, spoofID) || !slices.Contains(ids, deviceID) {
		return fmt.Errorf("the broker saw client IDs %q, want %q and never %q", ids, deviceID, spoofID)
	}
	say("7. broker: client ID %q never reached it; the refused CONNECT stopped at mqtls", spoofID)
	say("done: stopping mqtls and the broker")
	return nil
}

// startProxy starts mqtls's DTLS listener on a free loopback UDP port in front of
// brokerAddr, with the keys in pskFile, logging to logs. stop shuts it down within
// stepTimeout and reports anything that went wrong.
func startProxy(pskFile, brokerAddr string, logs io.Writer) (addr string, stop func() error, err error) {
	store, err := handshake.LoadPSKFile(pskFile, handshake.PSKFormatMosquitto)
	if err != nil {
		return "", nil, err
	}
	psk, err := handshake.NewPSKServer(store, "")
	if err != nil {
		return "", nil, err
	}
	ln, hs, err := handshake.ListenDTLS("127.0.0.1:0", handshake.DTLSConfig{PSK: psk})
	if err != nil {
		return "", nil, err
	}
	pol, err := policy.New(policy.Config{Identity: "{psk}", ClientID: policy.ClientIDEnforce})
	if err != nil {
		ln.Close()
		return "", nil, err
	}
	srv, err := proxy.New(proxy.Config{
		Name:        "dtls",
		Upstream:    brokerAddr,
		Handshaker:  hs,
		Policy:      pol,
		Datagram:    true,            // MQTT over DTLS framing: whole packets per datagram
		IdleTimeout: 2 * time.Minute, // UDP has no FIN: a silent device is gone
		Logger:      zerolog.New(logs).With().Timestamp().Logger(),
	})
	if err != nil {
		ln.Close()
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

// subscribe connects a dashboard client straight to the broker and subscribes it to every
// device's temperature; received messages go to msgs. stop disconnects it.
func subscribe(ctx context.Context, brokerAddr string, msgs chan<- *paho.Publish) (stop func() error, err error) {
	ctx, cancel := context.WithTimeout(ctx, stepTimeout)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", brokerAddr)
	if err != nil {
		return nil, fmt.Errorf("dashboard dialing the broker: %w", err)
	}
	c := paho.NewClient(paho.ClientConfig{
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
	stop = func() error {
		if err := c.Disconnect(&paho.Disconnect{ReasonCode: 0}); err != nil && !errors.Is(err, net.ErrClosed) {
			return fmt.Errorf("disconnecting the dashboard: %w", err)
		}
		<-c.Done()
		return nil
	}
	if _, err := c.Connect(ctx, &paho.Connect{ClientID: "dashboard", CleanStart: true, KeepAlive: 30}); err != nil {
		return nil, fmt.Errorf("dashboard connecting to the broker: %w", err)
	}
	sa, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "devices/+/temp", QoS: 1}}})
	if err == nil && (len(sa.Reasons) != 1 || sa.Reasons[0] >= 0x80) {
		err = fmt.Errorf("SUBACK reasons %#02x", sa.Reasons)
	}
	if err != nil {
		return nil, errors.Join(fmt.Errorf("dashboard subscribing: %w", err), stop())
	}
	return stop, nil
}

// dialDevice opens the device's DTLS-PSK session with mqtls and returns it as the MQTT
// byte stream paho needs: a datagram.Conn, which sends every MQTT packet whole in one
// datagram and hands over only datagrams that hold whole packets.
func dialDevice(ctx context.Context, d device, addr string) (*datagram.Conn, *dtls.Conn, error) {
	raddr, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, nil, err
	}
	conn, err := dtls.DialWithOptions("udp", raddr,
		dtls.WithPSK(func([]byte) ([]byte, error) { return d.key, nil }),
		// pion's client sends its PSK identity from this option.
		dtls.WithPSKIdentityHint([]byte(d.identity)),
		dtls.WithCipherSuites(suite),
		// Connection IDs (RFC 9146): the session survives the device's NAT rebinding.
		dtls.WithConnectionIDGenerator(dtls.OnlySendCIDGenerator()),
	)
	if err != nil {
		return nil, nil, fmt.Errorf("dialing mqtls at %s: %w", addr, err)
	}
	if err := conn.HandshakeContext(ctx); err != nil {
		conn.Close()
		if errors.Is(err, context.DeadlineExceeded) {
			// DTLS discards what it cannot decrypt without an alert (RFC 6347 4.1.2.7), so a
			// wrong key looks exactly like nobody listening.
			return nil, nil, fmt.Errorf("DTLS handshake with mqtls at %s: no answer in %v: check the address, that the gateway has a --dtls-listen there, and identity %q's key: %w",
				addr, stepTimeout, d.identity, err)
		}
		return nil, nil, fmt.Errorf("DTLS handshake with mqtls at %s: %w", addr, err)
	}
	return datagram.New(conn, datagram.Options{}), conn, nil
}

// honestDevice connects as device d and publishes a reading. With msgs (the demo's
// dashboard, subscribed on the broker) it also waits for the dashboard to receive it;
// without, the broker's PUBACK is the proof that it arrived.
func honestDevice(ctx context.Context, say func(string, ...any), d device, addr string, msgs <-chan *paho.Publish) (err error) {
	ctx, cancel := context.WithTimeout(ctx, stepTimeout)
	defer cancel()
	conn, dc, err := dialDevice(ctx, d, addr)
	if err != nil {
		return err
	}
	st, _ := dc.ConnectionState()
	say("   device %q: DTLS 1.2 handshake done, %s", d.identity, dtls.CipherSuiteName(st.CipherSuiteID))
	c := paho.NewClient(paho.ClientConfig{Conn: conn})
	ack, err := c.Connect(ctx, &paho.Connect{ClientID: d.clientID, CleanStart: true, KeepAlive: 30})
	if err != nil { // paho has closed the connection
		if ack != nil {
			return fmt.Errorf("device %q was refused: CONNACK reason %#02x (%s): %w",
				d.clientID, ack.ReasonCode, policy.Code(ack.ReasonCode), err)
		}
		return fmt.Errorf("connecting device %q: %w", d.clientID, err)
	}
	defer func() {
		if derr := c.Disconnect(&paho.Disconnect{ReasonCode: 0}); derr != nil && !errors.Is(derr, net.ErrClosed) {
			err = errors.Join(err, fmt.Errorf("disconnecting device %q: %w", d.clientID, derr))
		}
		<-c.Done()
	}()
	say("   accepted as client ID %q: CONNACK reason %#02x (%s)", d.clientID, ack.ReasonCode, policy.Code(ack.ReasonCode))

	if _, err := c.Publish(ctx, &paho.Publish{Topic: d.topic, QoS: 1, Payload: []byte(d.payload)}); err != nil {
		return fmt.Errorf("publishing to %s: %w", d.topic, err)
	}
	say("   published %q to %s (QoS 1, acknowledged by the broker)", d.payload, d.topic)

	if msgs != nil {
		select {
		case m := <-msgs:
			if m.Topic != d.topic || string(m.Payload) != d.payload {
				return fmt.Errorf("dashboard received %q on %s, want %q on %s", m.Payload, m.Topic, d.payload, d.topic)
			}
			say("   dashboard received %q on %s: device -> DTLS -> mqtls -> broker -> dashboard", m.Payload, m.Topic)
		case <-ctx.Done():
			return fmt.Errorf("waiting for the dashboard to receive %s: %w", d.topic, ctx.Err())
		}
	}
	if n := conn.Dropped(); n != 0 {
		return fmt.Errorf("the device dropped %d datagrams that were not whole MQTT packets", n)
	}
	say("   disconnecting")
	return nil
}

// spoofingDevice uses dev-1's key but claims client ID dev-2, and checks that mqtls
// refuses it with CONNACK 0x85.
func spoofingDevice(ctx context.Context, say func(string, ...any), d device, addr string) error {
	ctx, cancel := context.WithTimeout(ctx, stepTimeout)
	defer cancel()
	conn, _, err := dialDevice(ctx, d, addr)
	if err != nil {
		return err
	}
	c := paho.NewClient(paho.ClientConfig{Conn: conn})
	ack, err := c.Connect(ctx, &paho.Connect{ClientID: spoofID, CleanStart: true, KeepAlive: 30})
	if err == nil {
		_ = c.Disconnect(&paho.Disconnect{ReasonCode: 0})
		<-c.Done()
		return fmt.Errorf("client ID %q with PSK identity %q was accepted, want it refused", spoofID, deviceID)
	}
	<-c.Done() // paho has closed the connection
	if ack == nil {
		return fmt.Errorf("connecting as %q: no CONNACK: %w", spoofID, err)
	}
	if want := policy.CodeClientIDNotValid; ack.ReasonCode != byte(want) {
		return fmt.Errorf("client ID %q: CONNACK reason %#02x (%s), want %#02x (%s)",
			spoofID, ack.ReasonCode, policy.Code(ack.ReasonCode), byte(want), want)
	}
	say("6. device with PSK identity %q claiming client ID %q: refused with CONNACK reason %#02x (%s)",
		deviceID, spoofID, ack.ReasonCode, policy.Code(ack.ReasonCode))
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
	if l.Reason != "" {
		s += " reason=" + l.Reason
	}
	say("%s %s %s, %d bytes in, %d bytes out, %d datagrams dropped",
		s, l.TLSVersion, l.CipherSuite, l.BytesIn, l.BytesOut, l.Dropped)
	return nil
}
