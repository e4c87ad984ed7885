package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/urfave/cli/v2"
)

func connsCommand(out *output) *cli.Command {
	return &cli.Command{
		Name:  "conns",
		Usage: "open N sessions at concurrency C: handshake, CONNECT, CONNACK (then DISCONNECT, or --hold)",
		Flags: append(clientFlags(),
			&cli.IntFlag{Name: "n", Value: 100, Usage: "sessions to open"},
			&cli.IntFlag{Name: "c", Value: 16, Usage: "sessions being opened at once"},
			&cli.DurationFlag{Name: "hold", Usage: "keep all sessions open and idle this long, sampling the target's memory (needs --pid)"},
			&cli.DurationFlag{Name: "sample-interval", Value: time.Second, Usage: "memory sampling interval during --hold"},
			&cli.BoolFlag{Name: "resume", Usage: "resume TLS sessions with the tickets earlier sessions of this run received (tls, mtls)"},
		),
		Action: func(c *cli.Context) error {
			d, err := dialFrom(c)
			if err != nil {
				return err
			}
			if c.Duration("hold") > 0 && len(c.IntSlice("pid")) == 0 {
				return errors.New("--hold needs --pid: it measures the target's memory")
			}
			ctx, cancel := withTimeout(c)
			defer cancel()
			res, err := runConns(ctx, d, connsParams{
				n: c.Int("n"), concurrency: c.Int("c"), hold: c.Duration("hold"),
				sampleEvery: c.Duration("sample-interval"), target: target(c.IntSlice("pid")),
				clientIDPrefix: c.String("client-id-prefix") + "-" + runID(), resume: c.Bool("resume"),
			})
			if res != nil {
				res.header = newHeader(c, "conns")
				if e := out.emit(res); e != nil {
					return e
				}
			}
			return err
		},
	}
}

type connsParams struct {
	n, concurrency    int
	hold, sampleEvery time.Duration
	target            target
	clientIDPrefix    string
	resume            bool
}

// connsResult is the line conns prints.
type connsResult struct {
	header
	N           int     `json:"n"`
	Concurrency int     `json:"concurrency"`
	OK          int     `json:"ok"`
	Failed      int     `json:"failed"`
	FirstError  string  `json:"first_error,omitempty"`
	ElapsedS    float64 `json:"elapsed_s"`
	PerS        float64 `json:"per_s"` // sessions completed (through CONNACK) per second
	// Resumed counts the completed sessions that resumed a TLS session (--resume only).
	Resumed *int `json:"resumed,omitempty"`
	// Connect is dial start to CONNACK; Handshake dial start to the end of the secure
	// handshake; Connack the CONNECT→CONNACK round trip (the target's upstream dial and the
	// broker included). Microseconds.
	Connect   Latency `json:"connect_us"`
	Handshake Latency `json:"handshake_us"`
	Connack   Latency `json:"connack_us"`
	CPU
	// TargetCPUUsPerConn is the target's CPU time per completed session: handshake,
	// CONNECT, upstream dial and (without --hold) the close.
	TargetCPUUsPerConn *float64    `json:"target_cpu_us_per_conn,omitempty"`
	Hold               *holdResult `json:"hold,omitempty"`
}

// holdResult is the target's memory with the sessions idle.
type holdResult struct {
	Sessions int     `json:"sessions"`
	HeldS    float64 `json:"held_s"`
	Before   Memory  `json:"before"`
	Held     Memory  `json:"held"` // the last sample
	Max      Memory  `json:"max"`
	// Per session: (Held - Before) / Sessions, KiB.
	RSSKiBPerSession float64 `json:"rss_kib_per_session"`
	PSSKiBPerSession float64 `json:"pss_kib_per_session"`
	CPU
}

type connTiming struct {
	connect, handshake, connack time.Duration
	resumed                     bool
}

func runConns(ctx context.Context, d *dialConfig, p connsParams) (*connsResult, error) {
	if p.n <= 0 || p.concurrency <= 0 {
		return nil, errors.New("--n and --c must be positive")
	}
	res := &connsResult{N: p.n, Concurrency: p.concurrency}
	var before Memory
	if p.hold > 0 {
		m, err := p.target.memory()
		if err != nil {
			return nil, err
		}
		before = m
	}

	var (
		next     atomic.Int64
		mu       sync.Mutex
		timings  = make([]connTiming, 0, p.n)
		held     []*session
		failed   int
		firstErr error
		wg       sync.WaitGroup
	)
	meter := startCPU(p.target)
	start := time.Now()
	for w := 0; w < min(p.concurrency, p.n); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				i := next.Add(1) - 1
				if i >= int64(p.n) {
					return
				}
				t, s, err := openSession(ctx, d, fmt.Sprintf("%s-%d", p.clientIDPrefix, i), p.hold > 0)
				mu.Lock()
				if err != nil {
					failed++
					if firstErr == nil {
						firstErr = err
					}
				} else {
					timings = append(timings, t)
					if s != nil {
						held = append(held, s)
					}
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	cpu, cpuErr := meter.stop()
	defer closeAll(held, p.concurrency)

	res.OK, res.Failed = len(timings), failed
	if p.n > len(timings)+failed { // the timeout stopped the workers
		res.Failed = p.n - len(timings)
		if firstErr == nil {
			firstErr = ctx.Err()
		}
	}
	if firstErr != nil {
		res.FirstError = firstErr.Error()
	}
	res.ElapsedS = round(elapsed.Seconds(), 3)
	res.PerS = round(float64(res.OK)/elapsed.Seconds(), 1)
	var cs, hs, as []time.Duration
	resumed := 0
	for _, t := range timings {
		cs, hs, as = append(cs, t.connect), append(hs, t.handshake), append(as, t.connack)
		if t.resumed {
			resumed++
		}
	}
	if p.resume {
		res.Resumed = &resumed
	}
	res.Connect, res.Handshake, res.Connack = summarize(cs), summarize(hs), summarize(as)
	res.CPU = cpu
	if cpu.TargetS != nil {
		res.TargetCPUUsPerConn = perUnit(*cpu.TargetS, res.OK, 1e6)
	}
	if cpuErr != nil {
		return res, cpuErr
	}
	if p.hold > 0 && ctx.Err() == nil {
		h, err := holdIdle(ctx, p, before, len(held))
		res.Hold = h
		if err != nil {
			return res, err
		}
	}
	if res.Failed > 0 {
		return res, fmt.Errorf("%d of %d sessions failed; first: %s", res.Failed, p.n, res.FirstError)
	}
	return res, nil
}

// openSession dials, secures, sends CONNECT and waits for CONNACK. Unless keep is set it
// then sends DISCONNECT and closes; otherwise it returns the open session.
func openSession(ctx context.Context, d *dialConfig, clientID string, keep bool) (connTiming, *session, error) {
	ctx, cancel := context.WithTimeout(ctx, d.opTimeout)
	defer cancel()
	start := time.Now()
	s, err := d.dial(ctx)
	if err != nil {
		return connTiming{}, nil, err
	}
	t := connTiming{handshake: s.handshake, resumed: s.resumed}
	deadline, _ := ctx.Deadline()
	_ = s.SetDeadline(deadline)
	sent := time.Now()
	if _, err := s.Write(connectPacket(clientID, 0)); err != nil {
		s.Close()
		return t, nil, fmt.Errorf("writing CONNECT: %w", err)
	}
	if err := expectConnack(bufio.NewReaderSize(s, 64)); err != nil {
		s.Close()
		return t, nil, err
	}
	now := time.Now()
	t.connect, t.connack = now.Sub(start), now.Sub(sent)
	if keep {
		_ = s.SetDeadline(time.Time{})
		return t, s, nil
	}
	_, _ = s.Write(disconnect)
	s.Close()
	return t, nil, nil
}

// holdIdle waits p.hold with the sessions open, sampling the target's memory.
func holdIdle(ctx context.Context, p connsParams, before Memory, sessions int) (*holdResult, error) {
	h := &holdResult{Sessions: sessions, Before: before}
	meter := startCPU(p.target)
	start := time.Now()
	every := p.sampleEvery
	if every <= 0 || every > p.hold {
		every = p.hold
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	end := time.NewTimer(p.hold)
	defer end.Stop()
	sample := func() error {
		m, err := p.target.memory()
		if err != nil {
			return err
		}
		h.Held = m
		h.Max.RSS, h.Max.PSS = max(h.Max.RSS, m.RSS), max(h.Max.PSS, m.PSS)
		return nil
	}
	if err := sample(); err != nil {
		return nil, err
	}
loop:
	for {
		select {
		case <-tick.C:
			if err := sample(); err != nil {
				return nil, err
			}
		case <-end.C:
			break loop
		case <-ctx.Done():
			break loop
		}
	}
	if err := sample(); err != nil {
		return nil, err
	}
	h.HeldS = round(time.Since(start).Seconds(), 2)
	if sessions > 0 {
		h.RSSKiBPerSession = round(float64(h.Held.RSS-before.RSS)/float64(sessions), 2)
		h.PSSKiBPerSession = round(float64(h.Held.PSS-before.PSS)/float64(sessions), 2)
	}
	cpu, err := meter.stop()
	h.CPU = cpu
	return h, err
}

// closeAll closes held sessions, c at a time.
func closeAll(held []*session, c int) {
	var wg sync.WaitGroup
	ch := make(chan *session)
	for range max(1, min(c, len(held))) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for s := range ch {
				_ = s.SetDeadline(time.Now().Add(time.Second))
				_, _ = s.Write(disconnect)
				s.Close()
			}
		}()
	}
	for _, s := range held {
		ch <- s
	}
	close(ch)
	wg.Wait()
}
