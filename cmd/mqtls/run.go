package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"reflect"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/mqtls/mqtls/handshake"
	"github.com/mqtls/mqtls/policy"
	"github.com/mqtls/mqtls/proxy"
)

// material is a listener's handshake side: what it loaded from files, and the handshaker
// built on it.
type material struct {
	tls        *handshake.TLSServer // nil without certificates
	psk        *handshake.PSKServer // nil without PSKs
	handshaker proxy.Handshaker
}

// loadMaterial loads the files sp names. A DTLS listener gets a DTLS listener socket too,
// since pion builds the handshake into its listener.
func loadMaterial(sp listenerSpec, shared *material) (*material, error) {
	m := &material{}
	if shared != nil {
		m.tls, m.psk = shared.tls, shared.psk
	} else {
		if sp.tls.CertFile != "" {
			var err error
			if m.tls, err = handshake.NewTLSServer(sp.tls); err != nil {
				return nil, fmt.Errorf("listener %s: %s/%s: %w", sp.name, sp.key("tls.cert"), sp.key("tls.client_ca"), err)
			}
		}
		if sp.pskFile != "" {
			store, err := handshake.LoadPSKFile(sp.pskFile, sp.pskFormat)
			if err != nil {
				return nil, fmt.Errorf("listener %s: %s: %w", sp.name, sp.key("psk.file"), err)
			}
			if m.psk, err = handshake.NewPSKServer(store, sp.pskHint); err != nil {
				return nil, fmt.Errorf("listener %s: %s: %w", sp.name, sp.key("psk.hint"), err)
			}
		}
	}
	switch {
	case m.tls != nil && m.psk != nil:
		m.handshaker = &handshake.Mixed{TLS: m.tls, PSK: m.psk}
	case m.tls != nil:
		m.handshaker = m.tls
	default:
		m.handshaker = m.psk
	}
	return m, nil
}

// running is one serving listener.
type running struct {
	spec listenerSpec
	mat  *material
	// handshaker is the one the server uses: mat's, or for DTLS the one pion's listener
	// was built with.
	handshaker proxy.Handshaker
	srv        *proxy.Server
	ln         net.Listener
	done       chan error // Serve's result
}

// supervisor owns the listeners of one serve: it starts them, swaps their configuration
// on a config reload, and drains them.
type supervisor struct {
	log   zerolog.Logger
	hooks proxy.Hooks

	mu        sync.Mutex
	listeners []*running

	// fail receives the error of a listener whose Serve ended on its own.
	fail chan error
}

// start builds, binds and serves sp.
func (v *supervisor) start(sp listenerSpec) (*running, error) {
	var shared *material
	if sp.shareWith != "" {
		shared = v.find(sp.shareWith).mat
	}
	mat, err := loadMaterial(sp, shared)
	if err != nil {
		return nil, err
	}
	r := &running{spec: sp, mat: mat, done: make(chan error, 1)}
	pc, err := v.proxyConfig(sp, mat)
	if err != nil {
		return nil, err
	}
	switch sp.transport {
	case "dtls":
		ln, dtlsSrv, err := handshake.ListenDTLS(sp.listen, handshake.DTLSConfig{TLS: mat.tls, PSK: mat.psk})
		if err != nil {
			return nil, fmt.Errorf("listener %s: %w", sp.name, err)
		}
		r.ln, pc.Handshaker = ln, dtlsSrv
	default:
		ln, err := net.Listen("tcp", sp.listen)
		if err != nil {
			return nil, fmt.Errorf("listener %s: %w", sp.name, err)
		}
		r.ln = ln
		pc.TrustProxyFrom = sp.proxyFrom
	}
	r.handshaker = pc.Handshaker
	if r.srv, err = proxy.New(pc); err != nil {
		r.ln.Close()
		return nil, err
	}
	v.mu.Lock()
	v.listeners = append(v.listeners, r)
	v.mu.Unlock()
	go func() {
		err := r.srv.Serve(r.ln)
		r.done <- err
		if !errors.Is(err, proxy.ErrServerClosed) {
			select {
			case v.fail <- fmt.Errorf("listener %s: %w", sp.name, err):
			default:
			}
		}
	}()
	return r, nil
}

func (v *supervisor) proxyConfig(sp listenerSpec, mat *material) (proxy.Config, error) {
	pol, err := policy.New(sp.policy)
	if err != nil {
		return proxy.Config{}, fmt.Errorf("listener %s: %w", sp.name, err)
	}
	pc := sp.proxy
	pc.Handshaker, pc.Policy, pc.Logger, pc.Hooks = mat.handshaker, pol, v.log, v.hooks
	pc.SendProxyHeader = sp.sendProxy
	return pc, nil
}

func (v *supervisor) find(name string) *running {
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, r := range v.listeners {
		if r.spec.name == name {
			return r
		}
	}
	return nil
}

func (v *supervisor) all() []*running {
	v.mu.Lock()
	defer v.mu.Unlock()
	return append([]*running(nil), v.listeners...)
}

// reconfigure moves the running listeners to specs: removed ones drain (for up to
// drain), new ones start, changed ones take the new configuration for new connections
// while their sessions carry on. A listener whose address or transport changed is
// restarted.
func (v *supervisor) reconfigure(specs []listenerSpec, drain time.Duration) error {
	var errs []error
	keep := map[string]bool{}
	for _, sp := range specs {
		keep[sp.name] = true
		old := v.find(sp.name)
		switch {
		case old == nil:
			if _, err := v.start(sp); err != nil {
				errs = append(errs, err)
				continue
			}
			v.log.Info().Str("listener", sp.name).Msg("listener added")
		case reflect.DeepEqual(old.spec, sp):
		case old.spec.listen != sp.listen || old.spec.transport != sp.transport || !reflect.DeepEqual(old.spec.proxyFrom, sp.proxyFrom):
			v.stop(old, drain)
			if _, err := v.start(sp); err != nil {
				errs = append(errs, err)
				continue
			}
			v.log.Info().Str("listener", sp.name).Msg("listener restarted on its new address")
		default:
			var mat *material
			var err error
			sameFiles := reflect.DeepEqual(old.spec.tls, sp.tls) && old.spec.pskFile == sp.pskFile &&
				old.spec.pskFormat == sp.pskFormat && old.spec.pskHint == sp.pskHint
			switch {
			case sp.transport == "dtls" && !sameFiles:
				// pion builds the handshake into its listener: new files need a new one.
				err = fmt.Errorf("listener %s: a DTLS listener's certificate, CA or PSK settings change only with a restart of the listener; change its address or restart mqtls", sp.name)
			case sameFiles:
				mat = old.mat // the files are watched and reloaded on their own
			default:
				mat, err = loadMaterial(sp, nil)
			}
			if err != nil {
				errs = append(errs, err)
				continue
			}
			pc, err := v.proxyConfig(sp, mat)
			if sp.transport == "dtls" {
				pc.Handshaker = old.handshaker
			}
			if err == nil {
				err = old.srv.Update(pc)
			}
			if err != nil {
				errs = append(errs, err)
				continue
			}
			v.mu.Lock()
			old.spec, old.mat, old.handshaker = sp, mat, pc.Handshaker
			v.mu.Unlock()
			v.log.Info().Str("listener", sp.name).Msg("listener updated")
		}
	}
	for _, r := range v.all() {
		if !keep[r.spec.name] {
			v.stop(r, drain)
			v.log.Info().Str("listener", r.spec.name).Msg("listener removed")
		}
	}
	return errors.Join(errs...)
}

// stop drains one listener in the background and forgets it.
func (v *supervisor) stop(r *running, drain time.Duration) {
	v.mu.Lock()
	for i, x := range v.listeners {
		if x == r {
			v.listeners = append(v.listeners[:i], v.listeners[i+1:]...)
			break
		}
	}
	v.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), drain)
	r.srv.Shutdown(ctx) // closes the listener at once, so the address is free again
	cancel()
	<-r.done
}

// serve runs the listeners until ctx is cancelled, then drains them: /readyz turns false
// at once, the listeners stop accepting, and sessions get the drain timeout to end (or
// less, if sig.hardStop fires: a second SIGTERM).
func serve(ctx context.Context, cfg serveConfig, stdout io.Writer, sig signals) error {
	log := newLogger(stdout, cfg.logFormat, cfg.logLevel)
	if err := proxy.SetBusyPoll(cfg.busyPoll); err != nil {
		return err
	}
	defer proxy.SetBusyPoll(0)
	m := newMetrics()
	ready := &readiness{interval: readyInterval}
	hooks := m.hooks()
	mem := &memRelease{}
	shook := hooks.Handshake
	hooks.Handshake = func(l, kind, reason string, took time.Duration) {
		shook(l, kind, reason, took)
		mem.note()
	}
	dialed := hooks.UpstreamDial
	hooks.UpstreamDial = func(l string, err error) {
		dialed(l, err)
		if err == nil {
			ready.upstreamOK.Store(time.Now().UnixNano())
		}
	}
	v := &supervisor{log: log, hooks: hooks, fail: make(chan error, 1)}
	defer func() {
		for _, r := range v.all() {
			r.ln.Close()
		}
	}()
	for _, sp := range cfg.listeners {
		if _, err := v.start(sp); err != nil {
			// Stop what already started: nothing serves half a configuration.
			for _, r := range v.all() {
				v.stop(r, 0)
			}
			return err
		}
	}

	var admin *http.Server
	var adminLn net.Listener
	if cfg.admin.listen != "" {
		var err error
		if adminLn, err = net.Listen("tcp", cfg.admin.listen); err != nil {
			for _, r := range v.all() {
				v.stop(r, 0)
			}
			return fmt.Errorf("%w: %w", errAdminListen, err)
		}
		admin = adminServer(m, ready, cfg.admin.pprof)
	}

	bg, stopBG := context.WithCancel(context.Background())
	var bgDone sync.WaitGroup
	defer func() {
		stopBG()
		bgDone.Wait()
	}()
	bgDone.Add(1)
	go func() {
		defer bgDone.Done()
		mem.run(bg, cfg.memRelease, log)
	}()
	rl := &reloader{log: log, m: m, sup: v, revokeTerminates: cfg.admin.revokeTerminates}
	rl.snapshot()
	hup := make(chan struct{}, 1)
	bgDone.Add(1)
	go func() {
		defer bgDone.Done()
		rl.run(bg, cfg.admin.reloadInterval, hup, cfg.admin.expiryWarning)
	}()

	for _, r := range v.all() {
		ev := log.Info().Str("version", version).Str("listener", r.spec.name).Str("transport", r.spec.transport).
			Str("upstream", r.spec.proxy.Upstream).Str("client_id", r.spec.policy.ClientID.String()).
			Str("identity", r.spec.policy.Identity)
		if r.mat.tls != nil {
			ev = ev.Str("client_auth", r.spec.tls.ClientAuth.String())
		}
		if r.mat.psk != nil {
			ev = ev.Str("psk_file", r.spec.pskFile).Int("psk_identities", r.mat.psk.Store().Len())
		}
		ev.Msg("starting")
	}
	ready.bound.Store(true)
	adminErr := make(chan error, 1)
	if admin != nil {
		log.Info().Str("addr", adminLn.Addr().String()).Msg("admin listening")
		go func() {
			if err := admin.Serve(adminLn); !errors.Is(err, http.ErrServerClosed) {
				adminErr <- fmt.Errorf("%w: %w", errAdminListen, err)
			}
		}()
		bgDone.Add(1)
		go func() {
			defer bgDone.Done()
			ready.probeUpstream(bg, cfg.listeners[0].proxy.Upstream, orDefault(cfg.listeners[0].proxy.DialTimeout, proxy.DefaultDialTimeout))
		}()
	}

	var failed error
wait:
	for {
		select {
		case err := <-adminErr:
			failed = err
			break wait
		case err := <-v.fail:
			failed = err
			break wait
		case <-sig.hup:
			if cfg.configFile != "" {
				if next, err := loadConfigFile(cfg.configFile); err != nil {
					log.Error().Err(err).Msg("config reload failed: keeping the running configuration")
				} else {
					cfg.busyPoll = applyTopLevel(log, cfg, next)
					if err := v.reconfigure(next.listeners, cfg.drainTimeout); err != nil {
						log.Error().Err(err).Msg("config reload partly failed")
					}
				}
				rl.snapshot()
			}
			select {
			case hup <- struct{}{}:
			default:
			}
		case <-ctx.Done():
			break wait
		}
	}
	ready.draining.Store(true)
	log.Info().Dur("drain_timeout", cfg.drainTimeout).Msg("shutting down: draining connections")
	dctx, cancel := context.WithTimeout(context.Background(), cfg.drainTimeout)
	defer cancel()
	go func() {
		select {
		case <-sig.hardStop:
			log.Info().Msg("second signal: closing all connections now")
			cancel()
		case <-dctx.Done():
		}
	}()
	listeners := v.all()
	done := make(chan error, len(listeners))
	for _, r := range listeners {
		go func() { done <- r.srv.Shutdown(dctx) }()
	}
	for range listeners {
		if err := <-done; err != nil {
			log.Info().Msg("drain ended: remaining connections closed")
		}
	}
	for _, r := range listeners {
		<-r.done
	}
	if admin != nil {
		admin.Close()
	}
	log.Info().Msg("stopped")
	return failed
}

func orDefault(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

// applyTopLevel applies a reloaded file's top-level settings that can change while mqtls
// runs (busy_poll), and names those that wait for a restart, rather than ignore them
// silently. It returns the busy poll in force.
func applyTopLevel(log zerolog.Logger, cfg, next serveConfig) time.Duration {
	busy := cfg.busyPoll
	if next.busyPoll != busy {
		if err := proxy.SetBusyPoll(next.busyPoll); err != nil {
			log.Error().Err(err).Msg("config reload: keeping the running busy_poll")
		} else {
			busy = next.busyPoll
			log.Info().Dur("busy_poll", busy).Msg("busy poll changed")
		}
	}
	var later []string
	for _, k := range []struct {
		key     string
		changed bool
	}{
		{"drain_timeout", next.drainTimeout != cfg.drainTimeout},
		{"memory_release_after", next.memRelease != cfg.memRelease},
		{"log", next.logFormat != cfg.logFormat || next.logLevel != cfg.logLevel},
		{"admin", next.admin != cfg.admin},
	} {
		if k.changed {
			later = append(later, k.key)
		}
	}
	if len(later) > 0 {
		log.Warn().Strs("keys", later).Msg("config reload: these settings take effect when mqtls restarts")
	}
	return busy
}
