package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/eclipse/paho.golang/paho"

	"github.com/mqtls/mqtls/internal/examplekit"
	"github.com/mqtls/mqtls/internal/leakcheck"
	"github.com/mqtls/mqtls/proxy"
)

// TestGateway runs the example with --addr against a real mqtls DTLS listener that the
// test starts, the way a gateway runs it (a PSK file in Mosquitto's format, the client ID
// bound to the PSK identity), in front of a broker, and checks that the device's message
// reaches a subscriber on the broker, once with the key from --key-file and once from
// --psk-hex.
func TestGateway(t *testing.T) {
	before := leakcheck.Count()
	testGateway(t)
	leakcheck.Check(t, before)
}

func testGateway(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), runTimeout)
	defer cancel()
	var logs syncBuffer

	// The gateway: two devices in its PSK file, so --key-file must pick the right line.
	const identity = "sensor-7"
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	other := make([]byte, 16)
	if _, err := rand.Read(other); err != nil {
		t.Fatal(err)
	}
	pskFile := filepath.Join(t.TempDir(), "psk.txt")
	data := "other-device:" + hex.EncodeToString(other) + "\n" + identity + ":" + hex.EncodeToString(key) + "\n"
	if err := os.WriteFile(pskFile, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	broker, brokerAddr, seen, err := examplekit.StartBroker(&logs)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := broker.Close(); err != nil {
			t.Error(err)
		}
	}()
	audit := examplekit.NewAuditWriter(&logs)
	addr, stopProxy, err := startProxy(pskFile, brokerAddr, audit)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := stopProxy(); err != nil {
			t.Error(err)
		}
	}()
	msgs := make(chan *paho.Publish, 1)
	stopDashboard, err := subscribe(ctx, brokerAddr, msgs)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := stopDashboard(); err != nil {
			t.Error(err)
		}
	}()

	for _, tc := range []struct {
		name    string
		keyArg  string
		payload string
	}{
		{"key-file", "--key-file=" + pskFile, "19.0"},
		{"psk-hex", "--psk-hex=" + hex.EncodeToString(key), "19.5"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			args := []string{"--addr=" + addr, "--identity=" + identity, tc.keyArg, "--payload=" + tc.payload}
			err := runArgs(ctx, args, &out, &logs)
			t.Logf("dtls-device %s\n%s", strings.ReplaceAll(strings.Join(args, " "), hex.EncodeToString(key), "<key>"), out.String())
			if err != nil {
				t.Fatalf("runArgs: %v\nlogs:\n%s", err, logs.String())
			}
			for _, want := range []string{
				`device "sensor-7" -> gateway udp ` + addr,
				`device "sensor-7": DTLS 1.2 handshake done, TLS_PSK_WITH_AES_128_CCM_8`,
				`accepted as client ID "sensor-7": CONNACK reason 0x00 (success)`,
				`published "` + tc.payload + `" to devices/sensor-7/temp (QoS 1, acknowledged by the broker)`,
				"done",
			} {
				if !strings.Contains(out.String(), want) {
					t.Errorf("narrative lacks %q", want)
				}
			}
			select {
			case m := <-msgs:
				if m.Topic != "devices/sensor-7/temp" || string(m.Payload) != tc.payload {
					t.Errorf("the subscriber received %q on %s, want %q on devices/sensor-7/temp", m.Payload, m.Topic, tc.payload)
				}
			case <-ctx.Done():
				t.Fatal("the subscriber on the broker received nothing")
			}
			l, err := audit.Next(ctx, proxy.OutcomeForwarded)
			if err != nil {
				t.Fatal(err)
			}
			if l.Identity != identity || l.ClientID != identity {
				t.Errorf("mqtls audit: identity %q client_id %q, want %q for both", l.Identity, l.ClientID, identity)
			}
		})
	}
	if ids := seen.IDs(); !slices.Equal(ids, []string{"dashboard", identity, identity}) {
		t.Errorf("the broker saw client IDs %q, want dashboard and then %s twice", ids, identity)
	}
	if strings.Contains(logs.String(), hex.EncodeToString(key)) {
		t.Error("the key appears in the logs")
	}
}

// TestArgs checks the flag errors a user meets before anything is dialled: each names what
// to give, and none repeats a key.
func TestArgs(t *testing.T) {
	dir := t.TempDir()
	const secret = "00112233445566778899aabbccddeeff"
	keyFile := filepath.Join(dir, "psk.txt")
	if err := os.WriteFile(keyFile, []byte("dev-9:"+secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	badFile := filepath.Join(dir, "bad.txt")
	if err := os.WriteFile(badFile, []byte("dev-1:"+secret+"zz\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--identity=dev-1"}, "--identity needs --addr"},
		{[]string{"--identity=dev-1", "--payload=x"}, "--identity, --payload need --addr"},
		{[]string{"--addr=127.0.0.1:5684"}, "--addr needs --identity"},
		{[]string{"--addr=127.0.0.1:5684", "--identity=dev-1"}, "give --key-file or --psk-hex, not both"},
		{[]string{"--addr=127.0.0.1:5684", "--identity=dev-1", "--key-file=" + keyFile, "--psk-hex=" + secret}, "not both"},
		{[]string{"--addr=127.0.0.1:5684", "--identity=dev-1", "--psk-hex=" + secret + "z"}, "--psk-hex is not a key in hex"},
		{[]string{"--addr=127.0.0.1:5684", "--identity=dev-1", "--key-file=" + keyFile}, `has no line for identity "dev-1" (want dev-1:<hex key>)`},
		{[]string{"--addr=127.0.0.1:5684", "--identity=dev-1", "--key-file=" + badFile}, "--key-file: " + badFile + ":1:"},
		{[]string{"--addr=127.0.0.1:5684", "--identity=dev-1", "--key-file=" + filepath.Join(dir, "none")}, "reading --key-file"},
		{[]string{"extra"}, `unexpected argument "extra"`},
		{[]string{"--nope"}, "flag provided but not defined: -nope"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			var out, logs bytes.Buffer
			err := runArgs(context.Background(), tc.args, &out, &logs)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("runArgs = %v, want an error containing %q", err, tc.want)
			}
			if strings.Contains(err.Error(), secret[:8]) {
				t.Errorf("the error shows key material: %v", err)
			}
			if out.Len() != 0 {
				t.Errorf("it printed a narrative before refusing: %q", out.String())
			}
		})
	}
	var out, logs bytes.Buffer
	if err := runArgs(context.Background(), []string{"-h"}, &out, &logs); !errors.Is(err, flag.ErrHelp) || !strings.Contains(logs.String(), "-key-file") {
		t.Errorf("-h: %v, usage %q", err, logs.String())
	}
}
