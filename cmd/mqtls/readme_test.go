package main

import (
	"os"
	"slices"
	"strings"
	"testing"
)

// TestReadme keeps README.md honest about the command line: it opens with the two set-up
// commands. Its flag table and config reference are checked against the schema in
// internal/config (TestReadmeFlags, TestReadmeConfigKeys).
func TestReadme(t *testing.T) {
	data, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(data)

	// The first code block: the quickstart and the test command, nothing else.
	_, rest, ok := strings.Cut(readme, "```sh\n")
	block, _, ok2 := strings.Cut(rest, "```")
	if !ok || !ok2 {
		t.Fatal("README.md has no ```sh code block")
	}
	var cmds []string
	for _, line := range strings.Split(strings.TrimSpace(block), "\n") {
		cmd, _, _ := strings.Cut(line, "#")
		cmds = append(cmds, strings.TrimSpace(cmd))
	}
	if want := []string{"go run ./examples/quickstart", "./scripts/test.sh"}; !slices.Equal(cmds, want) {
		t.Errorf("README.md opens with %q, want %q", cmds, want)
	}
}
