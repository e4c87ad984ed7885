package main

import (
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"
)

// TestReadme keeps README.md honest about the command line: it opens with the two set-up
// commands, and its flag table lists exactly the flags serve has.
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

	var documented []string
	row := regexp.MustCompile("^\\| (`--[a-z-]+`(?:, `--[a-z-]+`)*) \\|")
	for _, line := range strings.Split(readme, "\n") {
		if m := row.FindStringSubmatch(line); m != nil {
			for _, f := range strings.Split(m[1], ", ") {
				documented = append(documented, strings.Trim(f, "`")[2:])
			}
		}
	}
	var flags []string
	for _, f := range serveFlags() {
		flags = append(flags, f.(cli.DocGenerationFlag).Names()[0])
	}
	for _, f := range flags {
		if !slices.Contains(documented, f) {
			t.Errorf("serve flag --%s is missing from README.md's flag table", f)
		}
	}
	for _, f := range documented {
		if !slices.Contains(flags, f) {
			t.Errorf("README.md's flag table lists --%s, which serve does not have", f)
		}
	}
}

// TestReadmeConfigKeys keeps the README's config file reference complete: every key the
// file accepts appears in it, and the sample parses as a valid file.
func TestReadmeConfigKeys(t *testing.T) {
	data, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(data), "## Config file")
	if !ok {
		t.Fatal("README.md has no \"## Config file\" section")
	}
	_, rest, _ = strings.Cut(rest, "```yaml\n")
	sample, _, ok := strings.Cut(rest, "```")
	if !ok {
		t.Fatal("the Config file section has no ```yaml block")
	}
	for _, k := range yamlKeys(reflect.TypeOf(fileConfig{})) {
		if !regexp.MustCompile(`(?m)^\s*(- )?` + regexp.QuoteMeta(k) + `:`).MatchString(sample) {
			t.Errorf("config key %q is missing from README.md's config reference", k)
		}
	}
	// The sample names files that do not exist here; it must still parse and validate.
	if _, err := parseConfigFile("README.md", []byte(sample)); err != nil {
		t.Errorf("README.md's config sample does not validate: %v", err)
	}
}

// yamlKeys returns every yaml key in t, recursively.
func yamlKeys(t reflect.Type) []string {
	var keys []string
	for t.Kind() == reflect.Slice {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct {
		return nil
	}
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "" || name == "-" {
			continue
		}
		keys = append(keys, name)
		keys = append(keys, yamlKeys(f.Type)...)
	}
	return keys
}
