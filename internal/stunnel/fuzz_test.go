package stunnel

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/mqtls/mqtls/internal/config"
)

// FuzzConvertStunnel feeds arbitrary stunnel.conf text to the converter: it must never
// panic, and whatever YAML it prints must parse as a valid config file.
func FuzzConvertStunnel(f *testing.F) {
	seeds, _ := filepath.Glob("testdata/stunnel/*.conf")
	for _, s := range seeds {
		if data, err := os.ReadFile(s); err == nil {
			f.Add(data)
		}
	}
	f.Add([]byte("[mqtt]\naccept = 8883\nconnect = 1883\ncert = a.pem\n"))
	f.Add([]byte("foreground = yes\n[x]\nclient = yes\naccept = 1\nconnect = 2\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		out, _, err := Convert("fuzz.conf", data)
		if err != nil {
			return
		}
		if _, err := config.Parse("converted.yaml", out); err != nil {
			t.Fatalf("converted config does not parse: %v\n%s", err, out)
		}
	})
}
