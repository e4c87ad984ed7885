package kubernetes

import (
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// TestDockerfile checks the image the pod runs against what the manifests assume of it,
// since CI has no container engine to build it: the Go it is built with is go.mod's, the
// binary comes from make release (which CI checks), and its user, ports, entrypoint and
// command are the ones the mqtls containers rely on.
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

	var from, expose []string
	var user, entrypoint, cmd string
	var makeRelease bool
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || strings.HasPrefix(f[0], "#") {
			continue
		}
		switch rest := strings.Join(f[1:], " "); strings.ToUpper(f[0]) {
		case "FROM":
			from = append(from, f[1])
		case "USER":
			user = rest
		case "EXPOSE":
			expose = append(expose, f[1:]...)
		case "ENTRYPOINT":
			entrypoint = rest
		case "CMD":
			cmd = rest
		case "RUN":
			makeRelease = makeRelease || strings.HasPrefix(rest, "make release VERSION=")
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
