package supervisor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"reflect"
	"sync"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/rs/zerolog"

	"github.com/mqtls/mqtls/handshake"
	"github.com/mqtls/mqtls/internal/admin"
	"github.com/mqtls/mqtls/internal/config"
	"github.com/mqtls/mqtls/policy"
	"github.com/mqtls/mqtls/proxy"
)

// material is a listener's handshake side: what it loaded from files, and the handshaker
// built on it.
type material struct {
	tls        *handshake.TLSServer // nil without certificates
	psk        *handshake.PSKServer // nil without PSKs
	handshaker proxy.Handshaker
	// client and rewrite are a client-mode listener's remote side (client.go).
	client  *handshake.Client
	rewrite *policy.Rewrite
	// tenants are the materials of the listener's SNI tenants, in spec order (sni.go).
	tenants []*material
}

// loadMaterial loads the files sp names. A DTLS listener gets a DTLS listener socket too,
// since pion builds the handshake into its listener.
func loadMaterial(sp config.ListenerSpec, shared *material) (*material, error) {
	if sp.Mode == config.ModeClient {
		return loadClient(sp)
	}
	m := &material{}
	if shared != nil {
		m.tls, m.psk = shared.tls, shared.psk
	} else {
		if sp.TLS.CertFile != "" {
			var err error
			if m.tls, err = handshake.NewTLSServer(sp.TLS); err != nil {
				// Name the file at fault, and only it; what is left is between files.
				if errs := tlsFileProblems(sp, time.Now(), false); len(errs) > 0 {
					return nil, errors.Join(errs...)
				}
				key := sp.Key("tls.client_ca")
				if len(sp.TLS.CRLFiles) > 0 {
					key += "/" + sp.Key("tls.crls")
				}
				return nil, fmt.Errorf("listener %s: %s: %w", sp.Name, key, err)
			}
		}
		if sp.PSKFile != "" {
			store, err := handshake.LoadPSKFile(sp.PSKFile, sp.PSKFormat)
			if err != nil {
				return nil, fmt.Errorf("listener %s: %s: %w", sp.Name, sp.Key("psk.file"), err)
			}
			if m.psk, err = handshake.NewPSKServerWithOptions(store, sp.PSKOptions); err != nil {
				return nil, fmt.Errorf("listener %s: %s: %w", sp.Name, sp.Key("psk.hint"), err)
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
	if err := loadTenants(sp, m); err != nil {
		return nil, err
	}
	return m, nil
}

// running is one serving listener.
type running struct {
	spec config.ListenerSpec
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
	log     zerolog.Logger
	hooks   proxy.Hooks
	metrics *admin.Metrics

	mu        sync.Mutex
	listeners []*running

	// fail receives the error of a listener whose Serve ended on its own.
	fail chan error
	// noAudit turns the audit line of each connection off (--audit-log=false).
	noAudit bool
}

// start builds, binds and serves sp.
func (v *supervisor) start(sp config.ListenerSpec) (*running, error) {
	var shared *material
	if sp.ShareWith != "" {
		shared = v.find(sp.ShareWith).mat
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
	if r.ln, err = v.bind(sp, mat, &pc); err != nil {
		return nil, fmt.Errorf("listener %s: %w", sp.Name, err)
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
			case v.fail <- fmt.Errorf("listener %s: %w", sp.Name, err):
			default:
			}
		}
	}()
	return r, nil
}

// bind opens sp's socket, and completes pc for that kind of listener. It is the one place
// where kinds of listener differ once their material is loaded: a new kind adds its
// Transport value in config.BuildListener, its case here, and (when its socket cannot
// change in place) its condition in reconfigure's restart case.
func (v *supervisor) bind(sp config.ListenerSpec, mat *material, pc *proxy.Config) (net.Listener, error) {
	switch sp.Transport {
	case "dtls":
		// pion builds the handshake into its listener, so the server's handshaker is its.
		dc := sp.DTLS
		dc.TLS, dc.PSK = mat.tls, mat.psk
		if v.metrics != nil {
			dc.OnDrop = v.metrics.DTLSDropped(sp.Name)
		}
		ln, dtlsSrv, err := handshake.ListenDTLS(sp.Listen, dc)
		if err != nil {
			return nil, err
		}
		pc.Handshaker = dtlsSrv
		return ln, nil
	default:
		pc.TrustProxyFrom = sp.ProxyFrom
		return listenStream(sp.Listen)
	}
}

func (v *supervisor) proxyConfig(sp config.ListenerSpec, mat *material) (proxy.Config, error) {
	pol, err := policy.New(sp.Policy)
	if err != nil {
		return proxy.Config{}, fmt.Errorf("listener %s: %w", sp.Name, err)
	}
	pc := sp.Proxy
	pc.Handshaker, pc.Policy, pc.Logger, pc.Hooks = mat.handshaker, pol, v.log, v.hooks
	pc.SendProxyHeader = sp.SendProxy
	pc.NoAudit = v.noAudit
	clientProxyConfig(mat, &pc)
	if err := v.sniProxyConfig(sp, mat, &pc); err != nil {
		return proxy.Config{}, err
	}
	return pc, nil
}

func (v *supervisor) find(name string) *running {
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, r := range v.listeners {
		if r.spec.Name == name {
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
func (v *supervisor) reconfigure(specs []config.ListenerSpec, drain time.Duration) error {
	var errs []error
	keep := map[string]bool{}
	for _, sp := range specs {
		keep[sp.Name] = true
		old := v.find(sp.Name)
		switch {
		case old == nil:
			if _, err := v.start(sp); err != nil {
				errs = append(errs, err)
				continue
			}
			v.log.Info().Str("listener", sp.Name).Msg("listener added")
		case reflect.DeepEqual(old.spec, sp):
		case old.spec.Listen != sp.Listen || old.spec.Transport != sp.Transport || !reflect.DeepEqual(old.spec.ProxyFrom, sp.ProxyFrom):
			v.stop(old, drain)
			if _, err := v.start(sp); err != nil {
				errs = append(errs, err)
				continue
			}
			v.log.Info().Str("listener", sp.Name).Msg("listener restarted on its new address")
		default:
			var mat *material
			var err error
			sameFiles := reflect.DeepEqual(old.spec.TLS, sp.TLS) && old.spec.PSKFile == sp.PSKFile &&
				old.spec.PSKFormat == sp.PSKFormat && old.spec.PSKHint == sp.PSKHint && old.spec.Client == sp.Client &&
				old.spec.PSKOptions == sp.PSKOptions && reflect.DeepEqual(old.spec.DTLS, sp.DTLS) &&
				reflect.DeepEqual(old.spec.SNI, sp.SNI)
			switch {
			case sp.Transport == "dtls" && !sameFiles:
				// pion builds the handshake into its listener: new files need a new one.
				err = fmt.Errorf("listener %s: a DTLS listener's certificate, CA, PSK or dtls settings change only with a restart of the listener; change its address or restart mqtls", sp.Name)
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
			if sp.Transport == "dtls" {
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
			v.log.Info().Str("listener", sp.Name).Msg("listener updated")
		}
	}
	for _, r := range v.all() {
		if !keep[r.spec.Name] {
			v.stop(r, drain)
			v.log.Info().Str("listener", r.spec.Name).Msg("listener removed")
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

// Options are what Serve needs besides the configuration.
type Options struct {
	Stdout io.Writer // logs
	// Hup asks for a reload of the config file and of every certificate, CA, CRL and PSK
	// file (SIGHUP); HardStop ends the drain at once (a second SIGTERM or SIGINT). A nil
	// channel never fires.
	Hup, HardStop <-chan struct{}
	Version       string // for the start-up line
}

// Serve runs the listeners until ctx is cancelled, then drains them: /readyz turns false
// at once, the listeners stop accepting, and sessions get the drain timeout to end (or
// less, if opts.HardStop fires: a second SIGTERM).
func Serve(ctx context.Context, cfg config.Config, opts Options) error {
	log := newLogger(opts.Stdout, cfg.LogFormat, cfg.LogLevel)
	if err := proxy.SetBusyPoll(cfg.BusyPoll); err != nil {
		return err
	}
	defer proxy.SetBusyPoll(0)
	m := admin.NewMetrics()
	ready := &admin.Readiness{Interval: admin.ReadyInterval}
	hooks := m.Hooks()
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
			ready.UpstreamOK.Store(time.Now().UnixNano())
		}
	}
	v := &supervisor{log: log, hooks: hooks, metrics: m, fail: make(chan error, 1), noAudit: !cfg.Audit}
	defer func() {
		for _, r := range v.all() {
			r.ln.Close()
		}
	}()
	// The admin address is bound first: a bind error then stops mqtls before any listener
	// started, so no drain is logged for listeners that never served.
	var adminSrv *http.Server
	var adminLn net.Listener
	if cfg.Admin.Listen != "" {
		var err error
		if adminLn, err = net.Listen("tcp", cfg.Admin.Listen); err != nil {
			return fmt.Errorf("%w: %w", errAdminListen, err)
		}
		defer adminLn.Close() // after Serve, closing it again is harmless
		adminSrv = admin.NewServer(m, ready, cfg.Admin.Pprof)
	}
	warnAtStart(log, cfg.Listeners)
	for _, sp := range cfg.Listeners {
		if _, err := v.start(sp); err != nil {
			// Stop what already started: nothing serves half a configuration.
			for _, r := range v.all() {
				v.stop(r, 0)
			}
			return err
		}
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
		mem.run(bg, cfg.MemRelease, log)
	}()
	rl := &reloader{log: log, m: m, sup: v, revokeTerminates: cfg.Admin.RevokeTerminates, crlWindow: cfg.Admin.CRLExpiryWarning}
	rl.snapshot()
	hup := make(chan struct{}, 1)
	bgDone.Add(1)
	go func() {
		defer bgDone.Done()
		rl.run(bg, cfg.Admin.ReloadInterval, hup, cfg.Admin.ExpiryWarning)
	}()

	for _, r := range v.all() {
		ev := log.Info().Str("version", opts.Version).Str("listener", r.spec.Name).Str("transport", r.spec.Transport).
			Str("upstream", r.spec.Proxy.Upstream).Str("client_id", r.spec.Policy.ClientID.String()).
			Str("identity", r.spec.Policy.Identity)
		if r.mat.tls != nil {
			ev = ev.Str("client_auth", r.spec.TLS.ClientAuth.String())
		}
		if r.mat.psk != nil {
			ev = ev.Str("psk_file", r.spec.PSKFile).Int("psk_identities", r.mat.psk.Store().Len())
		}
		ev.Msg("starting")
		warnExposedUplink(log, r.spec) // client.go
	}
	ready.Bound.Store(true)
	adminErr := make(chan error, 1)
	if adminSrv != nil {
		log.Info().Str("addr", adminLn.Addr().String()).Msg("admin listening")
		go func() {
			if err := adminSrv.Serve(adminLn); !errors.Is(err, http.ErrServerClosed) {
				adminErr <- fmt.Errorf("%w: %w", errAdminListen, err)
			}
		}()
		bgDone.Add(1)
		go func() {
			defer bgDone.Done()
			ready.ProbeUpstream(bg, cfg.Listeners[0].Proxy.Upstream, orDefault(cfg.Listeners[0].Proxy.DialTimeout, proxy.DefaultDialTimeout))
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
		case <-opts.Hup:
			if cfg.ConfigFile != "" {
				if next, err := config.Load(cfg.ConfigFile); err != nil {
					log.Error().Err(err).Msg("config reload failed: keeping the running configuration")
				} else {
					cfg.BusyPoll = applyTopLevel(log, cfg, next)
					if err := v.reconfigure(next.Listeners, cfg.DrainTimeout); err != nil {
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
	ready.Draining.Store(true)
	log.Info().Str("drain_timeout", cfg.DrainTimeout.String()).Msg("shutting down: draining connections")
	dctx, cancel := context.WithTimeout(context.Background(), cfg.DrainTimeout)
	defer cancel()
	go func() {
		select {
		case <-opts.HardStop:
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
	if adminSrv != nil {
		adminSrv.Close()
	}
	log.Info().Msg("stopped")
	return failed
}

// errAdminListen wraps a failure to bind the admin address.
var errAdminListen = errors.New("--admin-listen")

func orDefault(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

// applyTopLevel applies a reloaded file's top-level settings that can change while mqtls
// runs (busy_poll), and names those that wait for a restart, rather than ignore them
// silently. It returns the busy poll in force.
func applyTopLevel(log zerolog.Logger, cfg, next config.Config) time.Duration {
	busy := cfg.BusyPoll
	if next.BusyPoll != busy {
		if err := proxy.SetBusyPoll(next.BusyPoll); err != nil {
			log.Error().Err(err).Msg("config reload: keeping the running busy_poll")
		} else {
			busy = next.BusyPoll
			log.Info().Str("busy_poll", busy.String()).Msg("busy poll changed")
		}
	}
	var later []string
	for _, k := range []struct {
		key     string
		changed bool
	}{
		{"drain_timeout", next.DrainTimeout != cfg.DrainTimeout},
		{"memory_release_after", next.MemRelease != cfg.MemRelease},
		{"log", next.LogFormat != cfg.LogFormat || next.LogLevel != cfg.LogLevel || next.Audit != cfg.Audit},
		{"admin", next.Admin != cfg.Admin},
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

// newLogger writes to w in format: json, console, or auto (console when w is a terminal,
// so that a person at one reads lines, and JSON for journald, files and collectors).
func newLogger(w io.Writer, format string, level zerolog.Level) zerolog.Logger {
	if consoleFormat(w, format) {
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: time.RFC3339, NoColor: !isTerminal(w)}
	}
	return zerolog.New(w).Level(level).With().Timestamp().Logger()
}

// consoleFormat reports whether logs to w in format are written for a person.
func consoleFormat(w io.Writer, format string) bool {
	return format == "console" || format == "auto" && isTerminal(w)
}

// isTerminal asks the terminal driver, not the file mode: /dev/null is a character
// device too (a unit's StandardOutput=null), and no one reads colours there.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && isatty.IsTerminal(f.Fd())
}

// warnAtStart warns about secret files others can read, and about a broker that cannot
// be reached now (it may start a moment later, and mqtls serves meanwhile), so that the
// first sign of either is not a refused device. It runs before the listeners start: a
// broker on loopback answers or refuses at once; a remote one costs at most
// startDialTimeout.
func warnAtStart(log zerolog.Logger, specs []config.ListenerSpec) {
	dialed := map[string]bool{}
	for _, sp := range specs {
		if sp.ShareWith == "" {
			for _, l := range loosePermissions(sp) {
				log.Warn().Str("key", l.key).Str("file", l.file).Str("mode", fmt.Sprintf("%04o", l.mode)).
					Msg("secret file readable by others: chmod 600 it")
			}
		}
		if dialed[sp.Proxy.Upstream] {
			continue
		}
		dialed[sp.Proxy.Upstream] = true
		local, err := upstreamProblem(context.Background(), sp, min(orDefault(sp.Proxy.DialTimeout, proxy.DefaultDialTimeout), startDialTimeout))
		if err != nil {
			log.Warn().Str("listener", sp.Name).Str("upstream", sp.Proxy.Upstream).Err(err).
				Msg("broker unreachable: devices get CONNACK server unavailable until it is up")
			continue
		}
		log.Info().Str("listener", sp.Name).Str("upstream", sp.Proxy.Upstream).Str("local", local).Msg("broker reachable")
	}
}

// startDialTimeout bounds the look at the broker at start.
const startDialTimeout = time.Second
