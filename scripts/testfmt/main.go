// Command testfmt turns `go test -json` into the progress ./scripts/test.sh shows: one line
// per package as it finishes (not in import-path order, which would hold every line behind
// the slowest package), with the run's elapsed time and how many packages are done; every
// line of a failing test's output, and of a package that fails outside its tests (a build
// error, a panic, a timeout); a note naming what is still running when nothing has finished
// for a while; and a closing count of tests passed, failed and skipped.
//
//	go test -json ./... | go run ./scripts/testfmt -packages N
//
// It exits 1 when a package failed or no package reported at all, so a pipe under `set -o
// pipefail` fails even if go test's own status were lost.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"time"
)

func main() {
	packages := flag.Int("packages", 0, "how many packages the run tests, for the done/total count (0: not shown)")
	quiet := flag.Duration("quiet", time.Minute, "name the running packages when none has finished for this long (0: never)")
	flag.Parse()
	f := newFormatter(os.Stdout, *packages, time.Now)
	stop := f.heartbeat(*quiet)
	err := f.read(os.Stdin)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "testfmt:", err)
		os.Exit(1)
	}
	if !f.summary() {
		os.Exit(1)
	}
}

// event is one line of `go test -json` (cmd/test2json's TestEvent), with the build events
// go test adds for packages that do not compile.
type event struct {
	Action      string
	Package     string
	Test        string
	Elapsed     float64
	Output      string
	ImportPath  string // build-output, build-fail
	FailedBuild string // a package-level fail caused by a build failure
}

// pkgState is what a package has said so far.
type pkgState struct {
	started time.Time
	lines   []line          // its output, in order, tests' and its own
	passed  map[string]bool // tests that passed or were skipped: their lines are not shown
}

type line struct{ test, text string }

type formatter struct {
	out     io.Writer
	total   int
	now     func() time.Time
	start   time.Time
	mu      sync.Mutex // guards everything below, and out, against the heartbeat
	pkgs    map[string]*pkgState
	builds  map[string][]string // build-output by import path
	done    int
	failed  []string
	counts  struct{ pass, fail, skip int }
	lastOut time.Time
}

func newFormatter(out io.Writer, total int, now func() time.Time) *formatter {
	t := now()
	return &formatter{out: out, total: total, now: now, start: t, lastOut: t,
		pkgs: map[string]*pkgState{}, builds: map[string][]string{}}
}

// read formats the stream r until it ends. Lines that are not JSON (go test prints some
// errors plainly) are passed through as they come.
func (f *formatter) read(r io.Reader) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		line := sc.Bytes()
		var e event
		if len(line) == 0 || line[0] != '{' || json.Unmarshal(line, &e) != nil {
			f.mu.Lock()
			f.print("%s\n", line)
			f.mu.Unlock()
			continue
		}
		f.handle(e)
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("reading go test -json: %w", err)
	}
	return nil
}

func (f *formatter) pkg(name string) *pkgState {
	p := f.pkgs[name]
	if p == nil {
		p = &pkgState{started: f.now(), passed: map[string]bool{}}
		f.pkgs[name] = p
	}
	return p
}

func (f *formatter) handle(e event) {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch e.Action {
	case "build-output":
		f.builds[e.ImportPath] = append(f.builds[e.ImportPath], e.Output)
		return
	case "build-fail":
		return
	}
	p := f.pkg(e.Package)
	switch {
	case e.Action == "output":
		p.lines = append(p.lines, line{e.Test, e.Output})
	case e.Test != "" && e.Action == "pass":
		f.counts.pass++
		p.passed[e.Test] = true
	case e.Test != "" && e.Action == "skip":
		f.counts.skip++
		p.passed[e.Test] = true
	case e.Test != "" && e.Action == "fail":
		f.counts.fail++
	case e.Test != "":
	case e.Action == "start":
		p.started = f.now()
	case e.Action == "pass", e.Action == "skip", e.Action == "fail":
		f.finish(e, p)
	}
}

// finish prints a package's line, and everything worth reading about it when it failed.
func (f *formatter) finish(e event, p *pkgState) {
	f.done++
	delete(f.pkgs, e.Package)
	status := map[string]string{"pass": "ok  ", "skip": "?   ", "fail": "FAIL"}[e.Action]
	detail := fmt.Sprintf("%.1fs", e.Elapsed)
	if e.Action == "skip" {
		detail = "[no test files]"
	}
	if e.Action == "fail" {
		f.failed = append(f.failed, e.Package)
		if e.FailedBuild != "" {
			detail = "[build failed]"
			f.print("%s", strings.Join(f.builds[e.FailedBuild], ""))
		}
		// In go test's order: the package's own lines and those of tests that failed or
		// never finished (a panic or a timeout ends the binary mid-test); a passing test's
		// log, even a subtest's of a failing test, is noise here.
		for _, l := range p.lines {
			if !p.passed[l.test] && !(l.test == "" && goTestSummary(l.text, e.Package)) {
				f.print("%s", l.text)
			}
		}
	}
	progress := fmt.Sprintf("%d", f.done)
	if f.total > 0 {
		progress = fmt.Sprintf("%d/%d", f.done, f.total)
	}
	f.print("%s %s %s  [%s, %s]\n", status, e.Package, detail, progress, f.elapsed())
}

// goTestSummary tells go test's own closing lines of package pkg ("FAIL", "FAIL\tpkg\t0.1s"),
// which the package's line replaces.
func goTestSummary(text, pkg string) bool {
	text = strings.TrimSuffix(text, "\n")
	if text == "PASS" || text == "FAIL" {
		return true
	}
	f := strings.Fields(text)
	return len(f) >= 2 && (f[0] == "FAIL" || f[0] == "ok") && f[1] == pkg
}

func (f *formatter) elapsed() string {
	return f.now().Sub(f.start).Round(time.Second).String()
}

// print writes to out and notes the time; the caller holds mu.
func (f *formatter) print(format string, args ...any) {
	fmt.Fprintf(f.out, format, args...)
	f.lastOut = f.now()
}

// heartbeat names the packages still running whenever nothing was printed for quiet, so a
// long package does not look like a hang. stop ends it.
func (f *formatter) heartbeat(quiet time.Duration) (stop func()) {
	if quiet <= 0 {
		return func() {}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(quiet / 4)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				f.beat(quiet)
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}

func (f *formatter) beat(quiet time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.now().Sub(f.lastOut) < quiet || len(f.pkgs) == 0 {
		return
	}
	var running []string
	for name, p := range f.pkgs {
		running = append(running, fmt.Sprintf("%s (%s)", name, f.now().Sub(p.started).Round(time.Second)))
	}
	slices.Sort(running)
	f.print("...  still running after %s: %s\n", f.elapsed(), strings.Join(running, ", "))
}

// summary prints the closing lines and tells whether the run passed.
func (f *formatter) summary() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	ok := len(f.failed) == 0 && f.done > 0
	switch {
	case f.done == 0:
		f.print("FAIL no package reported a result\n")
	case len(f.failed) > 0:
		f.print("FAIL %d package(s): %s\n", len(f.failed), strings.Join(f.failed, " "))
	}
	f.print("tests: %d passed, %d failed, %d skipped\n", f.counts.pass, f.counts.fail, f.counts.skip)
	return ok
}
