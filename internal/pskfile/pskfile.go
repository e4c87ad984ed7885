package pskfile

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"unicode"

	"github.com/mqtls/mqtls/handshake"
)

// KeyLen is the size of the keys Add makes: 256 bits.
const KeyLen = 32

// Load loads a PSK file in format (mosquitto or stunnel), naming --psk-format when the
// format is not one of those.
func Load(file, format string) (*handshake.PSKStore, error) {
	f, err := handshake.ParsePSKFormat(format)
	if err != nil {
		return nil, fmt.Errorf("--psk-format: %w", err)
	}
	return handshake.LoadPSKFile(file, f)
}

// Add appends a fresh key for identity to file, and writes to stdout what the device
// needs. The file must parse before the line is added, so a typo elsewhere is found now
// rather than at the next serve.
func Add(stdout io.Writer, file, format, identity string) error {
	if err := validPSKIdentity(identity); err != nil {
		return err
	}
	store, err := Load(file, format)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		store = &handshake.PSKStore{}
	case err != nil:
		return err
	}
	if _, ok := store.Lookup(identity); ok {
		return fmt.Errorf("identity %q is already in %s: remove its line first to give it a new key", identity, file)
	}
	hexKey, err := newKey()
	if err != nil {
		return err
	}
	if dir := filepath.Dir(file); dir != "" {
		if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
			// Only the owner may list who the devices are.
			if err := os.MkdirAll(dir, 0o700); err != nil {
				return fmt.Errorf("creating the directory of %s: %w (create it with: install -d -m 700 %s)", file, err, dir)
			}
			fmt.Fprintf(stdout, "created %s (mode 0700)\n", dir)
		}
	}

	f, err := os.OpenFile(file, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("opening PSK file: %w", err)
	}
	line := identity + ":" + hexKey + "\n"
	if fi, err := f.Stat(); err == nil && fi.Size() > 0 && !endsWithNewline(file, fi.Size()) {
		line = "\n" + line
	}
	if _, err := f.WriteString(line); err != nil {
		f.Close()
		return fmt.Errorf("writing PSK file %s: %w", file, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("writing PSK file %s: %w", file, err)
	}
	// A hex key is read the same way in both formats, so the device's side is the same.
	_, err = fmt.Fprintf(stdout, "added %s to %s\ndevice side: mosquitto_pub --psk %s --psk-identity %s ...\n",
		identity, file, hexKey, identity)
	return err
}

func newKey() (string, error) {
	key := make([]byte, KeyLen)
	if _, err := rand.Read(key); err != nil {
		return "", fmt.Errorf("making a key: %w", err)
	}
	return hex.EncodeToString(key), nil
}

// Remove deletes identity's line from file. Comments and the other lines stay as they
// are; the file is replaced in one rename, so a reload never reads half of it.
func Remove(stdout io.Writer, file, format, identity string) error {
	if err := rewrite(file, format, identity, nil); err != nil {
		return err
	}
	_, err := fmt.Fprintf(stdout, "removed %s from %s\n", identity, file)
	return err
}

// Rotate gives identity a fresh key in file and prints it once, for the device.
func Rotate(stdout io.Writer, file, format, identity string) error {
	hexKey, err := newKey()
	if err != nil {
		return err
	}
	line := identity + ":" + hexKey
	if err := rewrite(file, format, identity, &line); err != nil {
		return err
	}
	_, err = fmt.Fprintf(stdout, "new key for %s in %s (shown once)\ndevice side: mosquitto_pub --psk %s --psk-identity %s ...\n",
		identity, file, hexKey, identity)
	return err
}

// rewrite replaces identity's line of file with replacement (nil: removes it). The file
// must load before and after.
func rewrite(file, format, identity string, replacement *string) error {
	store, err := Load(file, format)
	if err != nil {
		return err
	}
	if _, ok := store.Lookup(identity); !ok {
		return fmt.Errorf("identity %q is not in %s (mqtls psk list --file %s lists them)", identity, file, file)
	}
	fi, err := os.Stat(file)
	if err != nil {
		return err
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return fmt.Errorf("reading PSK file: %w", err)
	}
	var out []string
	for _, line := range strings.SplitAfter(string(data), "\n") {
		trimmed := strings.TrimSpace(line)
		id, _, found := strings.Cut(trimmed, ":")
		if found && !strings.HasPrefix(trimmed, "#") && strings.TrimSpace(id) == identity {
			if replacement != nil {
				out = append(out, *replacement+"\n")
			}
			continue
		}
		out = append(out, line)
	}
	tmp, err := os.CreateTemp(filepath.Dir(file), "."+filepath.Base(file)+".*")
	if err != nil {
		return fmt.Errorf("writing PSK file %s: %w", file, err)
	}
	defer os.Remove(tmp.Name()) // after the rename, there is nothing by that name
	if err := tmp.Chmod(fi.Mode().Perm()); err == nil {
		_, err = tmp.WriteString(strings.Join(out, ""))
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("writing PSK file %s: %w", file, err)
	}
	if _, err := Load(tmp.Name(), format); err != nil {
		return fmt.Errorf("not writing %s: the result would not load: %w", file, err)
	}
	if err := os.Rename(tmp.Name(), file); err != nil {
		return fmt.Errorf("writing PSK file %s: %w", file, err)
	}
	return nil
}

// validPSKIdentity refuses identities that cannot be written as one line of a PSK file or
// sent in a ClientKeyExchange.
func validPSKIdentity(id string) error {
	switch {
	case id == "":
		return errors.New("the identity is empty")
	case len(id) > 128:
		return fmt.Errorf("the identity is %d bytes; RFC 4279 allows 128", len(id))
	case strings.ContainsRune(id, ':'):
		return fmt.Errorf("identity %q contains ':', which separates identity and key in the file", id)
	case strings.HasPrefix(id, "#"):
		return fmt.Errorf("identity %q starts with '#', which marks a comment in the file", id)
	case strings.IndexFunc(id, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) >= 0:
		return fmt.Errorf("identity %q contains white space or a control character", id)
	}
	return nil
}

func endsWithNewline(file string, size int64) bool {
	f, err := os.Open(file)
	if err != nil {
		return true
	}
	defer f.Close()
	var b [1]byte
	if _, err := f.ReadAt(b[:], size-1); err != nil {
		return true
	}
	return b[0] == '\n'
}
