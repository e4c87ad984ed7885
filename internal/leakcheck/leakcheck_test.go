package leakcheck

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestCount: a goroutine that is running counts, and stops counting once it returns.
func TestCount(t *testing.T) {
	before := Count()
	release, done := make(chan struct{}), make(chan struct{})
	go func() {
		<-release
		close(done)
	}()
	if n := Count(); n != before+1 {
		t.Errorf("Count with one more goroutine = %d, want %d", n, before+1)
	}
	close(release)
	<-done
	Check(t, before) // passes: the goroutine returns
}

// TestCheckFails: Check fails a test that leaves a goroutine running, naming the count and
// showing the stacks. It runs in a child process, since the failure is the point.
func TestCheckFails(t *testing.T) {
	if os.Getenv("LEAKCHECK_CHILD") == "1" {
		before := Count()
		go func() { select {} }() // never returns
		Check(t, before)
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestCheckFails$", "-test.count=1")
	cmd.Env = append(os.Environ(), "LEAKCHECK_CHILD=1")
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("Check passed a test that leaked a goroutine:\n%s", out)
	}
	for _, want := range []string{"goroutines still running", "TestCheckFails.func1"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("the failure does not say %q:\n%s", want, out)
		}
	}
}
