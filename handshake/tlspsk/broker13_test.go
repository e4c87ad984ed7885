package tlspsk

import (
	"context"
	"encoding/hex"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// startMosquitto starts a real Mosquitto broker on a free loopback port, plain MQTT, and
// returns its address.
func startMosquitto(t *testing.T) string {
	t.Helper()
	bin := "/usr/sbin/mosquitto"
	if _, err := os.Stat(bin); err != nil {
		if bin, err = exec.LookPath("mosquitto"); err != nil {
			t.Fatalf("mosquitto is not installed; install it with: sudo sh -c 'apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y mosquitto mosquitto-clients'")
		}
	}
	dir := t.TempDir()
	port := startPeerServer(t, "running", func(ctx context.Context, port string) *exec.Cmd {
		conf := filepath.Join(dir, "mosquitto-"+port+".conf")
		os.WriteFile(conf, []byte("listener "+port+" 127.0.0.1\nallow_anonymous true\nlog_dest stderr\npersistence false\n"), 0o600)
		return exec.CommandContext(ctx, bin, "-c", conf)
	})
	return net.JoinHostPort("127.0.0.1", port)
}

// pipeTo returns a handler that pipes the PSK session to the broker, as mqtls does.
func pipeTo(broker string) func(*Conn) ([]byte, error) {
	return func(c *Conn) ([]byte, error) {
		up, err := net.Dial("tcp", broker)
		if err != nil {
			return nil, err
		}
		defer up.Close()
		done := make(chan error, 1)
		go func() { // pipeToBroker
			_, err := io.Copy(up, c)
			up.(*net.TCPConn).CloseWrite()
			done <- err
		}()
		_, err = io.Copy(c, up)
		c.CloseWrite()
		if err2 := <-done; err == nil {
			err = err2
		}
		return nil, err
	}
}

// mqttPublish is an MQTT 3.1.1 CONNECT, a retained QoS 0 PUBLISH and a DISCONNECT.
func mqttPublish(clientID, topic, payload string) []byte {
	str := func(s string) []byte { return append([]byte{byte(len(s) >> 8), byte(len(s))}, s...) }
	connect := append(append(str("MQTT"), 4, 0x02, 0, 60), str(clientID)...)
	publish := append(str(topic), payload...)
	var out []byte
	out = append(out, 0x10, byte(len(connect)))
	out = append(out, connect...)
	out = append(out, 0x31, byte(len(publish))) // PUBLISH, retain
	out = append(out, publish...)
	return append(out, 0xE0, 0)
}

// TestTLS13ThroughToMosquitto: real TLS 1.3 PSK clients publish through the PSK server
// to a real Mosquitto, and the message is read back from the broker.
func TestTLS13ThroughToMosquitto(t *testing.T) {
	broker := startMosquitto(t)
	sub := needPeer(t, "mosquitto_sub")
	keyHex := hex.EncodeToString(testKey)
	tests := []struct {
		name string
		run  func(t *testing.T, host, port, topic string) (string, error)
	}{
		{"openssl s_client -tls1_3 -psk", func(t *testing.T, host, port, topic string) (string, error) {
			return runPeer(t, needPeer(t, "openssl"), strings.NewReader(string(mqttPublish("ossl13", topic, "v-"+topic))),
				"s_client", "-connect", net.JoinHostPort(host, port), "-tls1_3", "-psk", keyHex, "-psk_identity", testIdentity, "-quiet", "-nocommands")
		}},
		{"openssl s_client -psk (no version flag)", func(t *testing.T, host, port, topic string) (string, error) {
			return runPeer(t, needPeer(t, "openssl"), strings.NewReader(string(mqttPublish("ossl", topic, "v-"+topic))),
				"s_client", "-connect", net.JoinHostPort(host, port), "-psk", keyHex, "-psk_identity", testIdentity, "-quiet", "-nocommands")
		}},
		{"mosquitto_pub --psk", func(t *testing.T, host, port, topic string) (string, error) {
			return runPeer(t, needPeer(t, "mosquitto_pub"), nil, "-h", host, "-p", port, "--psk", keyHex, "--psk-identity", testIdentity,
				"-i", "mpub", "-t", topic, "-m", "v-"+topic, "-r")
		}},
		{"gnutls-cli TLS 1.3 PSK", func(t *testing.T, host, port, topic string) (string, error) {
			return runPeer(t, needPeer(t, "gnutls-cli"), strings.NewReader(string(mqttPublish("gnutls", topic, "v-"+topic))),
				"--pskusername", testIdentity, "--pskkey", keyHex, "--priority", "NORMAL:-VERS-ALL:+VERS-TLS1.3:+ECDHE-PSK:+PSK", "-p", port, host)
		}},
		{"node tls.connect pskCallback", func(t *testing.T, host, port, topic string) (string, error) {
			const script = `
const tls = require('tls');
const [host, port, identity, keyHex, hexData] = process.argv.slice(1);
const s = tls.connect({ host, port: Number(port), minVersion: 'TLSv1.3',
  pskCallback: () => ({ psk: Buffer.from(keyHex, 'hex'), identity }), checkServerIdentity: () => undefined },
  () => { s.write(Buffer.from(hexData, 'hex')); });
s.on('data', () => {});
s.on('end', () => s.end());
s.on('error', e => { console.log('ERROR ' + e.message); process.exit(1); });
`
			return runPeer(t, needNode(t), nil, "-e", script, host, port, testIdentity, keyHex, hex.EncodeToString(mqttPublish("node", topic, "v-"+topic)))
		}},
		{"own Go client", func(t *testing.T, host, port, topic string) (string, error) {
			c, err := dialClient(t, net.JoinHostPort(host, port), client13(tls13ClientKnobs{}))
			if err != nil {
				return "", err
			}
			if _, err := c.Write(mqttPublish("go", topic, "v-"+topic)); err != nil {
				return "", err
			}
			_, err = io.Copy(io.Discard, c)
			c.Close()
			return "", err
		}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := startServer(t, &Config{Lookup: testLookup}, pipeTo(broker))
			host, port, _ := net.SplitHostPort(srv.addr())
			topic := "psk13/" + string(rune('a'+i))
			out, err := tt.run(t, host, port, topic)
			r := srv.result()
			if err != nil {
				t.Fatalf("client: %v\n%s\nserver: %v", err, out, r.err)
			}
			if r.state.Version != VersionTLS13 || r.state.Identity != testIdentity {
				t.Errorf("server state %+v, want TLS 1.3 (err %v)", r.state, r.err)
			}
			bh, bp, _ := net.SplitHostPort(broker)
			got, err := runPeer(t, sub, nil, "-h", bh, "-p", bp, "-t", topic, "-C", "1", "-W", "5")
			if err != nil || strings.TrimSpace(got) != "v-"+topic {
				t.Errorf("the broker holds %q (%v) on %s, want %q", got, err, topic, "v-"+topic)
			}
		})
	}
}
