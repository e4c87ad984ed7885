package main

import (
	"context"
	"strings"
	"testing"
)

// TestUnknownFlagsAndBadValues: an unknown flag names the nearest one or the mqtls flag
// for a ghostunnel or stunnel habit; a bad duration says the format, once.
func TestUnknownFlagsAndBadValues(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ args, want string }{
		{"serve --target 127.0.0.1:1883", "unknown flag --target: mqtls calls it --upstream"},
		{"serve --keystore server.p12", "unknown flag --keystore: mqtls calls it --cert and --key"},
		{"check --allow-cn dev-1", "unknown flag --allow-cn: mqtls calls it --allow"},
		{"serve --uptsream x", "unknown flag --uptsream: did you mean --upstream?"},
		{"serve --listn :1", "unknown flag --listn: did you mean --listen?"},
		{"psk add --fiel x dev", "unknown flag --fiel: did you mean --file?"},
		{"serve --drain-timeout 10", `--drain-timeout "10": not a duration like 10s, 5m or 720h`},
	} {
		_, err := runApp(t, strings.Fields(tc.args)...)
		if err == nil || err.Error() != tc.want && !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("mqtls %s: %v, want %q", tc.args, err, tc.want)
		}
		if err != nil && strings.Count(err.Error(), "like 10s") > 1 {
			t.Errorf("mqtls %s: the format is said more than once: %v", tc.args, err)
		}
	}
}

// TestUnknownEnvironmentVariable: an MQTLS_ variable that sets nothing is warned about.
func TestUnknownEnvironmentVariable(t *testing.T) {
	t.Setenv("MQTLS_UPSTREAMS", "127.0.0.1:1883")
	stdout, stderr := newLineLog(), newLineLog()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	_ = newApp(stdout, stderr).RunContext(ctx, []string{"mqtls", "check", "--psk-file", "/nonexistent"})
	if want := "mqtls: warning: environment variable MQTLS_UPSTREAMS sets nothing: did you mean MQTLS_UPSTREAM?"; !strings.Contains(stderr.String(), want) {
		t.Errorf("stderr %q lacks %q", stderr.String(), want)
	}
}
