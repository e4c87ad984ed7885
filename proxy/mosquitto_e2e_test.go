package proxy_test

// End-to-end tests against a real Mosquitto whose ACL is "pattern write devices/%c/#": the
// promise that a device writes only under its own identity, tried as an attacker would.

import (
	"bufio"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mqtls/mqtls/handshake/handshaketest"
	"github.com/mqtls/mqtls/policy"
	"github.com/mqtls/mqtls/proxy"
)

// installHint is how to get the peers these tests run; they fail without them, never skip.
const installHint = "apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y mosquitto mosquitto-clients"

// deviceACL lets each client write only under devices/<its client ID>/ and everyone read.
const deviceACL = "pattern write devices/%c/#\ntopic read #\n"

// startMosquitto runs a Mosquitto with acl on a free loopback port until the end of tb and
// returns its address.
func startMosquitto(tb testing.TB, acl string) string {
	tb.Helper()
	bin, err := exec.LookPath("mosquitto")
	if err != nil {
		bin = "/usr/sbin/mosquitto" // Debian installs it outside a user's PATH
		if _, err := os.Stat(bin); err != nil {
			tb.Fatalf("mosquitto is not installed; install it with: %s", installHint)
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	dir := tb.TempDir()
	aclFile := filepath.Join(dir, "acl")
	if err := os.WriteFile(aclFile, []byte(acl), 0o600); err != nil {
		tb.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(addr)
	conf := fmt.Sprintf("listener %s 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest stderr\nlog_type all\nacl_file %s\n", port, aclFile)
	if os.Geteuid() == 0 {
		conf += "user root\n" // started as root, Mosquitto would switch to the mosquitto user
	}
	confFile := filepath.Join(dir, "mosquitto.conf")
	if err := os.WriteFile(confFile, []byte(conf), 0o600); err != nil {
		tb.Fatal(err)
	}
	cmd := exec.Command(bin, "-c", confFile)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatalf("starting mosquitto: %v", err)
	}
	// Mosquitto logs "running" once its listeners are open; the log is kept for failures.
	running := make(chan struct{})
	logDone := make(chan string)
	go func() {
		var log strings.Builder
		sc := bufio.NewScanner(stderr)
		started := false
		for sc.Scan() {
			log.WriteString(sc.Text() + "\n")
			if !started && strings.Contains(sc.Text(), " running") {
				close(running)
				started = true
			}
		}
		_, _ = io.Copy(io.Discard, stderr)
		logDone <- log.String()
	}()
	stop := func() string {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		log := <-logDone
		_ = cmd.Wait()
		return log
	}
	select {
	case <-running:
	case <-time.After(waitTimeout):
		tb.Fatalf("mosquitto did not start; its log:\n%s", stop())
	}
	tb.Cleanup(func() {
		if log := stop(); tb.Failed() {
			tb.Logf("mosquitto's log:\n%s", log)
		}
	})
	return addr
}

// subscribePacket is a 3.1.1 SUBSCRIBE, packet identifier 1, of one filter at QoS 0 [MQTT-3.8].
func subscribePacket(filter string) []byte {
	body := []byte{0x00, 0x01, byte(len(filter) >> 8), byte(len(filter))} // packet identifier, filter length
	body = append(body, filter...)
	body = append(body, 0x00)                                       // requested QoS 0
	return append(appendFixedHeader(nil, 0x82, len(body)), body...) // SUBSCRIBE: type 8, flags 0b0010 [MQTT-3.8.1-1]
}

// pingreq is PINGREQ [MQTT-3.12]; the broker answers PINGRESP (0xd0 0x00) after every
// packet it received before, and sends it after every packet it queued before.
var pingreq = []byte{0xc0, 0x00}

// drainUntilPong pings over c and returns the PUBLISH topics c received before the answer.
func drainUntilPong(tb testing.TB, c io.ReadWriter) []string {
	tb.Helper()
	mustWrite(tb, c, pingreq)
	var topics []string
	for {
		pkt := mustReadPacket(tb, c)
		switch pkt[0] >> 4 {
		case 13: // PINGRESP
			return topics
		case 3: // PUBLISH, QoS 0: fixed header, then the topic
			_, _, hl, err := policy.ParseFixedHeader(pkt)
			if err != nil {
				tb.Fatal(err)
			}
			n := int(pkt[hl])<<8 | int(pkt[hl+1])
			topics = append(topics, string(pkt[hl+2:hl+2+n]))
		}
	}
}

// watcher connects straight to the broker and subscribes to every device's topics.
func watcher(tb testing.TB, broker string) net.Conn {
	tb.Helper()
	c, err := net.DialTimeout("tcp", broker, waitTimeout)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(waitTimeout))
	mustWrite(tb, c, connectPacket(policy.Level311, "watcher"))
	if code, err := connackCode(mustReadPacket(tb, c)); err != nil || code != 0 {
		tb.Fatalf("watcher CONNACK %d, %v", code, err)
	}
	mustWrite(tb, c, subscribePacket("devices/#"))
	if pkt := mustReadPacket(tb, c); pkt[0] != 0x90 {
		tb.Fatalf("watcher got % x, want SUBACK", pkt)
	}
	return c
}

// issueDevice returns a device TLS configuration whose certificate, from the test CA, has
// the subject attributes names in order.
func issueDevice(tb testing.TB, names ...pkix.AttributeTypeAndValue) *tls.Config {
	tb.Helper()
	leaf, err := pki.ca.Issue(handshaketest.Template{CommonName: "reissued below"})
	if err != nil {
		tb.Fatal(err)
	}
	tmpl := leaf.Cert     // a parsed leaf as the template: its validity, usages and key
	tmpl.RawSubject = nil // else it would be copied over Subject
	tmpl.Subject = pkix.Name{ExtraNames: names}
	tmpl.SerialNumber = big.NewInt(time.Now().UnixNano())
	der, err := x509.CreateCertificate(rand.Reader, tmpl, pki.ca.Cert, leaf.Key.Public(), pki.ca.Key)
	if err != nil {
		tb.Fatal(err)
	}
	cfg := deviceConfig()
	cfg.Certificates = []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: leaf.Key}}
	return cfg
}

var oidCN = asn1.ObjectIdentifier{2, 5, 4, 3}

func cn(v string) pkix.AttributeTypeAndValue {
	return pkix.AttributeTypeAndValue{Type: oidCN, Value: v}
}

// TestMosquittoACLHoldsAgainstIdentityTricks runs devices through mqtls (client ID rewritten
// to the identity) to a Mosquitto with "pattern write devices/%c/#", and checks that no
// certificate can get a message into another device's tree.
func TestMosquittoACLHoldsAgainstIdentityTricks(t *testing.T) {
	defer checkGoroutines(t)
	broker := startMosquitto(t, deviceACL)
	p := startProxy(t, broker, policy.Config{ClientID: policy.ClientIDRewrite}, nil)
	w := watcher(t, broker)

	// The harness sees a delivery: the real dev-1 writes in its own tree.
	dev := dialDevice(t, p.addr, deviceConfig())
	mustWrite(t, dev, connectPacket(policy.Level311, "anything"))
	if code, err := connackCode(mustReadPacket(t, dev)); err != nil || code != 0 {
		t.Fatalf("dev-1 CONNACK %d, %v; log:\n%s", code, err, p.log)
	}
	mustWrite(t, dev, publishPacket("devices/dev-1/temp", []byte("21.5")))
	drainUntilPong(t, dev) // the broker has routed the publish
	if got := drainUntilPong(t, w); len(got) != 1 || got[0] != "devices/dev-1/temp" {
		t.Fatalf("watcher got %q, want dev-1's own message", got)
	}

	attacks := []struct {
		name   string
		names  []pkix.AttributeTypeAndValue
		topic  string // in dev-1's or victim's tree
		reason string
	}{
		// Identity "dev-1/x" would be client ID "dev-1/x", whose ACL tree devices/dev-1/x/#
		// lies inside dev-1's.
		{"slash in the CN", []pkix.AttributeTypeAndValue{cn("dev-1/x")}, "devices/dev-1/x/temp", policy.ReasonIdentityUnsafe},
		// Go keeps the last CN, Mosquitto the first: one certificate, two identities.
		{"two CNs", []pkix.AttributeTypeAndValue{cn("attacker"), cn("victim")}, "devices/victim/temp", policy.ReasonIdentityMultivalued},
	}
	for i, a := range attacks {
		t.Run(a.name, func(t *testing.T) {
			dev, err := dial(p.addr, issueDevice(t, a.names...))
			if err != nil {
				t.Fatal(err)
			}
			defer dev.Close()
			mustWrite(t, dev, connectPacket(policy.Level311, "anything"))
			code, err := connackCode(mustReadPacket(t, dev))
			if err != nil {
				t.Fatal(err)
			}
			if code == 0 {
				// The attack got in: show how far it reaches.
				mustWrite(t, dev, publishPacket(a.topic, []byte("forged")))
				drainUntilPong(t, dev)
				t.Fatalf("accepted by the broker; the watcher then received %q", drainUntilPong(t, w))
			}
			if code != 0x05 {
				t.Errorf("CONNACK return code %#x, want 0x05 not authorized", code)
			}
			dev.Close() // the refusal's audit line is written once the device has gone
			// dev-1 is still connected, so the attacks' audit lines come first.
			if got := p.log.waitAudits(t, 1+i)[i]; got.Outcome != proxy.OutcomeRejected || got.Reason != a.reason {
				t.Errorf("audit %+v, want rejected %s", got, a.reason)
			}
		})
	}
}

// mqtt5String is an MQTT UTF-8 encoded string: two-byte length, then the bytes (§1.5.4).
func mqtt5String(s string) []byte { return append([]byte{byte(len(s) >> 8), byte(len(s))}, s...) }

// userProperty is an MQTT 5 user property (0x26) name=value (§3.1.2.11.8).
func userProperty(name, value string) []byte {
	return append(append([]byte{0x26}, mqtt5String(name)...), mqtt5String(value)...)
}

// v5WillConnect is an MQTT 5 CONNECT: clean start, a QoS 0 will on topic whose will
// properties are willProps (each shorter than 128 bytes in all), keep alive 60 s.
func v5WillConnect(clientID, topic string, willProps []byte) []byte {
	body := []byte{0x00, 0x04, 'M', 'Q', 'T', 'T', 5, // protocol name and level 5 [MQTT-3.1.2-1]
		0x06,       // connect flags: will, clean start (§3.1.2.3)
		0x00, 0x3c, // keep alive 60 s
		0x00, // CONNECT properties: none
	}
	body = append(body, mqtt5String(clientID)...)
	body = append(append(body, byte(len(willProps))), willProps...) // will properties (§3.1.3.2)
	body = append(body, mqtt5String(topic)...)                      // will topic
	body = append(body, mqtt5String("gone")...)                     // will payload
	return append(appendFixedHeader(nil, 0x10, len(body)), body...)
}

// userProperties returns the user properties of an MQTT 5 QoS 0 PUBLISH as name=value.
func userProperties(tb testing.TB, pkt []byte) []string {
	tb.Helper()
	_, _, hl, err := policy.ParseFixedHeader(pkt)
	if err != nil {
		tb.Fatal(err)
	}
	b := pkt[hl:]
	b = b[2+int(b[0])<<8|int(b[1]):] // topic name; QoS 0 has no packet identifier
	if b[0] >= 0x80 {
		tb.Fatalf("properties of %d+ bytes: this helper reads one-byte lengths only", 0x80)
	}
	props := b[1 : 1+int(b[0])]
	var out []string
	for len(props) > 0 {
		id := props[0]
		props = props[1:]
		str := func() string {
			n := int(props[0])<<8 | int(props[1])
			s := string(props[2 : 2+n])
			props = props[2+n:]
			return s
		}
		switch id {
		case 0x26: // user property: a string pair
			k := str()
			out = append(out, k+"="+str())
		case 0x01: // payload format indicator: one byte
			props = props[1:]
		case 0x02: // message expiry interval: four bytes
			props = props[4:]
		case 0x03, 0x08: // content type, response topic: a string
			str()
		default:
			tb.Fatalf("property 0x%02x this helper does not read", id)
		}
	}
	return out
}

// TestMosquittoWillCarriesNoForgedIdentity: with an identity property, a device must not
// plant a forged one in its will, which the broker hands to every subscriber of the topic.
func TestMosquittoWillCarriesNoForgedIdentity(t *testing.T) {
	defer checkGoroutines(t)
	broker := startMosquitto(t, deviceACL)
	p := startProxy(t, broker, policy.Config{ClientID: policy.ClientIDRewrite, IdentityProperty: "mqtls-identity"}, nil)

	// A v5 watcher, so the will reaches it with its properties.
	w, err := net.DialTimeout("tcp", broker, waitTimeout)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	_ = w.SetDeadline(time.Now().Add(waitTimeout))
	mustWrite(t, w, connectPacket(policy.Level5, "watcher"))
	if code, err := connackCode(mustReadPacket(t, w)); err != nil || code != 0 {
		t.Fatalf("watcher CONNACK %d, %v", code, err)
	}
	sub := []byte{0x00, 0x01, 0x00} // packet identifier 1, no properties (5.0 §3.8.2)
	sub = append(append(sub, mqtt5String("devices/#")...), 0x00)
	mustWrite(t, w, append(appendFixedHeader(nil, 0x82, len(sub)), sub...))
	if pkt := mustReadPacket(t, w); pkt[0] != 0x90 {
		t.Fatalf("watcher got % x, want SUBACK", pkt)
	}

	dev := dialDevice(t, p.addr, deviceConfig())
	mustWrite(t, dev, v5WillConnect("dev-1", "devices/dev-1/status",
		cat(userProperty("mqtls-identity", "victim"), userProperty("note", "kept"))))
	if code, err := connackCode(mustReadPacket(t, dev)); err != nil || code != 0 {
		t.Fatalf("CONNACK %#x, %v; log:\n%s", code, err, p.log)
	}
	dev.Close() // no DISCONNECT: the broker publishes the will

	will := mustReadPacket(t, w)
	if will[0]>>4 != 3 {
		t.Fatalf("watcher got % x, want the will PUBLISH", will)
	}
	if got := strings.Join(userProperties(t, will), " "); got != "note=kept" {
		t.Errorf("the will reached subscribers with user properties %q, want only note=kept", got)
	}
}
