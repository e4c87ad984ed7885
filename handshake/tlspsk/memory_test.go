package tlspsk

import (
	"io"
	"net"
	"runtime"
	"testing"
	"time"
)

// TestIdleSessionMemoryTLS13: an idle TLS 1.3 PSK session, both ends in this process,
// holds no more heap than an idle TLS 1.2 one (issue #15). Each session exchanged one
// small message each way, then went quiet.
func TestIdleSessionMemoryTLS13(t *testing.T) {
	const warm, n = 20, 200
	measure := func(cfg *ClientConfig) int64 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		var keep []*Conn
		defer func() {
			for _, c := range keep {
				c.conn.Close()
			}
		}()
		srvCfg := &Config{Lookup: testLookup}
		open := func(k int) {
			for range k {
				accepted := make(chan *Conn, 1)
				go func() { // acceptOneIdle
					nc, err := ln.Accept()
					if err != nil {
						accepted <- nil
						return
					}
					nc.SetDeadline(time.Now().Add(10 * time.Second))
					s := Server(nc, srvCfg)
					buf := make([]byte, 4)
					if _, err := io.ReadFull(s, buf); err != nil {
						accepted <- nil
						return
					}
					s.Write(buf)
					nc.SetDeadline(time.Time{})
					accepted <- s
				}()
				nc, err := net.Dial("tcp", ln.Addr().String())
				if err != nil {
					t.Fatal(err)
				}
				nc.SetDeadline(time.Now().Add(10 * time.Second))
				c := Client(nc, cfg)
				if _, err := c.Write([]byte("ping")); err != nil {
					t.Fatal(err)
				}
				if _, err := io.ReadFull(c, make([]byte, 4)); err != nil {
					t.Fatal(err)
				}
				nc.SetDeadline(time.Time{})
				s := <-accepted
				if s == nil {
					t.Fatal("server side failed")
				}
				keep = append(keep, c, s)
			}
		}
		open(warm)
		h0 := heapAlloc()
		open(n)
		h1 := heapAlloc()
		return (int64(h1) - int64(h0)) / n
	}
	tls12 := measure(&ClientConfig{Identity: testIdentity, Key: testKey, Suites: []uint16{TLS_ECDHE_PSK_WITH_AES_128_GCM_SHA256}})
	tls13 := measure(&ClientConfig{Identity: testIdentity, Key: testKey, Suites: []uint16{TLS_AES_128_GCM_SHA256}})
	t.Logf("idle session, both ends: TLS 1.2 ECDHE-PSK %.1f KiB, TLS 1.3 psk_dhe_ke %.1f KiB of heap", float64(tls12)/1024, float64(tls13)/1024)
	// 256 bytes of slack: the measurement moves by about that much between runs.
	if tls13 > tls12+256 {
		t.Errorf("an idle TLS 1.3 session holds %d bytes of heap, a TLS 1.2 one %d", tls13, tls12)
	}
}

func heapAlloc() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}
