#!/usr/bin/env bash
# scripts/bench-peers.sh: measure mqtls against other TLS front ends for Mosquitto, on this
# machine, over loopback, and write BENCHMARKS.md (make bench-peers).
#
# Targets, all on one ECDSA P-256 PKI made here with openssl, all forwarding to one
# plaintext Mosquitto on loopback:
#   mqtls      built from this tree (mutual TLS, TLS-PSK and DTLS-PSK listeners)
#   stunnel    stunnel4 (mutual TLS and TLS-PSK services)
#   haproxy    HAProxy, mode tcp with ssl (mutual TLS)
#   nginx      nginx stream with ssl (mutual TLS)
#   mosquitto  Mosquitto's own TLS and PSK listeners (the target is then the broker itself)
# Each target is pinned to CPU 1 and the load tool (cmd/mqtls-bench), the broker and the
# bulk sink to CPU 0. Targets are run in alternation, REPS times, each started fresh for
# each group of measurements: idle-session memory at two session counts, mutual-TLS
# sessions per second and CPU per session, TLS-PSK and DTLS-PSK sessions, QoS 0 and 1
# publish CPU per message, PINGREQ round trips (added to a direct baseline), and bulk
# throughput into a discard sink; and client mode (stunnel's client = yes) for mqtls and
# stunnel: plain MQTT sessions in, mutual TLS out to a second Mosquitto that requires client
# certificates (the "remote", on CPU 0 with the load tool). Results (one JSON line each) go to WORK/results.jsonl;
# `mqtls-bench report` turns them into BENCHMARKS.md (medians, mqtls ÷ best peer, goals).
#
# Usage: scripts/bench-peers.sh [--quick] [--reps N] [--out FILE] [--work DIR] [--pprof]
#                               [--note TEXT] [--no-install]
#   --quick       1 repetition and smaller counts (a few minutes); the table says so
#   --reps N      repetitions (default 3; 1 with --quick)
#   --out FILE    the markdown written (default BENCHMARKS.md at the top of the tree)
#   --work DIR    keep configs, logs, results and profiles there (default: a temporary
#                 directory, removed at exit)
#   --pprof       afterwards, profile mqtls (CPU, 10 s each) during a conns and a pub run and
#                 write `go tool pprof -top` of each to WORK/pprof-*.txt
#   --note TEXT   a caveat printed at the top of BENCHMARKS.md
#   --no-install  fail instead of installing missing tools with apt-get
# Environment: BENCH_PORT_BASE (default 28800) picks the loopback ports used (base..base+20).
#
# Everything it starts it stops (a trap kills exactly the PIDs it started); every loop is
# bounded in count, and every load run by --timeout and by coreutils timeout.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

QUICK=0 REPS="" OUT="$ROOT/BENCHMARKS.md" WORK="" PPROF=0 NOTE="" INSTALL=1
while [[ $# -gt 0 ]]; do
	case $1 in
	--quick) QUICK=1 ;;
	--reps) REPS=$2; shift ;;
	--out) OUT=$2; shift ;;
	--work) WORK=$2; shift ;;
	--pprof) PPROF=1 ;;
	--note) NOTE=$2; shift ;;
	--no-install) INSTALL=0 ;;
	-h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
	*) echo "bench-peers.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
	esac
	shift
done
[[ $OUT = /* ]] || OUT="$ROOT/$OUT"
ARGS=""
((QUICK)) && ARGS+=" --quick"
[[ -n $REPS ]] && ARGS+=" --reps $REPS"

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'bench-peers.sh: %s\n' "$*" >&2; exit 1; }
START_TIME=$SECONDS

# --- sizes -------------------------------------------------------------------------------
if ((QUICK)); then
	: "${REPS:=1}"
	CONNS_N=800 PSK_N=800 DTLS_N=400 HOLD_SMALL=1000 HOLD_LARGE_MAX=3000 HOLD_FOR=5s
	PUB0_MSGS=50000 PUB1_MSGS=15000 PING_N=1000 PING_WARM=100 BULK_BYTES=$((128 << 20))
else
	: "${REPS:=3}"
	CONNS_N=3000 PSK_N=3000 DTLS_N=1500 HOLD_SMALL=1000 HOLD_LARGE_MAX=9000 HOLD_FOR=6s
	PUB0_MSGS=200000 PUB1_MSGS=50000 PING_N=5000 PING_WARM=500 BULK_BYTES=$((512 << 20))
fi
[[ $REPS =~ ^[1-9][0-9]?$ ]] || die "--reps $REPS: want 1 to 99"
CONNS_C=32 PUBLISHERS=4 SUBSCRIBERS=1 PAYLOAD=64 BATCH=32 PACKET=65536
# Each proxied session costs a proxy two file descriptors (device and broker side); keep
# a margin under the per-process limit for listeners, logs and the load tool's own.
FD_LIMIT=$(ulimit -Hn)
[[ $FD_LIMIT = unlimited ]] && FD_LIMIT=1048576
ulimit -n "$FD_LIMIT" 2>/dev/null || true
HOLD_LARGE=$(((FD_LIMIT - 2000) / 2 / 1000 * 1000))
((HOLD_LARGE > HOLD_LARGE_MAX)) && HOLD_LARGE=$HOLD_LARGE_MAX
((HOLD_LARGE > HOLD_SMALL)) || HOLD_LARGE=0 # no room for a larger count: measure one
RUN_TIMEOUT=240 # seconds, any one load run

# --- tools -------------------------------------------------------------------------------
as_root() {
	if [[ $(id -u) -eq 0 ]]; then "$@"
	elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then sudo -n "$@"
	else return 1; fi
}
have() { command -v "$1" >/dev/null 2>&1 || [[ -x /usr/sbin/$1 ]]; }
export PATH=$PATH:/usr/sbin:/sbin
STREAM_MOD=/usr/lib/nginx/modules/ngx_stream_module.so
missing=()
for t in stunnel4:stunnel4 haproxy:haproxy nginx:nginx mosquitto:mosquitto openssl:openssl taskset:util-linux jq:jq curl:curl; do
	have "${t%%:*}" || missing+=("${t#*:}")
done
[[ -f $STREAM_MOD ]] || missing+=(libnginx-mod-stream)
if ((${#missing[@]})); then
	cmd="apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y ${missing[*]}"
	((INSTALL)) && have apt-get || die "missing: ${missing[*]}; install with: $cmd"
	say "installing ${missing[*]}"
	as_root apt-get update -qq || die "apt-get update failed; install by hand: $cmd"
	as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null ||
		die "installing failed; install by hand: $cmd"
	# The packages may start system services; stop those we just installed (the ports here
	# are our own, but stray daemons would steal CPU from the measurements).
	for s in stunnel4 haproxy nginx mosquitto; do
		as_root service "$s" stop >/dev/null 2>&1 || true
	done
fi
STUNNEL=$(command -v stunnel4 || command -v stunnel)
command -v go >/dev/null 2>&1 || die "go is not installed"

# --- work directory, process bookkeeping --------------------------------------------------
if [[ -z $WORK ]]; then
	WORK=$(mktemp -d /tmp/mqtls-bench.XXXXXX)
	KEEP_WORK=0
else
	mkdir -p "$WORK"
	WORK=$(cd "$WORK" && pwd)
	KEEP_WORK=1
fi
chmod 755 "$WORK" # brokers that drop privileges must read the PKI
STARTED=() # every PID this script started and has not stopped yet
cleanup() {
	local rc=$?
	for pid in "${STARTED[@]}"; do
		kill "$pid" 2>/dev/null || true
	done
	for pid in "${STARTED[@]}"; do
		wait "$pid" 2>/dev/null || true
	done
	((KEEP_WORK)) || rm -rf "$WORK"
	exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

forget() { # forget PID: drop it from STARTED
	local keep=() p
	for p in "${STARTED[@]}"; do [[ $p == "$1" ]] || keep+=("$p"); done
	STARTED=("${keep[@]}")
}

# stop PID: TERM, then KILL after 5 s; waits for it.
stop() {
	local pid=$1 i
	kill "$pid" 2>/dev/null || { forget "$pid"; return 0; }
	for ((i = 0; i < 50; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -9 "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
	forget "$pid"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# wait_port PORT PID NAME: until PORT accepts (10 s at most) while PID lives.
wait_port() {
	local i
	for ((i = 0; i < 200; i++)); do
		port_open "$1" && return 0
		kill -0 "$2" 2>/dev/null || die "$3 exited at start; see $WORK/$3.log: $(tail -5 "$WORK/$3.log" 2>/dev/null)"
		sleep 0.05
	done
	die "$3 did not open port $1 within 10 s; see $WORK/$3.log"
}

BASE=${BENCH_PORT_BASE:-28800}
P_BROKER=$BASE P_SINK=$((BASE + 1)) P_MTLS=$((BASE + 10)) P_BULK=$((BASE + 11)) P_PSK=$((BASE + 12))
P_DTLS=$((BASE + 13)) P_ADMIN=$((BASE + 14)) P_CLIENT=$((BASE + 15)) P_REMOTE=$((BASE + 16))
for p in $P_BROKER $P_SINK $P_MTLS $P_BULK $P_PSK $P_ADMIN $P_CLIENT $P_REMOTE; do
	port_open "$p" && die "port $p is in use; pick other ports with BENCH_PORT_BASE"
done

# --- build ---------------------------------------------------------------------------------
say "building mqtls and mqtls-bench"
MQTLS=$WORK/mqtls BENCH=$WORK/mqtls-bench
go build -o "$MQTLS" ./cmd/mqtls
go build -o "$BENCH" ./cmd/mqtls-bench

# --- PKI: one ECDSA P-256 CA, a server certificate for localhost, a device certificate --------
say "making the PKI in $WORK"
(
	cd "$WORK"
	key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
	key ca.key
	openssl req -x509 -new -key ca.key -sha256 -days 2 -subj "/CN=mqtls bench CA" -out ca.crt \
		-addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
	leaf() { # name cn extensions
		key "$1.key"
		openssl req -new -key "$1.key" -subj "/CN=$2" -out "$1.csr" 2>/dev/null
		printf '%s\n' "$3" >"$1.ext"
		openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -sha256 \
			-extfile "$1.ext" -out "$1.crt" 2>/dev/null
	}
	leaf server localhost "subjectAltName=DNS:localhost,IP:127.0.0.1
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth"
	leaf client bench-device "keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth"
	cat server.crt server.key >server.pem # HAProxy wants both in one file
	PSK_KEY=$(openssl rand -hex 32)
	echo "bench-device:$PSK_KEY" >psk.txt # Mosquitto's psk_file, mqtls's mosquitto format, and
	# stunnel's PSKsecrets (which decodes an all-hex key to binary, as Mosquitto does)
	chmod 644 ./*.key psk.txt
)
PSK_KEY=$(cut -d: -f2 "$WORK/psk.txt")

# --- configurations --------------------------------------------------------------------------
cat >"$WORK/broker.conf" <<EOF
listener $P_BROKER 127.0.0.1
allow_anonymous true
persistence false
user root
max_queued_messages 0
max_inflight_messages 0
log_dest file $WORK/broker.log
log_type error
log_type warning
EOF

BUSY_POLL=1ms
mqtls_conf() { # variant: "", "pprof" or "busy"
	[[ $1 == busy ]] && echo "busy_poll: $BUSY_POLL"
	cat <<EOF
log:
  format: json
  level: info
EOF
	[[ $1 == pprof ]] && printf 'admin:\n  listen: 127.0.0.1:%s\n  pprof: true\n' "$P_ADMIN"
	cat <<EOF
listeners:
  - name: mtls
    listen: 127.0.0.1:$P_MTLS
    upstream: 127.0.0.1:$P_BROKER
    tls: {cert: $WORK/server.crt, key: $WORK/server.key, client_ca: $WORK/ca.crt, client_auth: require}
  - name: bulk
    listen: 127.0.0.1:$P_BULK
    upstream: 127.0.0.1:$P_SINK
    tls: {cert: $WORK/server.crt, key: $WORK/server.key, client_ca: $WORK/ca.crt, client_auth: require}
  - name: psk
    listen: 127.0.0.1:$P_PSK
    upstream: 127.0.0.1:$P_BROKER
    psk: {file: $WORK/psk.txt, format: mosquitto}
  - name: dtls
    transport: dtls
    listen: 127.0.0.1:$P_DTLS
    upstream: 127.0.0.1:$P_BROKER
    psk: {file: $WORK/psk.txt, format: mosquitto}
  - name: uplink
    mode: client
    listen: 127.0.0.1:$P_CLIENT
    upstream: 127.0.0.1:$P_REMOTE
    remote: {server_name: localhost, ca: $WORK/ca.crt, cert: $WORK/client.crt, key: $WORK/client.key}
EOF
}
mqtls_conf "" >"$WORK/mqtls.yaml"
mqtls_conf pprof >"$WORK/mqtls-pprof.yaml"
mqtls_conf busy >"$WORK/mqtls-busy.yaml"
"$MQTLS" check --config "$WORK/mqtls.yaml" >"$WORK/mqtls-check.log" 2>&1 || die "mqtls check failed: $(cat "$WORK/mqtls-check.log")"

cat >"$WORK/stunnel.conf" <<EOF
foreground = yes
pid =
; No syslog daemon may be running (containers): syslog() would then fall back to the
; console, which costs milliseconds per line. Log to a file, as the others do.
syslog = no
output = $WORK/stunnel-service.log

[mtls]
accept = 127.0.0.1:$P_MTLS
connect = 127.0.0.1:$P_BROKER
cert = $WORK/server.crt
key = $WORK/server.key
CAfile = $WORK/ca.crt
verifyChain = yes
requireCert = yes

[bulk]
accept = 127.0.0.1:$P_BULK
connect = 127.0.0.1:$P_SINK
cert = $WORK/server.crt
key = $WORK/server.key
CAfile = $WORK/ca.crt
verifyChain = yes
requireCert = yes

[psk]
accept = 127.0.0.1:$P_PSK
connect = 127.0.0.1:$P_BROKER
PSKsecrets = $WORK/psk.txt
ciphers = PSK

[uplink]
client = yes
accept = 127.0.0.1:$P_CLIENT
connect = 127.0.0.1:$P_REMOTE
cert = $WORK/client.crt
key = $WORK/client.key
CAfile = $WORK/ca.crt
verifyChain = yes
checkHost = localhost
EOF

# The remote broker of client mode: Mosquitto's TLS listener requiring client certificates.
cat >"$WORK/remote.conf" <<EOF
listener $P_REMOTE 127.0.0.1
cafile $WORK/ca.crt
certfile $WORK/server.crt
keyfile $WORK/server.key
require_certificate true
allow_anonymous true
persistence false
user root
log_dest file $WORK/remote.log
log_type error
log_type warning
EOF

HAPROXY_MAXCONN=$(((FD_LIMIT - 1000) / 2))
cat >"$WORK/haproxy.cfg" <<EOF
global
  maxconn $HAPROXY_MAXCONN
  nbthread 1
defaults
  mode tcp
  timeout connect 5s
  timeout client 1h
  timeout server 1h
frontend mtls
  bind 127.0.0.1:$P_MTLS ssl crt $WORK/server.pem ca-file $WORK/ca.crt verify required
  default_backend broker
frontend bulk
  bind 127.0.0.1:$P_BULK ssl crt $WORK/server.pem ca-file $WORK/ca.crt verify required
  default_backend sink
backend broker
  server broker 127.0.0.1:$P_BROKER
backend sink
  server sink 127.0.0.1:$P_SINK
EOF
# HAProxy's own busy polling, to compare with mqtls's --busy-poll.
sed 's/^global$/global\n  busy-polling/' "$WORK/haproxy.cfg" >"$WORK/haproxy-busy.cfg"

cat >"$WORK/nginx.conf" <<EOF
load_module $STREAM_MOD;
daemon off;
worker_processes 1;
worker_rlimit_nofile $((FD_LIMIT - 100));
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log warn;
events { worker_connections $(((FD_LIMIT - 1000))); }
stream {
  ssl_protocols TLSv1.2 TLSv1.3; # 1.22's default lacks TLS 1.3
  server {
    listen 127.0.0.1:$P_MTLS ssl;
    ssl_certificate $WORK/server.crt;
    ssl_certificate_key $WORK/server.key;
    ssl_client_certificate $WORK/ca.crt;
    ssl_verify_client on;
    proxy_pass 127.0.0.1:$P_BROKER;
    proxy_timeout 1h;
  }
  server {
    listen 127.0.0.1:$P_BULK ssl;
    ssl_certificate $WORK/server.crt;
    ssl_certificate_key $WORK/server.key;
    ssl_client_certificate $WORK/ca.crt;
    ssl_verify_client on;
    proxy_pass 127.0.0.1:$P_SINK;
    proxy_timeout 1h;
  }
}
EOF

cat >"$WORK/mosquitto-tls.conf" <<EOF
per_listener_settings false
allow_anonymous true
persistence false
user root
max_queued_messages 0
max_inflight_messages 0
log_dest file $WORK/mosquitto-target.log
psk_file $WORK/psk.txt

listener $P_MTLS 127.0.0.1
cafile $WORK/ca.crt
certfile $WORK/server.crt
keyfile $WORK/server.key
require_certificate true

listener $P_PSK 127.0.0.1
psk_hint bench
EOF

# --- processes -----------------------------------------------------------------------------------
# launch NAME CPU CMD...: start CMD pinned to CPU, logging to WORK/NAME.log; sets LAUNCHED.
launch() {
	local name=$1 cpu=$2
	shift 2
	taskset -c "$cpu" "$@" >>"$WORK/$name.log" 2>&1 &
	LAUNCHED=$!
	STARTED+=("$LAUNCHED")
}

say "starting the broker (Mosquitto, CPU 0) and the bulk sink (CPU 0)"
launch broker 0 mosquitto -c "$WORK/broker.conf"
BROKER_PID=$LAUNCHED
wait_port "$P_BROKER" "$BROKER_PID" broker
launch remote 0 mosquitto -c "$WORK/remote.conf"
wait_port "$P_REMOTE" "$LAUNCHED" remote
launch sink 0 "$BENCH" sink --listen "127.0.0.1:$P_SINK" --timeout 2h
SINK_PID=$LAUNCHED
wait_port "$P_SINK" "$SINK_PID" sink

TARGET_PIDS=() TARGET_MAIN=""
# start_target NAME [pprof]: a fresh target on CPU 1; sets TARGET_PIDS (all of its processes).
start_target() {
	case $1 in
	mqtls) launch mqtls 1 "$MQTLS" serve --config "$WORK/mqtls${2:+-$2}.yaml" ;;
	stunnel) launch stunnel 1 "$STUNNEL" "$WORK/stunnel.conf" ;;
	haproxy) launch haproxy 1 haproxy -db -f "$WORK/haproxy${2:+-$2}.cfg" ;;
	nginx) launch nginx 1 nginx -e "$WORK/nginx-error.log" -p "$WORK" -c "$WORK/nginx.conf" ;;
	mosquitto) launch mosquitto 1 mosquitto -c "$WORK/mosquitto-tls.conf" ;;
	esac
	TARGET_MAIN=$LAUNCHED
	wait_port "$P_MTLS" "$TARGET_MAIN" "$1"
	TARGET_PIDS=("$TARGET_MAIN")
	if [[ $1 == nginx ]]; then # the master, and its worker (which does the work)
		local i w=""
		for ((i = 0; i < 100; i++)); do
			w=$(pgrep -P "$TARGET_MAIN" || true)
			[[ -z $w ]] || break
			sleep 0.05
		done
		[[ -n $w ]] || die "nginx started no worker"
		TARGET_PIDS+=($w)
	fi
}
stop_target() {
	stop "$TARGET_MAIN"
	local i
	for ((i = 0; i < 100; i++)); do # its ports free again before the next one starts
		port_open "$P_MTLS" || break
		sleep 0.05
	done
}

RESULTS=$WORK/results.jsonl
: >"$RESULTS"
FAILED=0
# run LABEL TAG PIDS-CSV CMD ARGS...: one mqtls-bench measurement, on CPU 0, appended to RESULTS.
run() {
	local label=$1 tag=$2 pids=$3 cmd=$4
	shift 4
	local pidargs=() p out
	IFS=, read -ra ps <<<"$pids"
	for p in "${ps[@]}"; do pidargs+=(--pid "$p"); done
	if ! out=$(timeout $((RUN_TIMEOUT + 30)) taskset -c 0 "$BENCH" "$cmd" --label "$label" --tag "$tag" \
		"${pidargs[@]}" --timeout "${RUN_TIMEOUT}s" "$@" 2>>"$WORK/bench-errors.log"); then
		FAILED=$((FAILED + 1))
		say "  $label $tag FAILED: $(tail -1 "$WORK/bench-errors.log")"
	fi
	[[ -n $out ]] && printf '%s\n' "$out" >>"$RESULTS"
	[[ -n $out && -z ${QUIET:-} ]] && say "  $label $tag: $(summary "$out")"
	return 0
}
summary() {
	jq -r '[
	  (if .per_s then "\(.per_s)/s" else empty end),
	  (if .target_cpu_us_per_conn then "\(.target_cpu_us_per_conn) µs CPU/session" else empty end),
	  (if .hold then "\(.hold.rss_kib_per_session) KiB RSS/session" else empty end),
	  (if .target_cpu_us_per_msg then "\(.target_cpu_us_per_msg) µs CPU/msg" else empty end),
	  (if .cmd == "pub" then "ok=\(.ok)" else empty end),
	  (if .rtt_us then "p50 \(.rtt_us.p50) µs p99 \(.rtt_us.p99) µs" else empty end),
	  (if .mb_per_s then "\(.mb_per_s) MB/s \(.target_cpu_s_per_gb) CPU-s/GB" else empty end),
	  (if .failed and .failed > 0 then "FAILED \(.failed): \(.first_error)" else empty end)
	] | join(", ")' <<<"$1"
}

MTLS=(--mode mtls --addr "127.0.0.1:$P_MTLS" --ca "$WORK/ca.crt" --cert "$WORK/client.crt" --key "$WORK/client.key")
PSK=(--psk-identity bench-device --psk-key "$PSK_KEY")

# measure TARGET: every measurement of one repetition, each group on a freshly started target.
measure() {
	local t=$1 pids
	# Idle sessions, on a fresh process: its memory before the sessions is the baseline.
	for size in small large; do
		local n=$HOLD_SMALL
		[[ $size == large ]] && n=$HOLD_LARGE
		((n > 0)) || continue
		start_target "$t"
		pids=$(IFS=,; echo "${TARGET_PIDS[*]}")
		sleep 1 # let it settle (a Go runtime's first GC, nginx's worker start)
		run "$t" "hold-$size" "$pids" conns "${MTLS[@]}" --n "$n" --c "$CONNS_C" --hold "$HOLD_FOR"
		stop_target
	done

	start_target "$t"
	pids=$(IFS=,; echo "${TARGET_PIDS[*]}")
	run "$t" conns-mtls "$pids" conns "${MTLS[@]}" --n "$CONNS_N" --c "$CONNS_C"
	run "$t" conns-resume "$pids" conns "${MTLS[@]}" --n "$CONNS_N" --c "$CONNS_C" --resume
	case $t in mqtls | stunnel | mosquitto)
		run "$t" conns-psk "$pids" conns --mode psk --addr "127.0.0.1:$P_PSK" "${PSK[@]}" --n "$PSK_N" --c "$CONNS_C"
		# TLS 1.3 external PSK, psk_dhe_ke with X25519 (stunnel and Mosquitto through OpenSSL).
		run "$t" conns-psk13 "$pids" conns --mode psk --addr "127.0.0.1:$P_PSK" "${PSK[@]}" --psk-suite TLS_AES_128_GCM_SHA256 --n "$PSK_N" --c "$CONNS_C" ;;
	esac
	case $t in mqtls | stunnel) # client mode: plain in, mutual TLS out to the remote broker
		run "$t" conns-client "$pids" conns --mode plain --addr "127.0.0.1:$P_CLIENT" --n "$PSK_N" --c "$CONNS_C" ;;
	esac
	[[ $t == mqtls ]] &&
		run "$t" conns-dtls "$pids" conns --mode dtls-psk --addr "127.0.0.1:$P_DTLS" "${PSK[@]}" --n "$DTLS_N" --c "$CONNS_C"
	local pub=(--publishers "$PUBLISHERS" --subscribers "$SUBSCRIBERS" --payload "$PAYLOAD" --batch "$BATCH")
	run "$t" pub-qos0 "$pids" pub "${MTLS[@]}" "${pub[@]}" --qos 0 --messages "$PUB0_MSGS"
	run "$t" pub-qos1 "$pids" pub "${MTLS[@]}" "${pub[@]}" --qos 1 --messages "$PUB1_MSGS"
	run "$t" ping "$pids" ping "${MTLS[@]}" --count "$PING_N" --warmup "$PING_WARM"
	# The same with the target moved to CPU 0, beside the load tool and the broker: no
	# wake-up of another CPU on the way (costly in a VM), only the target's own work.
	local p
	for p in "${TARGET_PIDS[@]}"; do taskset -apc 0 "$p" >/dev/null; done
	run "$t" ping-cpu0 "$pids" ping "${MTLS[@]}" --count "$PING_N" --warmup "$PING_WARM"
	for p in "${TARGET_PIDS[@]}"; do taskset -apc 1 "$p" >/dev/null; done
	local bulk_addr="127.0.0.1:$P_BULK"
	[[ $t == mosquitto ]] && bulk_addr="127.0.0.1:$P_MTLS" # into the broker itself, no subscriber
	run "$t" bulk "$pids" bulk "${MTLS[@]}" --addr "$bulk_addr" --bytes "$BULK_BYTES" --packet-size "$PACKET"
	stop_target

	# Busy polling, which mqtls and HAProxy offer: the target's CPU kept busy while sessions
	# talk, so that no round trip waits for that CPU to wake up.
	case $t in mqtls | haproxy)
		start_target "$t" busy
		pids=$(IFS=,; echo "${TARGET_PIDS[*]}")
		run "$t" ping-busy "$pids" ping "${MTLS[@]}" --count "$PING_N" --warmup "$PING_WARM"
		stop_target
		;;
	esac
}

TARGETS=(mqtls stunnel haproxy nginx mosquitto)
say "$REPS repetition(s) of ${TARGETS[*]}; idle sessions at $HOLD_SMALL and ${HOLD_LARGE/#0/(none)}; fd limit $FD_LIMIT"
for ((rep = 0; rep < REPS; rep++)); do
	# The baseline: ping straight to the broker, no TLS.
	run direct ping "$BROKER_PID" ping --mode plain --addr "127.0.0.1:$P_BROKER" --count "$PING_N" --warmup "$PING_WARM"
	# Alternate: each repetition starts one target later, so none always runs first.
	for ((i = 0; i < ${#TARGETS[@]}; i++)); do
		t=${TARGETS[$(((i + rep) % ${#TARGETS[@]}))]}
		say "repetition $((rep + 1))/$REPS: $t ($((SECONDS - START_TIME)) s so far)"
		measure "$t"
	done
done
MEASURED_S=$((SECONDS - START_TIME))

# --- report ----------------------------------------------------------------------------------------
version() { "$@" 2>&1 | head -1 | tr -d '"' | sed 's/[[:space:]]\+$//'; }
jq -cn \
	--arg date "$(date -u '+%Y-%m-%d %H:%M UTC')" \
	--arg args "$ARGS" \
	--arg mode "$( ((QUICK)) && echo "quick mode (smaller counts)" || echo "full run")" \
	--argjson reps "$REPS" \
	--arg note "$NOTE" \
	--arg cpu_model "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')" \
	--argjson nproc "$(nproc --all)" \
	--arg kernel "$(uname -r)" \
	--arg os "$(. /etc/os-release && echo "$PRETTY_NAME")" \
	--arg go "$(go env GOVERSION)" \
	--arg mqtls "$(git describe --tags --always --dirty 2>/dev/null || echo dev)" \
	--arg stunnel "$("$STUNNEL" -version 2>&1 | awk '/^stunnel /{print $2; exit}')" \
	--arg haproxy "$(version haproxy -v | awk '{print $3}')" \
	--arg nginx "$(version nginx -v | sed 's/.*nginx\///')" \
	--arg mosquitto "$(version mosquitto -h | awk '{print $3}')" \
	--arg openssl "$(version openssl version | awk '{print $2}')" \
	--argjson hold_small "$HOLD_SMALL" --argjson hold_large "$HOLD_LARGE" \
	--arg method "$(
		cat <<EOF
- **Sessions/s, CPU µs/session**: \`mqtls-bench conns\`, $CONNS_N sessions, $CONNS_C being opened at once, each from one of 127.0.0.2–254 round-robin: TCP connect, handshake, MQTT 3.1.1 CONNECT, CONNACK from the broker, DISCONNECT, close. CPU is the target's CPU time over the run (all its processes and threads: per-thread schedstat to the nanosecond, or utime+stime from /proc/PID/stat when threads ended meanwhile) ÷ sessions, so it covers the handshake, the upstream dial, the CONNECT and the close. The load tool shares CPU 0 with the broker and is often the limit of the rate; the CPU column is the target's own cost. TLS-PSK: $PSK_N sessions, TLS 1.2 with TLS_PSK_WITH_AES_128_GCM_SHA256 (conns-psk) and TLS 1.3 external PSK with TLS_AES_128_GCM_SHA256 and X25519 (conns-psk13); DTLS-PSK: $DTLS_N.
- **Resumed sessions**: the same, with \`--resume\`: each session offers the TLS 1.3 ticket the session before it received (one client-side ticket cache for the run), with X25519 (PSK with (EC)DHE, the only resumption Go's client offers). The result line counts the sessions that resumed; a target that resumed fewer than 90% has no figure.
- **RSS KiB/idle session**: a freshly started target, then \`conns --hold $HOLD_FOR\` opens N mutual-TLS sessions and leaves them idle; (VmRSS at the last sample − VmRSS before) ÷ N. For Mosquitto it includes the broker's own per-client state. mqtls gives the memory a burst of handshakes used back to the OS once none has run for 2 s (\`--memory-release-after\`, on by default), which the hold includes; the others keep what their allocator holds. PSS (smaps_rollup) is in the result lines too.
- **QoS 0 / QoS 1 CPU µs/msg**: \`mqtls-bench pub\`, $PUBLISHERS publishers and $SUBSCRIBERS subscriber, all through the target, $PAYLOAD-byte payloads written $BATCH per write, QoS 0: $PUB0_MSGS, QoS 1: $PUB1_MSGS messages per publisher; the subscriber must receive every message (a run that lost any does not count). Target CPU ÷ (messages in + deliveries out).
- **ping added**: $PING_N PINGREQ→PINGRESP round trips, one at a time, over one session through the target, minus the same straight to Mosquitto (load tool and broker both on CPU 0). "CPU 1" is the usual pinning: each round trip wakes CPU 1 twice for a proxy (once for Mosquitto's own listener), which costs tens of µs in this VM whatever the target. "same CPU" moves the target to CPU 0 for this run only (\`taskset -apc 0\`), leaving the target's own processing. "busy polling" is a fresh target on CPU 1 with its busy polling on (mqtls \`busy_poll: $BUSY_POLL\`, HAProxy \`busy-polling\`; the others have none): it keeps CPU 1 busy while the session talks, so only the wake-ups of CPU 0 remain.
- **bulk**: $((BULK_BYTES >> 20)) MiB of 64 KiB QoS 0 PUBLISHes on one session, then a PINGREQ whose PINGRESP marks the end; the proxies forward to \`mqtls-bench sink\` (reads and discards), Mosquitto receives them itself (no subscriber). MB = 10⁶ bytes.
- **Client mode**: \`mqtls-bench conns --mode plain\` into mqtls's client-mode listener and stunnel's \`client = yes\` service, $PSK_N sessions: plain CONNECT in, TLS 1.3 mutual TLS out to a second Mosquitto (on CPU 0) with \`require_certificate true\`, its CONNACK back. CPU is the target's, so it covers the handshake as the client side, the dial and the close.
- Logging as each does by default: mqtls writes its JSON audit line per connection, stunnel its notices, Mosquitto its connection messages (to files); HAProxy and nginx log nothing without a log directive. mqtls's policy is \`client_id: off\` (plain termination, like the peers).
EOF
	)" \
	--arg setup "ECDSA P-256 certificates (openssl), TLS 1.3 with X25519 for certificates; HAProxy nbthread 1, nginx 1 worker; fd limit $FD_LIMIT per process" \
	'{cmd:"meta", date:$date, args:$args, mode:$mode, reps:$reps, note:$note, cpu_model:$cpu_model,
	  nproc:$nproc, kernel:$kernel, os:$os, go:$go, hold_small:$hold_small, hold_large:$hold_large,
	  method:$method, setup:$setup,
	  versions:{mqtls:$mqtls, stunnel:$stunnel, haproxy:$haproxy, nginx:$nginx, mosquitto:$mosquitto, openssl:$openssl},
	  targets:["mqtls","stunnel","haproxy","nginx","mosquitto","direct"],
	  names:{mqtls:"mqtls", stunnel:"stunnel", haproxy:"HAProxy", nginx:"nginx stream", mosquitto:"Mosquitto TLS listener"}}' \
	>>"$RESULTS"

"$BENCH" report --out "$OUT" "$RESULTS"
say "wrote $OUT ($MEASURED_S s of measurements)"

# --- profiles (optional) ---------------------------------------------------------------------------
if ((PPROF)); then
	say "profiling mqtls (CPU profiles of 10 s during conns and pub)"
	start_target mqtls pprof
	pids=$TARGET_MAIN
	for what in conns pub; do
		curl -s -o "$WORK/mqtls-$what.pprof" --max-time 30 "http://127.0.0.1:$P_ADMIN/debug/pprof/profile?seconds=10" &
		curl_pid=$!
		STARTED+=("$curl_pid")
		sleep 0.5
		deadline=$((SECONDS + 10))
		runs=0
		while ((SECONDS < deadline && runs < 100)); do # load for the whole profile, in bounded runs
			runs=$((runs + 1))
			QUIET=1
			case $what in
			conns) run mqtls pprof-conns "$pids" conns "${MTLS[@]}" --n 1000 --c "$CONNS_C" ;;
			pub) run mqtls pprof-pub "$pids" pub "${MTLS[@]}" --publishers "$PUBLISHERS" \
				--subscribers "$SUBSCRIBERS" --payload "$PAYLOAD" --batch "$BATCH" --qos 0 --messages 20000 ;;
			esac
			QUIET=""
		done
		wait "$curl_pid" || true
		forget "$curl_pid"
		{
			go tool pprof -top -nodecount=30 "$MQTLS" "$WORK/mqtls-$what.pprof"
			echo
			go tool pprof -top -cum -nodecount=40 "$MQTLS" "$WORK/mqtls-$what.pprof"
		} >"$WORK/pprof-$what.txt" 2>&1 || true
		say "$runs $what runs; top of the profile ($WORK/pprof-$what.txt):"
		sed -n '1,22p' "$WORK/pprof-$what.txt" >&2
	done
	stop_target
fi

say "done in $((SECONDS - START_TIME)) s; results in $RESULTS$( ((KEEP_WORK)) || echo " (removed at exit; keep them with --work DIR)")"
((FAILED == 0)) || die "$FAILED measurement(s) failed; see $WORK/bench-errors.log"
