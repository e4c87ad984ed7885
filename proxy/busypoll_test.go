//go:build linux

package proxy_test

import (
	"bytes"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/mqtls/mqtls/policy"
	"github.com/mqtls/mqtls/proxy"
)

// TestBusyPoll: with busy polling on, a session in conversation is polled by the spinner,
// every byte still arrives in order both ways, and the spinner stops by itself once the
// session goes quiet, so an idle proxy burns no CPU.
func TestBusyPoll(t *testing.T) {
	if err := proxy.SetBusyPoll(-time.Second); err == nil || !strings.Contains(err.Error(), "must not be negative") {
		t.Errorf("SetBusyPoll(-1s) = %v, want an error saying it must not be negative", err)
	}
	const d = 20 * time.Millisecond
	if err := proxy.SetBusyPoll(d); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { proxy.SetBusyPoll(0) })

	b := startBroker(t, "tcp", "", nil)
	p := startProxy(t, b.upstream(), policy.Config{}, nil)
	dev := dialDevice(t, p.addr, deviceConfig())
	up := openSession(t, dev, b, connectPacket(4, deviceCN), nil)
	for i := range 200 {
		req := publishPacket("req", []byte{byte(i)})
		mustWrite(t, dev, req)
		if got := mustRead(t, up, len(req)); !bytes.Equal(got, req) {
			t.Fatalf("round trip %d: the broker received % x, want % x", i, got, req)
		}
		resp := publishPacket("resp", []byte{byte(i)})
		mustWrite(t, up, resp)
		if got := mustRead(t, dev, len(resp)); !bytes.Equal(got, resp) {
			t.Fatalf("round trip %d: the device received % x, want % x", i, got, resp)
		}
	}
	if _, passes := proxy.BusyPollState(); passes == 0 {
		t.Error("the spinner made no pass while the session was in conversation")
	}

	deadline := time.Now().Add(5 * time.Second)
	for {
		running, _ := proxy.BusyPollState()
		if !running {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the spinner still runs 5s after the session went quiet (busy poll %v)", d)
		}
		time.Sleep(5 * time.Millisecond)
	}
	_, before := proxy.BusyPollState()
	time.Sleep(10 * d)
	if running, after := proxy.BusyPollState(); running || after != before {
		t.Errorf("quiet session: spinner running %v, %d passes in %v, want it stopped", running, after-before, 10*d)
	}

	// Changing the setting, as a reloaded configuration may, opens no new descriptor.
	fds := func() int {
		ents, err := os.ReadDir("/proc/self/fd")
		if err != nil {
			t.Fatal(err)
		}
		return len(ents)
	}
	open := fds()
	for i := range 10 {
		if err := proxy.SetBusyPoll(time.Duration(i+1) * time.Millisecond); err != nil {
			t.Fatal(err)
		}
	}
	if err := proxy.SetBusyPoll(0); err != nil {
		t.Fatal(err)
	}
	if n := fds(); n > open {
		t.Errorf("%d descriptors open after changing the busy poll ten times, %d before", n, open)
	}
}
