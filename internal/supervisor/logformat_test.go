package supervisor

import (
	"bytes"
	"io"
	"os"
	"testing"
)

// TestConsoleFormat: auto writes for a person on a terminal and JSON anywhere else,
// /dev/null (a character device, not a terminal) included.
func TestConsoleFormat(t *testing.T) {
	pty, err := os.OpenFile("/dev/ptmx", os.O_RDWR, 0)
	if err != nil {
		t.Fatalf("opening a pseudo-terminal: %v", err)
	}
	defer pty.Close()
	null, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer null.Close()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	for _, tc := range []struct {
		name   string
		w      io.Writer
		format string
		want   bool
	}{
		{"auto on a terminal", pty, "auto", true},
		{"auto on /dev/null", null, "auto", false},
		{"auto on a pipe", w, "auto", false},
		{"auto on a buffer", &bytes.Buffer{}, "auto", false},
		{"json on a terminal", pty, "json", false},
		{"console on a pipe", w, "console", true},
	} {
		if got := consoleFormat(tc.w, tc.format); got != tc.want {
			t.Errorf("%s: console = %v, want %v", tc.name, got, tc.want)
		}
	}
}
