package main

import (
	"runtime/debug"
	"strings"
	"testing"
)

// TestVersionFrom: a plain go build reports the revision it was built from, go install
// ...@v1.2.3 the module version, and only a build with neither says dev.
func TestVersionFrom(t *testing.T) {
	for _, tc := range []struct {
		name     string
		main     string
		settings map[string]string
		want     string
	}{
		{"go install of a tag", "v1.2.3", nil, "v1.2.3"},
		{"go build in a clean checkout", "(devel)", map[string]string{"vcs.revision": "0123456789abcdef0123", "vcs.modified": "false"}, "dev-0123456789ab"},
		{"go build with changes", "(devel)", map[string]string{"vcs.revision": "0123456789abcdef0123", "vcs.modified": "true"}, "dev-0123456789ab-dirty"},
		{"no VCS information", "(devel)", nil, "dev"},
	} {
		info := &debug.BuildInfo{Main: debug.Module{Version: tc.main}}
		for k, v := range tc.settings {
			info.Settings = append(info.Settings, debug.BuildSetting{Key: k, Value: v})
		}
		if got := versionFrom(info); got != tc.want {
			t.Errorf("%s: version %q, want %q", tc.name, got, tc.want)
		}
	}
}

// TestVersionAndHelpCommands: --version, -v and version print the same line; help lists
// the commands and help COMMAND shows that command's flags, as urfave/cli users expect.
func TestVersionAndHelpCommands(t *testing.T) {
	want, err := runApp(t, "version")
	if err != nil || !strings.HasPrefix(want, "mqtls ") {
		t.Fatalf("mqtls version: %q, %v", want, err)
	}
	for _, args := range [][]string{{"--version"}, {"-v"}} {
		if got, err := runApp(t, args...); err != nil || got != want {
			t.Errorf("mqtls %s: %q, %v; want %q", args[0], got, err, want)
		}
	}
	out, err := runApp(t, "help")
	if err != nil || !strings.Contains(out, "serve ") || !strings.Contains(out, "init ") {
		t.Errorf("mqtls help: %v\n%s", err, out)
	}
	out, err = runApp(t, "help", "psk")
	if err != nil || !strings.Contains(out, "mqtls psk") || !strings.Contains(out, "add") {
		t.Errorf("mqtls help psk: %v\n%s", err, out)
	}
}
