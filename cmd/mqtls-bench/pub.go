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

func pubCommand(out *output) *cli.Command {
	return &cli.Command{
		Name:  "pub",
		Usage: "P publishers and S subscribers through the target; checks every subscriber received every message",
		Flags: append(clientFlags(),
			&cli.IntFlag{Name: "publishers", Value: 4, Usage: "publishing sessions"},
			&cli.IntFlag{Name: "subscribers", Value: 1, Usage: "subscribing sessions, each subscribed to every publisher's topic"},
			&cli.IntFlag{Name: "messages", Value: 10000, Usage: "messages each publisher sends"},
			&cli.IntFlag{Name: "qos", Value: 0, Usage: "0 or 1, for the publishes and the subscriptions"},
			&cli.IntFlag{Name: "payload", Value: 64, Usage: "payload `bytes` per message"},
			&cli.IntFlag{Name: "batch", Value: 32, Usage: "messages a publisher writes in one Write"},
			&cli.IntFlag{Name: "window", Value: 4000, Usage: "most messages published but not yet received by every subscriber (keeps the broker's queues short, so nothing is dropped)"},
			&cli.IntFlag{Name: "inflight", Value: 512, Usage: "QoS 1: most unacknowledged PUBLISHes per publisher"},
		),
		Action: func(c *cli.Context) error {
			d, err := dialFrom(c)
			if err != nil {
				return err
			}
			ctx, cancel := withTimeout(c)
			defer cancel()
			res, err := runPub(ctx, d, pubParams{
				publishers: c.Int("publishers"), subscribers: c.Int("subscribers"), messages: c.Int("messages"),
				qos: byte(c.Int("qos")), payload: c.Int("payload"), batch: c.Int("batch"), window: c.Int("window"),
				inflight: c.Int("inflight"), target: target(c.IntSlice("pid")),
				prefix: c.String("client-id-prefix") + "-" + runID(),
			})
			if res != nil {
				res.header = newHeader(c, "pub")
				if e := out.emit(res); e != nil {
					return e
				}
			}
			return err
		},
	}
}

type pubParams struct {
	publishers, subscribers, messages int
	qos                               byte
	payload, batch, window, inflight  int
	target                            target
	prefix                            string
}

type pubResult struct {
	header
	QoS         int   `json:"qos"`
	Publishers  int   `json:"publishers"`
	Subscribers int   `json:"subscribers"`
	PayloadB    int   `json:"payload_bytes"`
	Batch       int   `json:"batch"`
	Sent        int64 `json:"sent"`
	// ExpectedPerSub is what each subscriber must receive: every message, once.
	ExpectedPerSub int64   `json:"expected_per_subscriber"`
	Received       []int64 `json:"received"` // per subscriber
	OK             bool    `json:"ok"`
	ElapsedS       float64 `json:"elapsed_s"`
	SentPerS       float64 `json:"sent_per_s"`
	CPU
	// TargetCPUUsPerMsg is the target's CPU time per message crossing it: every PUBLISH
	// in from a publisher and every delivery out to a subscriber counts once (QoS 1
	// acknowledgements ride along uncounted).
	TargetCPUUsPerMsg *float64 `json:"target_cpu_us_per_msg,omitempty"`
	FirstError        string   `json:"first_error,omitempty"`
}

// progress tracks what the subscribers received, so publishers can stay within the window.
type progress struct {
	mu      sync.Mutex
	cond    *sync.Cond
	waiting int
	recv    []atomic.Int64
	sent    atomic.Int64
}

func newProgress(subs int) *progress {
	p := &progress{recv: make([]atomic.Int64, subs)}
	p.cond = sync.NewCond(&p.mu)
	return p
}

func (p *progress) minReceived() int64 {
	m := int64(-1)
	for i := range p.recv {
		if v := p.recv[i].Load(); m < 0 || v < m {
			m = v
		}
	}
	return max(m, 0)
}

// received records n more messages for subscriber i and wakes waiting publishers.
func (p *progress) received(i int, n int64) {
	p.recv[i].Add(n)
	p.mu.Lock()
	if p.waiting > 0 {
		p.cond.Broadcast()
	}
	p.mu.Unlock()
}

func (p *progress) wake() {
	p.mu.Lock()
	p.cond.Broadcast()
	p.mu.Unlock()
}

// waitWindow blocks until fewer than window messages are outstanding, or ctx ends.
func (p *progress) waitWindow(ctx context.Context, window int64) error {
	if len(p.recv) == 0 {
		return ctx.Err()
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for p.sent.Load()-p.minReceived() >= window {
		if err := ctx.Err(); err != nil {
			return err
		}
		p.waiting++
		p.cond.Wait()
		p.waiting--
	}
	return ctx.Err()
}

func runPub(ctx context.Context, d *dialConfig, p pubParams) (*pubResult, error) {
	if p.publishers <= 0 || p.subscribers < 0 || p.messages <= 0 || p.qos > 1 || p.batch <= 0 || p.window <= 0 || p.inflight <= 0 || p.inflight > 65535 {
		return nil, errors.New("pub: --publishers, --messages, --batch, --window must be positive, --inflight in 1..65535, --qos 0 or 1")
	}
	res := &pubResult{QoS: int(p.qos), Publishers: p.publishers, Subscribers: p.subscribers, PayloadB: p.payload,
		Batch: p.batch, ExpectedPerSub: int64(p.publishers) * int64(p.messages), Received: make([]int64, p.subscribers)}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	prog := newProgress(p.subscribers)
	stop := context.AfterFunc(ctx, prog.wake)
	defer stop()

	var sessions []*session
	defer func() {
		for _, s := range sessions {
			s.Close()
		}
	}()
	connect := func(id string) (*session, *bufio.Reader, error) {
		octx, ocancel := context.WithTimeout(ctx, d.opTimeout)
		defer ocancel()
		s, err := d.dial(octx)
		if err != nil {
			return nil, nil, err
		}
		sessions = append(sessions, s)
		deadline, _ := octx.Deadline()
		_ = s.SetDeadline(deadline)
		if _, err := s.Write(connectPacket(id, 0)); err != nil {
			return nil, nil, err
		}
		r := bufio.NewReaderSize(s, 64<<10)
		if err := expectConnack(r); err != nil {
			return nil, nil, err
		}
		return s, r, nil
	}
	topicRoot := "bench/" + p.prefix

	// Subscribers first, each acknowledged before anything is published.
	type sub struct {
		s *session
		r *bufio.Reader
	}
	subs := make([]sub, p.subscribers)
	for i := range subs {
		s, r, err := connect(fmt.Sprintf("%s-sub-%d", p.prefix, i))
		if err != nil {
			return nil, fmt.Errorf("connecting subscriber %d: %w", i, err)
		}
		if _, err := s.Write(subscribePacket(1, topicRoot+"/#", p.qos)); err != nil {
			return nil, fmt.Errorf("subscribing: %w", err)
		}
		h, body, err := readPacket(r, nil)
		if err != nil {
			return nil, fmt.Errorf("reading SUBACK: %w", err)
		}
		if h != typeSuback || len(body) != 3 || body[2] > 1 {
			return nil, fmt.Errorf("subscription refused: packet %#02x % x", h, body)
		}
		_ = s.SetDeadline(time.Time{})
		subs[i] = sub{s, r}
	}
	pubs := make([]*session, p.publishers)
	pubReaders := make([]*bufio.Reader, p.publishers)
	for i := range pubs {
		s, r, err := connect(fmt.Sprintf("%s-pub-%d", p.prefix, i))
		if err != nil {
			return nil, fmt.Errorf("connecting publisher %d: %w", i, err)
		}
		_ = s.SetDeadline(time.Time{})
		pubs[i], pubReaders[i] = s, r
	}
	// A blocked read or write must not outlive the run.
	unblock := context.AfterFunc(ctx, func() {
		for _, s := range sessions {
			_ = s.SetDeadline(time.Now())
		}
	})
	defer unblock()

	var (
		errMu    sync.Mutex
		firstErr error
	)
	fail := func(err error) {
		errMu.Lock()
		if firstErr == nil && err != nil {
			firstErr = err
			cancel()
		}
		errMu.Unlock()
	}

	payload := make([]byte, p.payload)
	for i := range payload {
		payload[i] = byte('a' + i%26)
	}
	meter := startCPU(p.target)
	start := time.Now()
	var subsWG, pubsWG sync.WaitGroup
	for i, sb := range subs {
		subsWG.Add(1)
		go func() {
			defer subsWG.Done()
			fail(subscriber(sb.s, sb.r, i, res.ExpectedPerSub, prog))
		}()
	}
	for i := range pubs {
		pubsWG.Add(1)
		go func() {
			defer pubsWG.Done()
			fail(publisher(ctx, pubs[i], pubReaders[i], fmt.Sprintf("%s/%d", topicRoot, i), payload, p, prog))
		}()
	}
	pubsWG.Wait()
	subsWG.Wait()
	elapsed := time.Since(start)
	cpu, cpuErr := meter.stop()

	res.Sent = prog.sent.Load()
	res.OK = firstErr == nil && res.Sent == res.ExpectedPerSub
	var delivered int64
	for i := range res.Received {
		res.Received[i] = prog.recv[i].Load()
		delivered += res.Received[i]
		res.OK = res.OK && res.Received[i] == res.ExpectedPerSub
	}
	res.ElapsedS = round(elapsed.Seconds(), 3)
	res.SentPerS = round(float64(res.Sent)/elapsed.Seconds(), 1)
	res.CPU = cpu
	if cpu.TargetS != nil {
		res.TargetCPUUsPerMsg = perUnit(*cpu.TargetS, int(res.Sent+delivered), 1e6)
	}
	if firstErr != nil {
		res.FirstError = firstErr.Error()
		return res, firstErr
	}
	if cpuErr != nil {
		return res, cpuErr
	}
	if !res.OK {
		return res, fmt.Errorf("pub: sent %d, each subscriber should have received %d, got %v", res.Sent, res.ExpectedPerSub, res.Received)
	}
	for _, s := range sessions {
		_ = s.SetDeadline(time.Now().Add(time.Second))
		_, _ = s.Write(disconnect)
	}
	return res, nil
}

// publisher sends p.messages PUBLISHes on topic in batches, staying within the window and,
// at QoS 1, within p.inflight unacknowledged ones; it returns once all are sent (QoS 0) or
// acknowledged (QoS 1).
func publisher(ctx context.Context, s *session, r *bufio.Reader, topic string, payload []byte, p pubParams, prog *progress) error {
	var credits chan struct{}
	acked := make(chan error, 1)
	if p.qos == 1 {
		credits = make(chan struct{}, p.inflight)
		for range p.inflight {
			credits <- struct{}{}
		}
		go func() {
			var buf []byte
			for n := 0; n < p.messages; n++ {
				h, body, err := readPacket(r, buf)
				if err != nil {
					acked <- fmt.Errorf("publisher reading PUBACK: %w", err)
					return
				}
				buf = body
				if h != typePuback {
					acked <- fmt.Errorf("publisher got packet %#02x, want PUBACK", h)
					return
				}
				credits <- struct{}{}
			}
			acked <- nil
		}()
	}
	buf := make([]byte, 0, p.batch*(len(topic)+len(payload)+8))
	var id uint16
	for sent := 0; sent < p.messages; {
		if err := prog.waitWindow(ctx, int64(p.window)); err != nil {
			return err
		}
		n := min(p.batch, p.messages-sent)
		buf = buf[:0]
		for range n {
			if p.qos == 1 {
				select {
				case <-credits:
				case <-ctx.Done():
					return ctx.Err()
				}
				if id++; id == 0 {
					id = 1
				}
			}
			buf = appendPublish(buf, topic, p.qos, id, payload)
		}
		// Counted before the write, so a subscriber never sees more than was counted.
		prog.sent.Add(int64(n))
		if _, err := s.Write(buf); err != nil {
			return fmt.Errorf("publisher writing: %w", err)
		}
		sent += n
	}
	if p.qos == 1 {
		select {
		case err := <-acked:
			return err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// subscriber counts the PUBLISHes it receives until it has want of them, acknowledging
// QoS 1 ones (in one write per burst of input).
func subscriber(s *session, r *bufio.Reader, i int, want int64, prog *progress) error {
	var (
		got, pending int64
		acks, buf    []byte
	)
	for got < want {
		h, body, err := readPacket(r, buf)
		if err != nil {
			return fmt.Errorf("subscriber %d after %d messages: %w", i, got, err)
		}
		buf = body
		if h&0xF0 != typePublish {
			return fmt.Errorf("subscriber %d got packet %#02x, want PUBLISH", i, h)
		}
		qos, id, err := publishInfo(h, body)
		if err != nil {
			return fmt.Errorf("subscriber %d: %w", i, err)
		}
		if qos == 1 {
			acks = appendPuback(acks, id)
		}
		got++
		pending++
		if r.Buffered() == 0 || got == want {
			if len(acks) > 0 {
				if _, err := s.Write(acks); err != nil {
					return fmt.Errorf("subscriber %d writing PUBACKs: %w", i, err)
				}
				acks = acks[:0]
			}
			prog.received(i, pending)
			pending = 0
		}
	}
	return nil
}
