package supervisor

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"os"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/mqtls/mqtls/handshake"
	"github.com/mqtls/mqtls/internal/admin"
	"github.com/mqtls/mqtls/internal/config"
)

// reloader re-reads certificate, CA, CRL and PSK files when they change (polled, which
// also sees a Kubernetes Secret volume's ..data symlink swap) or on SIGHUP. A reload that
// fails keeps the old material.
type reloader struct {
	log zerolog.Logger
	m   *admin.Metrics
	sup *supervisor
	// revokeTerminates closes sessions whose credentials the reloaded files no longer
	// accept: a PSK removed or changed, a pinned key removed, a certificate revoked or no
	// longer verifying.
	revokeTerminates bool
	// crlWindow is the expiry warning's window for CRLs.
	crlWindow time.Duration

	mu    sync.Mutex
	sums  map[string][32]byte // file → content hash at the last look
	files []handshake.FileInfo
	// retry holds, per material, the files of a failed reload, tried once more.
	retry map[any][]string
}

// component is one reloadable thing: a TLS server's files or a PSK store's file.
type component struct {
	key    any // the *handshake.TLSServer or *handshake.PSKStore
	files  []string
	reload func() error
	// listeners are the names of the listeners that use it, for the reload lines; spec is
	// the first one's, to name the file at fault when a reload fails.
	listeners []string
	spec      config.ListenerSpec
}

// components lists what the running listeners loaded, each once.
func (r *reloader) components() []component {
	index := map[any]int{}
	var out []component
	add := func(key any, l *running, mk func() component) {
		if i, ok := index[key]; ok {
			out[i].listeners = append(out[i].listeners, l.spec.Name)
			return
		}
		c := mk()
		c.key, c.listeners, c.spec = key, []string{l.spec.Name}, l.spec
		index[key] = len(out)
		out = append(out, c)
	}
	for _, l := range r.sup.all() {
		for _, mat := range l.mat.withTenants() {
			if t := mat.tls; t != nil {
				add(t, l, func() component {
					c := t.Config()
					files := []string{c.CertFile, c.KeyFile}
					if c.ClientCAFile != "" {
						files = append(files, c.ClientCAFile)
					}
					if c.ClientKeysFile != "" {
						files = append(files, c.ClientKeysFile)
					}
					return component{files: append(files, c.CRLFiles...), reload: t.Reload}
				})
			}
			if p := mat.psk; p != nil {
				add(p.Store(), l, func() component {
					return component{files: []string{p.Store().File()}, reload: p.Store().Reload}
				})
			}
			if c := mat.client; c != nil { // client mode: the uplink's files
				add(c, l, func() component { return component{files: c.Files(), reload: c.Reload} })
			}
		}
	}
	return out
}

// snapshot records the files' hashes without reloading: at start and after the set of
// listeners changed.
func (r *reloader) snapshot() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sums = map[string][32]byte{}
	r.retry = map[any][]string{}
	for _, c := range r.components() {
		for _, f := range c.files {
			r.sums[f] = hashFile(f)
		}
	}
	r.publish()
}

func hashFile(name string) [32]byte {
	data, err := os.ReadFile(name)
	if err != nil {
		return [32]byte{} // unreadable now: a change once it is readable again
	}
	return sha256.Sum256(data)
}

// check reloads what changed since the last look; force reloads everything (SIGHUP). A
// failed reload is tried once more at the next look even if nothing changed: the files may
// have been read in the middle of a swap (a new certificate with the old key).
func (r *reloader) check(force bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	comps := r.components()
	now := map[string][32]byte{}
	for _, c := range comps {
		for _, f := range c.files {
			now[f] = hashFile(f)
		}
	}
	// The keys of each PSK store about to be reloaded, so that a session whose PSK was
	// changed rather than removed can be told apart: its identity is still there.
	before := pskKeys{}
	reloaded := false
	for _, c := range comps {
		var changed []string
		for _, f := range c.files {
			if force || now[f] != r.sums[f] {
				changed = append(changed, f)
			}
		}
		isRetry := len(changed) == 0
		if isRetry {
			changed = r.retry[c.key]
		}
		delete(r.retry, c.key)
		if len(changed) == 0 {
			continue
		}
		if store, isPSK := c.key.(*handshake.PSKStore); isPSK && r.revokeTerminates {
			before[store] = keysOf(store)
		}
		ok := r.reload(c, changed)
		if !ok && !isRetry && !force {
			r.retry[c.key] = changed
		}
		reloaded = reloaded || ok
	}
	r.sums = now
	if reloaded {
		r.publish()
		if r.revokeTerminates {
			r.terminateRevoked(before)
		}
	}
}

func (r *reloader) reload(c component, files []string) bool {
	err := c.reload()
	result := "ok"
	if err != nil {
		result = "error"
	}
	// Counted before the line is logged, so that whoever reads the line finds it counted.
	for _, f := range files {
		r.m.CountReload(f, result)
	}
	if err != nil {
		// The message names the file (and line, for a PSK file), and its flag or key: the
		// file at fault may not be the one that changed (a new certificate, the old key).
		// The old material stays.
		if _, isTLS := c.key.(*handshake.TLSServer); isTLS {
			if probs := tlsFileProblems(c.spec, time.Now(), false); len(probs) > 0 {
				err = errors.Join(probs...)
			}
		}
		r.log.Error().Err(err).Strs("listeners", c.listeners).Strs("files", files).Msg("reload failed: keeping the previous certificates and keys")
	} else {
		r.log.Info().Strs("listeners", c.listeners).Strs("files", files).Msg("reloaded")
	}
	return err == nil
}

// publish updates the metrics that describe the loaded material. r.mu is held.
func (r *reloader) publish() {
	r.files = nil
	psks := 0
	seen := map[any]bool{}
	for _, mat := range r.sup.materials() {
		if t := mat.tls; t != nil && !seen[t] {
			seen[t] = true
			r.files = append(r.files, t.Files()...)
		}
		if p := mat.psk; p != nil && !seen[p.Store()] {
			seen[p.Store()] = true
			psks += p.Store().Len()
		}
	}
	r.m.SetFiles(r.files)
	r.m.SetPSKIdentities(psks)
}

// The reasons a PSK session is closed for on reload: its identity left the file (as a
// handshake refusing it says), or its key was replaced.
const (
	reasonPSKRemoved = "unknown_psk_identity"
	reasonPSKChanged = "psk_changed"
)

// pskKeys are the keys of each PSK store by identity, as a reload found them.
type pskKeys map[*handshake.PSKStore]map[string][]byte

// keysOf returns the store's keys by identity. A reload replaces the store's map, so
// these slices keep the old keys.
func keysOf(store *handshake.PSKStore) map[string][]byte {
	m := map[string][]byte{}
	for _, id := range store.Identities() {
		m[id], _ = store.Lookup(id)
	}
	return m
}

// stillValid says why the session of id no longer holds with mat's files now loaded
// (reason, as on a refused handshake), or "" if it does. before are the PSKs before the
// reload.
func stillValid(mat *material, id handshake.Identity, before pskKeys) string {
	switch id.Kind {
	case handshake.KindPSK:
		if mat.psk == nil {
			return ""
		}
		store := mat.psk.Store()
		now, ok := store.Lookup(id.PSKIdentity)
		if !ok {
			return reasonPSKRemoved
		}
		if old, had := before[store][id.PSKIdentity]; had && subtle.ConstantTimeCompare(old, now) != 1 {
			return reasonPSKChanged
		}
	case handshake.KindCertificate, handshake.KindPinnedKey:
		if mat.tls != nil {
			if err := mat.tls.StillValid(id); err != nil {
				return handshake.Reason(err)
			}
		}
	}
	return ""
}

func (r *reloader) terminateRevoked(before pskKeys) {
	reasons := map[string]int{}
	for _, l := range r.sup.sessionOwners() {
		mat := l.mat
		l.closeMatching(func(id handshake.Identity) bool {
			reason := stillValid(mat, id, before)
			if reason != "" {
				reasons[reason]++
			}
			return reason != ""
		})
	}
	for reason, n := range reasons {
		r.log.Info().Int("sessions", n).Str("reason", reason).Msg("closed sessions whose credentials the reloaded files no longer accept")
	}
}

// warnExpiry logs every certificate or CRL that expires within window, and any already
// expired. The caller repeats it daily.
func (r *reloader) warnExpiry(now time.Time, window time.Duration) {
	crlWindow := r.crlWindow
	r.mu.Lock()
	files := r.files
	r.mu.Unlock()
	for _, f := range files {
		w := window
		if f.Role == "crl" {
			w = crlWindow
		}
		if f.NotAfter.IsZero() || f.NotAfter.Sub(now) > w {
			continue
		}
		ev := r.log.Warn()
		msg := "certificate expires soon"
		if f.Role == "crl" {
			msg = "CRL next update due soon: publish a new CRL"
		}
		if !now.Before(f.NotAfter) {
			ev, msg = r.log.Error(), "certificate expired"
			if f.Role == "crl" {
				msg = "CRL is past its next update: publish a new CRL"
			}
		}
		ev.Str("file", f.File).Str("role", f.Role).Str("subject", f.Subject).
			Time("not_after", f.NotAfter).Str("remaining", f.NotAfter.Sub(now).Round(time.Second).String()).Msg(msg)
	}
}

// run polls for changes every interval (0: only on SIGHUP), reloads on hup, and warns
// about expiry at start and daily, until ctx ends.
func (r *reloader) run(ctx context.Context, interval time.Duration, hup <-chan struct{}, expiryWindow time.Duration) {
	var poll <-chan time.Time
	if interval > 0 {
		t := time.NewTicker(interval)
		defer t.Stop()
		poll = t.C
	}
	daily := time.NewTicker(24 * time.Hour)
	defer daily.Stop()
	r.warnExpiry(time.Now(), expiryWindow)
	for {
		select {
		case <-ctx.Done():
			return
		case <-poll:
			r.check(false)
		case <-hup:
			r.log.Info().Msg("SIGHUP: reloading")
			r.check(true)
		case <-daily.C:
			r.warnExpiry(time.Now(), expiryWindow)
		}
	}
}
