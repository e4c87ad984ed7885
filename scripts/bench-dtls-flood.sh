#!/usr/bin/env bash
# scripts/bench-dtls-flood.sh: the DTLS spoofed-source flood benchmark (make bench-dtls-flood).
#
# Starts Mosquitto and mqtls (built from this tree, default settings, a DTLS-PSK listener),
# then runs `mqtls-bench dtls-flood`: cookieless ClientHellos from spoofed 127.0.0.0/8
# addresses at --flood-rate for --flood-duration while real DTLS-PSK devices connect. It
# prints one JSON line per rate: the devices' success rate, the flood rate achieved, and
# mqtls's RSS before, at most during, and after the flood.
#
# Usage: scripts/bench-dtls-flood.sh [RATE...]     (default: 20000)
#   MQTLS=/path/to/mqtls measures that binary (an older build, say) instead of this tree's.
#   FLOOD_DURATION=30s FLOOD_SOURCES=200000 DEVICES=300 scripts/bench-dtls-flood.sh 20000 40000
# Spoofing any source needs a raw socket (root); otherwise the flood binds one socket per
# hello, which is slower. Loopback only; every run is bounded in count and time.
set -euo pipefail
cd "$(dirname "$0")/.."
die() { echo "bench-dtls-flood: $*" >&2; exit 1; }
command -v mosquitto >/dev/null || [[ -x /usr/sbin/mosquitto ]] || die "mosquitto missing: apt-get install -y mosquitto"
MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)
RATES=("${@:-20000}")
WORK=$(mktemp -d /tmp/bench-dtls-flood.XXXXXX)
BASE=$((20000 + RANDOM % 20000))
P_BROKER=$BASE P_TLS=$((BASE + 1)) P_DTLS=$((BASE + 2))
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

if [[ -n ${MQTLS:-} ]]; then cp "$MQTLS" "$WORK/mqtls"; else go build -o "$WORK/mqtls" ./cmd/mqtls; fi
go build -o "$WORK/mqtls-bench" ./cmd/mqtls-bench
KEY=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
echo "flood-device:$KEY" >"$WORK/psk.txt"
printf 'listener %s 127.0.0.1\nallow_anonymous true\n' "$P_BROKER" >"$WORK/broker.conf"
"$MOSQUITTO" -c "$WORK/broker.conf" >"$WORK/broker.log" 2>&1 &
pids+=($!)
"$WORK/mqtls" serve --listen "127.0.0.1:$P_TLS" --dtls-listen "127.0.0.1:$P_DTLS" \
	--psk-file "$WORK/psk.txt" --upstream "127.0.0.1:$P_BROKER" --log-level warn >"$WORK/mqtls.log" 2>&1 &
MQTLS_PID=$!
pids+=("$MQTLS_PID")
sleep 1
kill -0 "$MQTLS_PID" 2>/dev/null || die "mqtls did not start: $(cat "$WORK/mqtls.log")"
for rate in "${RATES[@]}"; do
	"$WORK/mqtls-bench" dtls-flood --addr "127.0.0.1:$P_DTLS" --mode dtls-psk \
		--psk-identity flood-device --psk-key "$KEY" --pid "$MQTLS_PID" \
		--flood-rate "$rate" --flood-duration "${FLOOD_DURATION:-30s}" \
		--flood-sources "${FLOOD_SOURCES:-200000}" --devices "${DEVICES:-300}" \
		--timeout 3m --label mqtls --tag "flood-$rate" || true
done
