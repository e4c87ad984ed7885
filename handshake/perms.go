package handshake

import (
	"fmt"
	"io/fs"
	"os"
)

// LoosePermissions reports whether the file at path, which holds secrets or names who may
// connect (a private key, a PSK file, a pinned-key file), can be read or written by its
// group or by others. mode is its permission bits. The caller warns, at start and from
// `mqtls check`: Kubernetes mounts Secrets 0644 by default, so refusing would break
// sidecars whose pod is the only reader.
func LoosePermissions(path string) (mode fs.FileMode, loose bool, err error) {
	fi, err := os.Stat(path)
	if err != nil {
		return 0, false, fmt.Errorf("checking permissions: %w", err)
	}
	mode = fi.Mode().Perm()
	return mode, mode&0o077 != 0, nil
}
