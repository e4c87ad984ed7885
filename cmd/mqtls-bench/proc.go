package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// userHZ is the unit of utime and stime in /proc/<pid>/stat (USER_HZ): 100 on every Linux
// ABI Go runs on, whatever the kernel's internal tick.
const userHZ = 100

// procRoot is where /proc is; tests point it at a fixture tree.
var procRoot = "/proc"

// parseStatCPU returns utime+stime from the contents of /proc/<pid>/stat. The command
// name (field 2) is in parentheses and may itself contain spaces and parentheses, so the
// fields are counted after the last ')'.
func parseStatCPU(stat []byte) (time.Duration, error) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, errors.New("proc stat: no ')' after the command name")
	}
	f := strings.Fields(string(stat[i+1:]))
	// f[0] is field 3 (state); utime is field 14 and stime field 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("proc stat: %d fields after the command name, want at least 13", len(f))
	}
	ut, err := strconv.ParseUint(f[11], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("proc stat: utime: %w", err)
	}
	st, err := strconv.ParseUint(f[12], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("proc stat: stime: %w", err)
	}
	return time.Duration(ut+st) * time.Second / userHZ, nil
}

// parseKiB returns the value of a "Name:   1234 kB" line in /proc status-like contents.
func parseKiB(data []byte, name string) (int64, error) {
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := sc.Text()
		rest, ok := strings.CutPrefix(line, name+":")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("proc: %s line %q: want a number of kB", name, line)
		}
		return strconv.ParseInt(f[0], 10, 64)
	}
	return 0, fmt.Errorf("proc: no %s line", name)
}

// cpuTime returns the user+system CPU time all threads of pid have used, dead ones
// included.
func cpuTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("%s/%d/stat", procRoot, pid))
	if err != nil {
		return 0, err
	}
	return parseStatCPU(b)
}

// Memory is a process's resident and proportional set size, in KiB.
type Memory struct {
	RSS int64 `json:"rss_kib"`
	PSS int64 `json:"pss_kib"`
}

func memory(pid int) (Memory, error) {
	st, err := os.ReadFile(fmt.Sprintf("%s/%d/status", procRoot, pid))
	if err != nil {
		return Memory{}, err
	}
	rss, err := parseKiB(st, "VmRSS")
	if err != nil {
		return Memory{}, err
	}
	sm, err := os.ReadFile(fmt.Sprintf("%s/%d/smaps_rollup", procRoot, pid))
	if err != nil {
		return Memory{}, err
	}
	pss, err := parseKiB(sm, "Pss")
	if err != nil {
		return Memory{}, err
	}
	return Memory{RSS: rss, PSS: pss}, nil
}

// target is the set of processes being measured (nginx is a master and a worker); their
// CPU times and memories are summed. An empty target measures nothing.
type target []int

func (t target) cpu() (time.Duration, error) {
	var sum time.Duration
	for _, pid := range t {
		d, err := cpuTime(pid)
		if err != nil {
			return 0, fmt.Errorf("reading the CPU time of pid %d: %w", pid, err)
		}
		sum += d
	}
	return sum, nil
}

func (t target) memory() (Memory, error) {
	var sum Memory
	for _, pid := range t {
		m, err := memory(pid)
		if err != nil {
			return Memory{}, fmt.Errorf("reading the memory of pid %d: %w", pid, err)
		}
		sum.RSS += m.RSS
		sum.PSS += m.PSS
	}
	return sum, nil
}

// parseSchedstat returns the first field of /proc/<pid>/task/<tid>/schedstat: the time the
// thread has run on a CPU, in nanoseconds.
func parseSchedstat(b []byte) (time.Duration, error) {
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0, errors.New("proc schedstat: empty")
	}
	ns, err := strconv.ParseUint(f[0], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("proc schedstat: %w", err)
	}
	return time.Duration(ns), nil
}

// threadTimes returns the run time of every live thread of the target, by pid/tid.
func (t target) threadTimes() (map[[2]int]time.Duration, error) {
	out := map[[2]int]time.Duration{}
	for _, pid := range t {
		dir := fmt.Sprintf("%s/%d/task", procRoot, pid)
		ents, err := os.ReadDir(dir)
		if err != nil {
			return nil, err
		}
		for _, e := range ents {
			tid, err := strconv.Atoi(e.Name())
			if err != nil {
				continue
			}
			b, err := os.ReadFile(dir + "/" + e.Name() + "/schedstat")
			if err != nil {
				continue // the thread ended meanwhile
			}
			d, err := parseSchedstat(b)
			if err != nil {
				return nil, err
			}
			out[[2]int{pid, tid}] = d
		}
	}
	return out, nil
}

// statTick is the resolution of /proc/<pid>/stat's CPU times.
const statTick = time.Second / userHZ

// cpuDelta picks the best measure of the CPU time used between two samples. stat's
// utime+stime counts every thread, ended ones too, but in 10 ms ticks; the threads'
// schedstat counts nanoseconds but only threads still alive. When the two agree within
// stat's rounding (nothing ran on threads that ended), the precise one is used.
func cpuDelta(stat0, stat1 time.Duration, th0, th1 map[[2]int]time.Duration) (time.Duration, string) {
	coarse := stat1 - stat0
	if th0 == nil || th1 == nil {
		return coarse, "stat"
	}
	var fine time.Duration
	for k, v := range th1 {
		fine += v - th0[k]
	}
	if diff := coarse - fine; diff <= 2*statTick && diff >= -2*statTick {
		return fine, "schedstat"
	}
	return coarse, "stat"
}

// cpuMeter measures the CPU time the target and this process use between start and stop.
type cpuMeter struct {
	t              target
	target0, self0 time.Duration
	threads0       map[[2]int]time.Duration
	targetErr      error
	selfErr        error
}

func startCPU(t target) *cpuMeter {
	m := &cpuMeter{t: t}
	if len(t) > 0 {
		m.threads0, _ = t.threadTimes()
		m.target0, m.targetErr = t.cpu()
	}
	m.self0, m.selfErr = cpuTime(os.Getpid())
	return m
}

// CPU is what a run cost: the target's CPU time (absent without --pid) and the load
// tool's own, in seconds; TargetSource says how the target's was measured ("schedstat":
// to the nanosecond; "stat": to 10 ms, when threads ended during the run).
type CPU struct {
	TargetS      *float64 `json:"target_cpu_s,omitempty"`
	TargetSource string   `json:"target_cpu_source,omitempty"`
	ClientS      float64  `json:"client_cpu_s"`
}

func (m *cpuMeter) stop() (CPU, error) {
	var out CPU
	if d, err := cpuTime(os.Getpid()); err == nil && m.selfErr == nil {
		out.ClientS = round((d - m.self0).Seconds(), 3)
	}
	if len(m.t) == 0 {
		return out, nil
	}
	if m.targetErr != nil {
		return out, m.targetErr
	}
	d, err := m.t.cpu()
	if err != nil {
		return out, err
	}
	th1, _ := m.t.threadTimes()
	delta, src := cpuDelta(m.target0, d, m.threads0, th1)
	s := round(delta.Seconds(), 6)
	out.TargetS, out.TargetSource = &s, src
	return out, nil
}
