package main

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/mqtls/mqtls/handshake/dtlsflood"
)

func floodCommand(out *output) *cli.Command {
	return &cli.Command{
		Name: "dtls-flood",
		Usage: "flood a DTLS listener with cookieless ClientHellos from spoofed 127.0.0.0/8 addresses " +
			"while real DTLS-PSK devices connect (handshake, CONNECT, CONNACK); prints their success rate and the target's memory",
		Flags: append(clientFlags(),
			&cli.IntFlag{Name: "flood-rate", Value: 20000, Usage: "spoofed hellos per second"},
			&cli.DurationFlag{Name: "flood-duration", Value: 30 * time.Second, Usage: "how long the flood lasts"},
			&cli.IntFlag{Name: "flood-sources", Value: 200000, Usage: "distinct spoofed source addresses (cycled)"},
			&cli.IntFlag{Name: "devices", Value: 300, Usage: "real devices, started evenly over the flood"},
			&cli.DurationFlag{Name: "settle", Value: 10 * time.Second, Usage: "after the flood, wait this long before the last memory sample"},
		),
		Action: func(c *cli.Context) error {
			d, err := dialFrom(c)
			if err != nil {
				return err
			}
			if d.mode != modeDTLSPSK {
				return errors.New("dtls-flood needs --mode dtls-psk")
			}
			ap, err := netip.ParseAddrPort(c.String("addr"))
			if err != nil {
				return fmt.Errorf("--addr %q: %w", c.String("addr"), err)
			}
			ctx, cancel := withTimeout(c)
			defer cancel()
			res, err := runFlood(ctx, d, floodParams{
				target: ap, rate: c.Int("flood-rate"), duration: c.Duration("flood-duration"),
				sources: c.Int("flood-sources"), devices: c.Int("devices"), settle: c.Duration("settle"),
				pids: target(c.IntSlice("pid")), clientIDPrefix: c.String("client-id-prefix") + "-" + runID(),
			})
			if res != nil {
				res.header = newHeader(c, "dtls-flood")
				if e := out.emit(res); e != nil {
					return e
				}
			}
			return err
		},
	}
}

type floodParams struct {
	target         netip.AddrPort
	rate, sources  int
	duration       time.Duration
	devices        int
	settle         time.Duration
	pids           target
	clientIDPrefix string
}

// floodResult is the line dtls-flood prints.
type floodResult struct {
	header
	FloodRate     int     `json:"flood_rate"`     // asked for, hellos per second
	FloodSent     int     `json:"flood_sent"`     // hellos sent
	FloodErrors   int     `json:"flood_errors"`   // sends that failed
	FloodAchieved float64 `json:"flood_achieved"` // hellos per second actually sent
	FloodSources  int     `json:"flood_sources"`  // distinct spoofed addresses
	FloodRaw      bool    `json:"flood_raw_socket"`
	Devices       int     `json:"devices"`    // real devices that tried during the flood
	DevicesOK     int     `json:"devices_ok"` // ... and got their CONNACK
	SuccessPct    float64 `json:"success_pct"`
	FirstError    string  `json:"first_error,omitempty"`
	Connect       Latency `json:"connect_us"` // the devices' dial start to CONNACK
	// The target's memory (with --pid): before the flood, the most seen during it, and
	// --settle after it.
	MemBefore *Memory `json:"mem_before,omitempty"`
	MemMax    *Memory `json:"mem_max,omitempty"`
	MemAfter  *Memory `json:"mem_after,omitempty"`
	CPU
	// TargetCPUUsPerHello is the target's CPU time during the flood, per spoofed hello
	// (the devices' handshakes included, a small share).
	TargetCPUUsPerHello *float64 `json:"target_cpu_us_per_hello,omitempty"`
}

func runFlood(ctx context.Context, d *dialConfig, p floodParams) (*floodResult, error) {
	if p.rate <= 0 || p.duration <= 0 || p.devices < 0 {
		return nil, errors.New("--flood-rate and --flood-duration must be positive")
	}
	count := int(float64(p.rate) * p.duration.Seconds())
	res := &floodResult{FloodRate: p.rate}
	sample := func() *Memory {
		if len(p.pids) == 0 {
			return nil
		}
		m, err := p.pids.memory()
		if err != nil {
			return nil
		}
		return &m
	}
	res.MemBefore = sample()
	var peak Memory
	stopSampling := make(chan struct{})
	var wg sync.WaitGroup
	if len(p.pids) > 0 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t := time.NewTicker(250 * time.Millisecond)
			defer t.Stop()
			for {
				select {
				case <-stopSampling:
					return
				case <-t.C:
				}
				if m := sample(); m != nil {
					peak.RSS, peak.PSS = max(peak.RSS, m.RSS), max(peak.PSS, m.PSS)
				}
			}
		}()
	}

	meter := startCPU(p.pids)
	floodCtx, stopFlood := context.WithCancel(ctx)
	defer stopFlood()
	floodDone := make(chan struct{})
	var fr dtlsflood.Result
	var floodErr error
	go func() {
		defer close(floodDone)
		fr, floodErr = dtlsflood.Run(floodCtx, dtlsflood.Config{Target: p.target, Rate: p.rate, Count: count,
			Sources: p.sources, Deadline: p.duration + p.duration/2 + time.Second})
	}()

	// The devices: one every duration/devices, from a moment after the flood starts.
	var (
		mu       sync.Mutex
		timings  []time.Duration
		failed   int
		firstErr error
		devs     sync.WaitGroup
	)
	if p.devices > 0 {
		every := p.duration / time.Duration(p.devices+1)
		tick := time.NewTicker(every)
	devices:
		for i := 0; i < p.devices; i++ {
			select {
			case <-tick.C:
			case <-ctx.Done():
				break devices
			}
			devs.Add(1)
			go func() {
				defer devs.Done()
				t, _, err := openSession(ctx, d, fmt.Sprintf("%s-%d", p.clientIDPrefix, i), false)
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					failed++
					if firstErr == nil {
						firstErr = err
					}
					return
				}
				timings = append(timings, t.connect)
			}()
		}
		tick.Stop()
	}
	devs.Wait()
	<-floodDone
	cpu, cpuErr := meter.stop()

	res.FloodSent, res.FloodErrors, res.FloodSources, res.FloodRaw = fr.Sent, fr.Errors, fr.Sources, fr.Raw
	if fr.Elapsed > 0 {
		res.FloodAchieved = round(float64(fr.Sent)/fr.Elapsed.Seconds(), 0)
	}
	res.Devices, res.DevicesOK = len(timings)+failed, len(timings)
	if res.Devices > 0 {
		res.SuccessPct = round(100*float64(res.DevicesOK)/float64(res.Devices), 2)
	}
	if firstErr != nil {
		res.FirstError = firstErr.Error()
	}
	res.Connect = summarize(timings)
	res.CPU = cpu
	if cpu.TargetS != nil {
		res.TargetCPUUsPerHello = perUnit(*cpu.TargetS, fr.Sent, 1e6)
	}
	if len(p.pids) > 0 {
		select {
		case <-time.After(p.settle):
		case <-ctx.Done():
		}
		close(stopSampling)
		wg.Wait()
		res.MemMax, res.MemAfter = &peak, sample()
	}
	if floodErr != nil {
		return res, floodErr
	}
	return res, cpuErr
}
