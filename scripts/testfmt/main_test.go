package main

import (
	"bytes"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"
)

// A stream as go test -json writes it: a package that passes (with a test's log, which is
// not shown), one with no tests, one whose test fails (its log and a passing sibling's),
// and one that does not build.
const stream = `{"Action":"start","Package":"m/slow"}
{"Action":"start","Package":"m/bad"}
{"Action":"run","Package":"m/bad","Test":"TestGood"}
{"Action":"output","Package":"m/bad","Test":"TestGood","Output":"=== RUN   TestGood\n"}
{"Action":"output","Package":"m/bad","Test":"TestGood","Output":"    good_test.go:3: quiet\n"}
{"Action":"pass","Package":"m/bad","Test":"TestGood","Elapsed":0}
{"Action":"output","Package":"m/bad","Test":"TestBad","Output":"=== RUN   TestBad\n"}
{"Action":"output","Package":"m/bad","Test":"TestBad/sub","Output":"    bad_test.go:9: want 1, got 2\n"}
{"Action":"fail","Package":"m/bad","Test":"TestBad/sub","Elapsed":0}
{"Action":"output","Package":"m/bad","Test":"TestBad","Output":"--- FAIL: TestBad (0.00s)\n"}
{"Action":"fail","Package":"m/bad","Test":"TestBad","Elapsed":0}
{"Action":"output","Package":"m/bad","Output":"panic: in TestMain\n"}
{"Action":"output","Package":"m/bad","Output":"FAIL\n"}
{"Action":"output","Package":"m/bad","Output":"FAIL\tm/bad\t0.5s\n"}
{"Action":"fail","Package":"m/bad","Elapsed":0.5}
{"Action":"skip","Package":"m/none","Elapsed":0}
{"ImportPath":"m/broken","Action":"build-output","Output":"# m/broken\n"}
{"ImportPath":"m/broken","Action":"build-output","Output":"broken.go:3:1: syntax error\n"}
{"ImportPath":"m/broken","Action":"build-fail"}
{"Action":"fail","Package":"m/broken","Elapsed":0,"FailedBuild":"m/broken"}
go: warning: a plain line
{"Action":"output","Package":"m/slow","Test":"TestSlow","Output":"    slow_test.go:3: chatty\n"}
{"Action":"pass","Package":"m/slow","Test":"TestSlow","Elapsed":4}
{"Action":"skip","Package":"m/slow","Test":"TestSkipped","Elapsed":0}
{"Action":"pass","Package":"m/slow","Elapsed":4.06}
`

func TestFormat(t *testing.T) {
	var out bytes.Buffer
	f := newFormatter(&out, 4, time.Now)
	if err := f.read(strings.NewReader(stream)); err != nil {
		t.Fatal(err)
	}
	if f.summary() {
		t.Error("summary says the run passed; two packages failed")
	}
	got := out.String()
	t.Logf("output:\n%s", got)
	for _, want := range []string{
		"=== RUN   TestBad\n    bad_test.go:9: want 1, got 2\n--- FAIL: TestBad (0.00s)\npanic: in TestMain\nFAIL m/bad 0.5s  [1/4, 0s]\n",
		"?    m/none [no test files]  [2/4, 0s]\n",
		"# m/broken\nbroken.go:3:1: syntax error\nFAIL m/broken [build failed]  [3/4, 0s]\n",
		"go: warning: a plain line\n",
		"ok   m/slow 4.1s  [4/4, 0s]\n",
		"FAIL 2 package(s): m/bad m/broken\n",
		"tests: 2 passed, 2 failed, 1 skipped\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	for _, hidden := range []string{"quiet", "chatty", "TestGood"} {
		if strings.Contains(got, hidden) {
			t.Errorf("output shows %q, the log of a passing test", hidden)
		}
	}
	if !strings.HasSuffix(got, "tests: 2 passed, 2 failed, 1 skipped\n") {
		t.Errorf("the count is not the last line")
	}
}

func TestFormatPassAndEmpty(t *testing.T) {
	for _, tc := range []struct {
		name, stream string
		pass         bool
		last         string
	}{
		{"pass", `{"Action":"pass","Package":"m/a","Test":"TestA"}` + "\n" + `{"Action":"pass","Package":"m/a","Elapsed":1}` + "\n", true, "tests: 1 passed, 0 failed, 0 skipped\n"},
		{"nothing", "", false, "FAIL no package reported a result\ntests: 0 passed, 0 failed, 0 skipped\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			f := newFormatter(&out, 0, time.Now)
			if err := f.read(strings.NewReader(tc.stream)); err != nil {
				t.Fatal(err)
			}
			if got := f.summary(); got != tc.pass {
				t.Errorf("summary = %v, want %v", got, tc.pass)
			}
			if !strings.HasSuffix(out.String(), tc.last) {
				t.Errorf("output %q does not end with %q", out.String(), tc.last)
			}
		})
	}
}

// TestHeartbeat checks that a long silence names the packages still running, and only then.
func TestHeartbeat(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	var out bytes.Buffer
	f := newFormatter(&out, 0, clock)
	f.handle(event{Action: "start", Package: "m/slow"})
	now = now.Add(30 * time.Second)
	f.beat(time.Minute)
	if out.Len() != 0 {
		t.Fatalf("beat after 30s of a 1m quiet period printed %q", out.String())
	}
	now = now.Add(45 * time.Second)
	f.beat(time.Minute)
	if want := "...  still running after 1m15s: m/slow (1m15s)\n"; out.String() != want {
		t.Errorf("beat printed %q, want %q", out.String(), want)
	}
}

// TestTestSh keeps promises scripts/test.sh makes to whoever runs it on their own machine:
// it never stops, disables, restarts or kills a service it did not start (the tests use
// their own brokers on free ports), it says up front how long a full run takes, and its
// go test runs through this formatter.
func TestTestSh(t *testing.T) {
	data, err := os.ReadFile("../test.sh")
	if err != nil {
		t.Fatal(err)
	}
	var code []string
	for _, line := range strings.Split(string(data), "\n") {
		if l := strings.TrimSpace(line); l != "" && !strings.HasPrefix(l, "#") {
			code = append(code, l)
		}
	}
	script := strings.Join(code, "\n")
	for _, banned := range []*regexp.Regexp{
		regexp.MustCompile(`\bsystemctl\b`),
		regexp.MustCompile(`\bservice\s+\S+\s+(stop|restart|reload)\b`),
		regexp.MustCompile(`\b(pkill|killall)\b`),
		regexp.MustCompile(`\bupdate-rc\.d\b`),
	} {
		if m := banned.FindString(script); m != "" {
			t.Errorf("scripts/test.sh runs %q: it must leave the machine's services alone", m)
		}
	}
	for _, want := range []string{
		"a full run takes about",           // said up front, in the first output line
		`"${MQTLS_TEST_PKGS:-./...}"`,      // the default is the whole module
		"-json",                            // go test's events ...
		`"$tmp/testfmt" -packages`,         // ... through this formatter
		`printf 'test.sh: %s\n' "$counts"`, // the count is the last line
	} {
		if !strings.Contains(script, want) {
			t.Errorf("scripts/test.sh lacks %q", want)
		}
	}
}
