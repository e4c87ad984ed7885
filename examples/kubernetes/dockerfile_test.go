package kubernetes

import (
	"context"
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestDockerfile checks the image the pod runs against what the manifests assume of it,
// since CI has no container engine to build it: the Go it is built with is go.mod's, the
// binary comes from make release (which CI checks), cross-compiled for the target platform
// on the builder's own (so `docker buildx build --platform linux/amd64,linux/arm64` works
// without emulation), and its user, ports, entrypoint and command are the ones the mqtls
// containers rely on.
func TestDockerfile(t *testing.T) {
	data, err := os.ReadFile("../../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	gomod, err := os.ReadFile("../../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	goLine := regexp.MustCompile(`(?m)^go (\S+)$`).FindSubmatch(gomod)
	if goLine == nil {
		t.Fatal("go.mod has no go line")
	}

	var from, fromPlatform, expose, buildArgs []string
	var user, entrypoint, cmd string
	var makeRelease, crossRelease bool
	release := regexp.MustCompile(`^(?:(GOOS=\$\{?TARGETOS\}?) (GOARCH=\$\{?TARGETARCH\}?) )?make release VERSION=`)
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || strings.HasPrefix(f[0], "#") {
			continue
		}
		switch rest := strings.Join(f[1:], " "); strings.ToUpper(f[0]) {
		case "FROM":
			platform := ""
			for len(f) > 2 && strings.HasPrefix(f[1], "--") {
				if p, ok := strings.CutPrefix(f[1], "--platform="); ok {
					platform = p
				}
				f = slices.Delete(f, 1, 2)
			}
			from = append(from, f[1])
			fromPlatform = append(fromPlatform, platform)
		case "ARG":
			if len(from) == 1 { // the build stage's
				for _, a := range f[1:] {
					name, _, _ := strings.Cut(a, "=")
					buildArgs = append(buildArgs, name)
				}
			}
		case "USER":
			user = rest
		case "EXPOSE":
			expose = append(expose, f[1:]...)
		case "ENTRYPOINT":
			entrypoint = rest
		case "CMD":
			cmd = rest
		case "RUN":
			if m := release.FindStringSubmatch(rest); m != nil {
				makeRelease = true
				crossRelease = crossRelease || m[1] != ""
			}
		}
	}
	if len(from) < 2 {
		t.Fatalf("Dockerfile has %d FROM lines; want a build stage and a final stage", len(from))
	}
	if want := "golang:" + string(goLine[1]) + "-"; !strings.HasPrefix(from[0], want) {
		t.Errorf("Dockerfile builds FROM %s; go.mod says go %s, so want %s<debian release>", from[0], goLine[1], want)
	}
	if !strings.HasPrefix(from[len(from)-1], "gcr.io/distroless/static") || !strings.HasSuffix(from[len(from)-1], ":nonroot") {
		t.Errorf("Dockerfile's final stage is FROM %s; want gcr.io/distroless/static-…:nonroot, which the static release binary needs", from[len(from)-1])
	}
	if !makeRelease {
		t.Error("Dockerfile does not RUN make release VERSION=…: the image would not be the binary CI checks")
	}
	// Multi-arch: build on the builder's platform, cross-compile for the target's.
	if fromPlatform[0] != "$BUILDPLATFORM" {
		t.Errorf("Dockerfile's build stage is FROM --platform=%q; want --platform=$BUILDPLATFORM, so an arm64 image is cross-compiled, not emulated", fromPlatform[0])
	}
	if !slices.Contains(buildArgs, "TARGETOS") || !slices.Contains(buildArgs, "TARGETARCH") {
		t.Errorf("Dockerfile's build stage declares ARGs %v; want TARGETOS and TARGETARCH, which BuildKit sets per --platform", buildArgs)
	}
	if !crossRelease {
		t.Error("Dockerfile does not RUN GOOS=${TARGETOS} GOARCH=${TARGETARCH} make release …: every platform would get the builder's binary")
	}
	if fromPlatform[len(fromPlatform)-1] != "" {
		t.Errorf("Dockerfile's final stage is pinned to --platform=%s; it must follow the target platform", fromPlatform[len(fromPlatform)-1])
	}
	if !strings.Contains(string(data), "docker buildx build --platform linux/amd64,linux/arm64") {
		t.Error("Dockerfile does not show the multi-arch build command (docker buildx build --platform linux/amd64,linux/arm64 …)")
	}
	if entrypoint != `["/mqtls"]` || cmd != `["serve"]` {
		t.Errorf(`Dockerfile: ENTRYPOINT %s CMD %s; the manifests rely on ENTRYPOINT ["/mqtls"] and CMD ["serve"]`, entrypoint, cmd)
	}
	if want := fmt.Sprintf("%d:%d", imageUser, imageUser); user != want {
		t.Errorf("Dockerfile: USER %q, want %s (numeric, so runAsNonRoot can check it; the manifests' runAsUser)", user, want)
	}

	m := loadManifests(t)
	for _, d := range m.deployments {
		for _, c := range d.Spec.Template.Spec.allContainers() {
			if !isMqtls(c) {
				continue
			}
			for _, p := range c.Ports {
				if port := fmt.Sprintf("%d/%s", p.ContainerPort, strings.ToLower(p.protocol())); !slices.Contains(expose, port) {
					t.Errorf("%s: container %s uses port %s, which the Dockerfile does not EXPOSE (%v)", d.file, c.Name, port, expose)
				}
			}
		}
	}
}

// TestCrossBuild builds mqtls for linux/arm64 as the Dockerfile's build stage does for an
// arm64 --platform (make release's flags with GOARCH=arm64), since CI cannot run buildx,
// and checks that the result is a static arm64 executable.
func TestCrossBuild(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "mqtls")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags=-s -w", "-o", bin, "github.com/mqtls/mqtls/cmd/mqtls")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=arm64")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("GOOS=linux GOARCH=arm64 go build ./cmd/mqtls: %v\n%s", err, out)
	}
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if f.Machine != elf.EM_AARCH64 {
		t.Errorf("the arm64 build is for %v", f.Machine)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Error("the arm64 build has a dynamic loader (PT_INTERP): distroless/static has no libc")
		}
	}
}
