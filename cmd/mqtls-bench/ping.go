package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/urfave/cli/v2"
)

func pingCommand(out *output) *cli.Command {
	return &cli.Command{
		Name:  "ping",
		Usage: "PINGREQ→PINGRESP round trips over one session, one at a time",
		Flags: append(clientFlags(),
			&cli.IntFlag{Name: "count", Value: 1000, Usage: "round trips measured"},
			&cli.IntFlag{Name: "warmup", Value: 100, Usage: "round trips made first and not measured"},
			&cli.DurationFlag{Name: "interval", Usage: "pause between round trips (0: none)"},
		),
		Action: func(c *cli.Context) error {
			d, err := dialFrom(c)
			if err != nil {
				return err
			}
			ctx, cancel := withTimeout(c)
			defer cancel()
			res, err := runPing(ctx, d, c.Int("count"), c.Int("warmup"), c.Duration("interval"),
				target(c.IntSlice("pid")), c.String("client-id-prefix")+"-"+runID())
			if res != nil {
				res.header = newHeader(c, "ping")
				if e := out.emit(res); e != nil {
					return e
				}
			}
			return err
		},
	}
}

type pingResult struct {
	header
	Count int     `json:"count"`
	RTT   Latency `json:"rtt_us"`
	CPU
	TargetCPUUsPerPing *float64 `json:"target_cpu_us_per_ping,omitempty"`
}

func runPing(ctx context.Context, d *dialConfig, count, warmup int, interval time.Duration, t target, clientID string) (*pingResult, error) {
	if count <= 0 || warmup < 0 {
		return nil, errors.New("ping: --count must be positive and --warmup not negative")
	}
	octx, ocancel := context.WithTimeout(ctx, d.opTimeout)
	s, err := d.dial(octx)
	ocancel()
	if err != nil {
		return nil, err
	}
	defer s.Close()
	stop := context.AfterFunc(ctx, func() { _ = s.SetDeadline(time.Now()) })
	defer stop()
	_ = s.SetDeadline(time.Now().Add(d.opTimeout))
	if _, err := s.Write(connectPacket(clientID, 0)); err != nil {
		return nil, fmt.Errorf("writing CONNECT: %w", err)
	}
	r := bufio.NewReaderSize(s, 256)
	if err := expectConnack(r); err != nil {
		return nil, err
	}
	_ = s.SetDeadline(time.Time{})

	rtts := make([]time.Duration, 0, count)
	var meter *cpuMeter
	for i := 0; i < warmup+count; i++ {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("ping after %d round trips: %w", i, ctx.Err())
		}
		if i == warmup {
			meter = startCPU(t)
		}
		if interval > 0 && i > 0 {
			time.Sleep(interval)
		}
		start := time.Now()
		if _, err := s.Write(pingreq); err != nil {
			return nil, fmt.Errorf("writing PINGREQ: %w", err)
		}
		h, _, err := readPacket(r, nil)
		if err != nil {
			return nil, fmt.Errorf("reading PINGRESP: %w", err)
		}
		if h != typePingresp {
			return nil, fmt.Errorf("got packet %#02x, want PINGRESP", h)
		}
		if i >= warmup {
			rtts = append(rtts, time.Since(start))
		}
	}
	cpu, err := meter.stop()
	res := &pingResult{Count: count, RTT: summarize(rtts), CPU: cpu}
	if cpu.TargetS != nil {
		res.TargetCPUUsPerPing = perUnit(*cpu.TargetS, count, 1e6)
	}
	_, _ = s.Write(disconnect)
	return res, err
}
