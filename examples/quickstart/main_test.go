package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/mqtls/mqtls/internal/leakcheck"
	"github.com/mqtls/mqtls/internal/logbuf"
)

// TestRun runs the example end to end and checks that the story it tells is the one the
// package comment promises, and that it leaves nothing running.
func TestRun(t *testing.T) {
	before := leakcheck.Count()
	ctx, cancel := context.WithTimeout(context.Background(), runTimeout)
	defer cancel()

	var out bytes.Buffer
	var logs syncBuffer
	err := run(ctx, &out, &logs)
	t.Logf("narrative:\n%s", out.String())
	if err != nil {
		t.Fatalf("run: %v\nlogs:\n%s", err, logs.String())
	}

	for _, want := range []string{
		`device "sensor-1" accepted`,
		`message received on devices/sensor-1/temp: "21.5"`,
		`mqtls audit: outcome=forwarded identity=sensor-1 client_id=sensor-1 forwarded_as=sensor-1`,
		`claiming client ID "spoof": refused with CONNACK reason 0x85 (client identifier not valid)`,
		`mqtls audit: outcome=rejected identity=sensor-1 client_id=spoof reason=client_id_mismatch`,
		`the spoofed CONNECT never reached it`,
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("narrative lacks %q", want)
		}
	}
	if n := strings.Count(logs.String(), `"message":"connection"`); n != 2 {
		t.Errorf("mqtls wrote %d audit lines, want 2\nlogs:\n%s", n, logs.String())
	}
	leakcheck.Check(t, before)
}

// TestRunCancelled checks that a run that cannot finish reports an error and still stops
// everything it started.
func TestRunCancelled(t *testing.T) {
	before := leakcheck.Count()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()

	var out bytes.Buffer
	var logs syncBuffer
	if err := run(ctx, &out, &logs); err == nil {
		t.Fatalf("run with a cancelled context succeeded; narrative:\n%s", out.String())
	}
	leakcheck.Check(t, before)
}

// syncBuffer is what mqtls and the broker log to, concurrently, even after the test
// has returned.
type syncBuffer = logbuf.Buffer
