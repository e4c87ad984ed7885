package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/urfave/cli/v2"
)

func sinkCommand(out *output) *cli.Command {
	return &cli.Command{
		Name:  "sink",
		Usage: "a discard upstream for bulk: CONNACK to the first packet, PINGRESP to each PINGREQ, everything else dropped",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "listen", Value: "127.0.0.1:1884", Usage: "TCP `address` to listen on (loopback only)"},
			&cli.DurationFlag{Name: "timeout", Value: time.Hour, Usage: "stop after this long (or on SIGINT/SIGTERM)"},
			&cli.StringFlag{Name: "label", Usage: "copied into the result line"},
		},
		Action: func(c *cli.Context) error {
			if err := loopbackOnly("--listen", c.String("listen")); err != nil {
				return err
			}
			ctx, cancel := withTimeout(c)
			defer cancel()
			ln, err := net.Listen("tcp", c.String("listen"))
			if err != nil {
				return err
			}
			fmt.Fprintf(os.Stderr, "mqtls-bench sink: listening on %s\n", ln.Addr())
			st, err := serveSink(ctx, ln)
			res := sinkResult{header: header{Cmd: "sink", Label: c.String("label"), Addr: ln.Addr().String(),
				Time: time.Now().UTC().Format(time.RFC3339)}, Conns: st.conns.Load(), Bytes: st.bytes.Load()}
			if e := out.emit(res); e != nil {
				return e
			}
			return err
		},
	}
}

type sinkResult struct {
	header
	Conns int64 `json:"conns"`
	Bytes int64 `json:"bytes"`
}

type sinkStats struct{ conns, bytes atomic.Int64 }

// serveSink serves ln until ctx ends, then closes every connection and returns.
func serveSink(ctx context.Context, ln net.Listener) (*sinkStats, error) {
	st := &sinkStats{}
	var (
		mu    sync.Mutex
		conns = map[net.Conn]struct{}{}
		wg    sync.WaitGroup
	)
	stop := context.AfterFunc(ctx, func() {
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	defer stop()
	for {
		c, err := ln.Accept()
		if err != nil {
			wg.Wait()
			if ctx.Err() != nil {
				return st, nil
			}
			return st, err
		}
		st.conns.Add(1)
		mu.Lock()
		conns[c] = struct{}{}
		mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			n, _ := sinkConn(c)
			st.bytes.Add(n)
			mu.Lock()
			delete(conns, c)
			mu.Unlock()
			c.Close()
		}()
	}
}

// sinkConn answers the first packet with CONNACK, then walks the packets, answering
// PINGREQ and discarding the rest, until DISCONNECT or the end of input. It returns the
// bytes it read.
func sinkConn(c net.Conn) (int64, error) {
	cr := &countingReader{r: c}
	r := bufio.NewReaderSize(cr, 256<<10)
	h, _, err := readPacket(r, nil)
	if err != nil {
		return cr.n, err
	}
	if h != typeConnect {
		return cr.n, fmt.Errorf("sink: first packet %#02x is not CONNECT", h)
	}
	if _, err := c.Write(connackOK); err != nil {
		return cr.n, err
	}
	for {
		h, n, err := readHeader(r)
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = nil
			}
			return cr.n, err
		}
		if _, err := r.Discard(n); err != nil {
			return cr.n, err
		}
		switch h {
		case typePingreq:
			if _, err := c.Write(pingresp); err != nil {
				return cr.n, err
			}
		case typeDisconnect:
			return cr.n, nil
		}
	}
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}
