package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/urfave/cli/v2"
)

func bulkCommand(out *output) *cli.Command {
	return &cli.Command{
		Name:  "bulk",
		Usage: "after CONNECT, stream large QoS 0 PUBLISHes to the target, then wait for one PINGRESP (upstream: mqtls-bench sink, or a broker)",
		Flags: append(clientFlags(),
			&cli.Int64Flag{Name: "bytes", Value: 64 << 20, Usage: "bytes to send per stream (rounded up to whole writes)"},
			&cli.IntFlag{Name: "packet-size", Value: 64 << 10, Usage: "PUBLISH payload `bytes`"},
			&cli.IntFlag{Name: "write-size", Value: 256 << 10, Usage: "about how many `bytes` go in one Write (whole packets)"},
			&cli.IntFlag{Name: "streams", Value: 1, Usage: "sessions streaming at once"},
		),
		Action: func(c *cli.Context) error {
			d, err := dialFrom(c)
			if err != nil {
				return err
			}
			ctx, cancel := withTimeout(c)
			defer cancel()
			res, err := runBulk(ctx, d, bulkParams{
				bytes: c.Int64("bytes"), packetSize: c.Int("packet-size"), writeSize: c.Int("write-size"),
				streams: c.Int("streams"), target: target(c.IntSlice("pid")), prefix: c.String("client-id-prefix") + "-" + runID(),
			})
			if res != nil {
				res.header = newHeader(c, "bulk")
				if e := out.emit(res); e != nil {
					return e
				}
			}
			return err
		},
	}
}

type bulkParams struct {
	bytes                          int64
	packetSize, writeSize, streams int
	target                         target
	prefix                         string
}

type bulkResult struct {
	header
	Streams  int     `json:"streams"`
	Bytes    int64   `json:"bytes"` // MQTT bytes sent, all streams
	ElapsedS float64 `json:"elapsed_s"`
	MBPerS   float64 `json:"mb_per_s"` // 10^6 bytes per second
	CPU
	TargetCPUSPerGB *float64 `json:"target_cpu_s_per_gb,omitempty"`
}

// bulkChunk returns whole PUBLISH packets totalling about writeSize bytes.
func bulkChunk(topic string, packetSize, writeSize int) []byte {
	payload := make([]byte, packetSize)
	for i := range payload {
		payload[i] = byte(i)
	}
	var chunk []byte
	for len(chunk) == 0 || len(chunk)+packetSize <= writeSize {
		chunk = appendPublish(chunk, topic, 0, 0, payload)
	}
	return chunk
}

func runBulk(ctx context.Context, d *dialConfig, p bulkParams) (*bulkResult, error) {
	if p.bytes <= 0 || p.packetSize <= 0 || p.packetSize > 1<<27 || p.streams <= 0 {
		return nil, errors.New("bulk: --bytes, --packet-size (< 128 MiB) and --streams must be positive")
	}
	chunk := bulkChunk("bench/bulk/"+p.prefix, p.packetSize, p.writeSize)
	writes := (p.bytes + int64(len(chunk)) - 1) / int64(len(chunk))

	type stream struct {
		s *session
		r *bufio.Reader
	}
	streams := make([]stream, 0, p.streams)
	defer func() {
		for _, st := range streams {
			st.s.Close()
		}
	}()
	for i := range p.streams {
		octx, ocancel := context.WithTimeout(ctx, d.opTimeout)
		s, err := d.dial(octx)
		ocancel()
		if err != nil {
			return nil, err
		}
		streams = append(streams, stream{s: s, r: bufio.NewReaderSize(s, 256)})
		_ = s.SetDeadline(time.Now().Add(d.opTimeout))
		if _, err := s.Write(connectPacket(fmt.Sprintf("%s-%d", p.prefix, i), 0)); err != nil {
			return nil, fmt.Errorf("writing CONNECT: %w", err)
		}
		if err := expectConnack(streams[i].r); err != nil {
			return nil, err
		}
		_ = s.SetDeadline(time.Time{})
	}
	stop := context.AfterFunc(ctx, func() {
		for _, st := range streams {
			_ = st.s.SetDeadline(time.Now())
		}
	})
	defer stop()

	meter := startCPU(p.target)
	start := time.Now()
	errs := make([]error, len(streams))
	var wg sync.WaitGroup
	for i, st := range streams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for w := int64(0); w < writes; w++ {
				if _, err := st.s.Write(chunk); err != nil {
					errs[i] = fmt.Errorf("stream %d writing: %w", i, err)
					return
				}
			}
			// The upstream answers PINGREQ only after everything before it.
			if _, err := st.s.Write(pingreq); err != nil {
				errs[i] = fmt.Errorf("stream %d writing PINGREQ: %w", i, err)
				return
			}
			h, _, err := readPacket(st.r, nil)
			if err == nil && h != typePingresp {
				err = fmt.Errorf("got packet %#02x, want PINGRESP", h)
			}
			if err != nil {
				errs[i] = fmt.Errorf("stream %d waiting for PINGRESP: %w", i, err)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	cpu, cpuErr := meter.stop()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	total := (writes*int64(len(chunk)) + int64(len(pingreq))) * int64(len(streams))
	res := &bulkResult{Streams: len(streams), Bytes: total, ElapsedS: round(elapsed.Seconds(), 3),
		MBPerS: round(float64(total)/1e6/elapsed.Seconds(), 1), CPU: cpu}
	if cpu.TargetS != nil {
		v := round(*cpu.TargetS/(float64(total)/1e9), 3)
		res.TargetCPUSPerGB = &v
	}
	for _, st := range streams {
		_, _ = st.s.Write(disconnect)
	}
	return res, cpuErr
}
