package supervisor

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"

	"github.com/rs/zerolog"

	"github.com/mqtls/mqtls/handshake"
	"github.com/mqtls/mqtls/internal/config"
	"github.com/mqtls/mqtls/policy"
	"github.com/mqtls/mqtls/proxy"
)

// loadClient loads a client-mode listener's remote side: the gateway's certificate, key,
// CA, pinned keys or PSK, and checks that its rewrite templates render for that credential.
func loadClient(sp config.ListenerSpec) (*material, error) {
	cl, err := handshake.NewClient(sp.Client.Remote)
	if err != nil {
		return nil, fmt.Errorf("listener %s: %s: %w", sp.Name, sp.Key("remote"), err)
	}
	rw, err := policy.NewRewrite(sp.Client.Rewrite)
	if err == nil {
		err = rw.Check(cl.Identity())
	}
	if err != nil {
		return nil, fmt.Errorf("listener %s: %s: %w", sp.Name, sp.Key("remote.client_id"), err)
	}
	return &material{client: cl, rewrite: rw, handshaker: proxy.Plain{}}, nil
}

// clientProxyConfig completes pc for a client-mode listener.
func clientProxyConfig(mat *material, pc *proxy.Config) {
	if mat.client != nil {
		pc.Uplink, pc.Rewrite = mat.client, mat.rewrite
	}
}

// listenStream opens a client-mode or TCP listener's socket: "unix:/path" is a unix
// socket (a stale socket file left by a previous run is replaced; any other file is not).
func listenStream(addr string) (net.Listener, error) {
	path, ok := strings.CutPrefix(addr, config.UnixPrefix)
	if !ok {
		return net.Listen(handshake.ListenNetwork("tcp", addr), addr)
	}
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSocket != 0 {
		if c, err := net.Dial("unix", path); err == nil {
			c.Close()
			return nil, fmt.Errorf("listening on %s: another process serves that socket", addr)
		}
		os.Remove(path)
	}
	return net.Listen("unix", path)
}

// warnExposedUplink warns about a client-mode listener reachable from other hosts: it
// accepts plain MQTT and speaks to the remote broker with the gateway's credential, so
// anyone who reaches it does too.
func warnExposedUplink(log zerolog.Logger, sp config.ListenerSpec) {
	if sp.Mode != config.ModeClient || strings.HasPrefix(sp.Listen, config.UnixPrefix) {
		return
	}
	host, _, err := net.SplitHostPort(sp.Listen)
	if ip, perr := netip.ParseAddr(host); err == nil && (host == "localhost" || perr == nil && ip.IsLoopback()) {
		return
	}
	log.Warn().Str("listener", sp.Name).Str("listen", sp.Listen).
		Msg("client-mode listener accepts plain MQTT beyond this host: anyone who reaches it speaks to the remote broker with the gateway's credential; listen on 127.0.0.1 or a unix socket")
}
