package kubernetes

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// The checks in this file are about the repository a newcomer clones rather than about
// Kubernetes; they live here beside TestDockerfile because the image build is where a stray
// binary or a wrong Go version bites (COPY . . takes whatever the build context holds).

// TestBuildOutputsIgnored builds every main package the way a newcomer would with plain
// `go build`, and checks that the binary it leaves, in the repository root (`go build
// ./cmd/mqtls`) or in the package's directory (`go build` there), is ignored by both
// .gitignore and .dockerignore, while the package's sources are ignored by neither.
func TestBuildOutputsIgnored(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	docker, err := readDockerignore(filepath.Join(root, ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	list := exec.CommandContext(ctx, "go", "list", "-f", `{{if eq .Name "main"}}{{.Dir}}{{end}}`, "./...")
	list.Dir = root
	out, err := list.Output()
	if err != nil {
		t.Fatalf("go list ./...: %v", err)
	}
	mains := strings.Fields(string(out))
	if len(mains) < 4 {
		t.Fatalf("go list found %d main packages (%q); want at least cmd/mqtls, cmd/mqtls-bench and the two examples", len(mains), mains)
	}
	for _, dir := range mains {
		rel, err := filepath.Rel(root, dir)
		if err != nil {
			t.Fatal(err)
		}
		rel = filepath.ToSlash(rel)
		t.Run(rel, func(t *testing.T) {
			// -o with a directory: go build names the binary as it would in place.
			outDir := t.TempDir()
			build := exec.CommandContext(ctx, "go", "build", "-o", outDir+string(filepath.Separator), "./"+rel)
			build.Dir = root
			if out, err := build.CombinedOutput(); err != nil {
				t.Fatalf("go build ./%s: %v\n%s", rel, err, out)
			}
			entries, err := os.ReadDir(outDir)
			if err != nil || len(entries) != 1 {
				t.Fatalf("go build ./%s wrote %d files, want 1 (%v)", rel, len(entries), err)
			}
			name := entries[0].Name()
			for _, bin := range []string{name, rel + "/" + name} {
				if !gitIgnored(t, root, bin) {
					t.Errorf(".gitignore does not cover %s, which go build leaves for ./%s: add /%s", bin, rel, bin)
				}
				if !docker.excludes(bin) {
					t.Errorf(".dockerignore does not cover %s, which go build leaves for ./%s: add %s", bin, rel, bin)
				}
			}
			srcs, err := filepath.Glob(filepath.Join(dir, "*.go"))
			if err != nil || len(srcs) == 0 {
				t.Fatalf("no Go files in %s (%v)", rel, err)
			}
			for _, src := range srcs {
				file := rel + "/" + filepath.Base(src)
				if gitIgnored(t, root, file) {
					t.Errorf(".gitignore hides the source %s: anchor the binary's pattern", file)
				}
				if !strings.HasSuffix(file, "_test.go") && docker.excludes(file) {
					t.Errorf(".dockerignore leaves the source %s out of the image build", file)
				}
			}
		})
	}
}

// gitIgnored asks git whether .gitignore covers file (relative to root), whether or not
// the file exists or is tracked.
func gitIgnored(t *testing.T, root, file string) bool {
	t.Helper()
	cmd := exec.Command("git", "check-ignore", "-q", "--no-index", "--", file)
	cmd.Dir = root
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return true
	case errors.As(err, &exit) && exit.ExitCode() == 1:
		return false
	}
	t.Fatalf("git check-ignore %s in %s: %v (the test needs git and the repository's checkout)", file, root, err)
	return false
}

// dockerignore is a .dockerignore read the way docker reads one, simply: each pattern is
// matched against the whole path from the context's root (path.Match per segment, ** for
// any number of segments), a pattern that matches a directory excludes what is under it,
// lines starting with ! re-include, and the last pattern that matches decides.
type dockerignore []struct {
	pattern string
	include bool
}

func readDockerignore(file string) (dockerignore, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var d dockerignore
	for _, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		p, include := strings.CutPrefix(line, "!")
		p = strings.TrimPrefix(path.Clean(strings.TrimSpace(p)), "/")
		d = append(d, struct {
			pattern string
			include bool
		}{p, include})
	}
	return d, nil
}

// excludes tells whether the path file (slash-separated, relative to the context root)
// is left out of the build context.
func (d dockerignore) excludes(file string) bool {
	excluded := false
	segs := strings.Split(file, "/")
	for _, p := range d {
		// The path itself or any directory above it.
		for n := 1; n <= len(segs); n++ {
			if matchSegments(strings.Split(p.pattern, "/"), segs[:n]) {
				excluded = !p.include
				break
			}
		}
	}
	return excluded
}

func matchSegments(pattern, segs []string) bool {
	if len(pattern) == 0 {
		return len(segs) == 0
	}
	if pattern[0] == "**" {
		for i := 0; i <= len(segs); i++ {
			if matchSegments(pattern[1:], segs[i:]) {
				return true
			}
		}
		return false
	}
	if len(segs) == 0 {
		return false
	}
	ok, err := path.Match(pattern[0], segs[0])
	return err == nil && ok && matchSegments(pattern[1:], segs[1:])
}

// TestDockerignoreMatcher pins the simple .dockerignore reading above on the cases the
// build-output check relies on.
func TestDockerignoreMatcher(t *testing.T) {
	d := dockerignore{
		{pattern: "mqtls"}, {pattern: "cmd/mqtls/mqtls"}, {pattern: "bin"},
		{pattern: "**/testdata"}, {pattern: "**/*_test.go"}, {pattern: "keep_test.go", include: true},
	}
	for file, want := range map[string]bool{
		"mqtls":                          true,
		"cmd/mqtls":                      false, // root-anchored: the package directory stays
		"cmd/mqtls/main.go":              false,
		"cmd/mqtls/mqtls":                true,
		"bin/mqtls":                      true, // under an excluded directory
		"handshake/testdata/fuzz/x":      true,
		"handshake/psk_test.go":          true,
		"psk_test.go":                    true, // ** matches no directory too
		"keep_test.go":                   false,
		"examples/quickstart/quickstart": false,
	} {
		if got := d.excludes(file); got != want {
			t.Errorf("excludes(%q) = %v, want %v", file, got, want)
		}
	}
}

// TestReadmeGoVersion checks that README.md names go.mod's Go version before its first
// command: an older Go (Debian's packaged one) fails with "invalid go version" or "go.mod
// requires go >= …", and a newcomer should know that before trying.
func TestReadmeGoVersion(t *testing.T) {
	gomod, err := os.ReadFile("../../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^go (\S+)$`).FindSubmatch(gomod)
	if m == nil {
		t.Fatal("go.mod has no go line")
	}
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	before, _, ok := strings.Cut(string(readme), "```sh\n")
	if !ok {
		t.Fatal("README.md has no ```sh code block")
	}
	if want := "Go " + string(m[1]); !strings.Contains(before, want) {
		t.Errorf("README.md does not say %q (go.mod's go line) before its first command", want)
	}
}
