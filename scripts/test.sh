#!/usr/bin/env bash
# The project's test command (README: ./scripts/test.sh), also what CI runs via .ci/run.
#
# It makes sure the real peers the end-to-end tests start are installed (mosquitto, its
# clients, openssl, gnutls-cli, testssl.sh for the TLS configuration audit) and the release
# check's tools (make, file), installing them with apt-get on Debian/Ubuntu when it can,
# then checks formatting, runs go vet, builds and checks the static release binary (make
# check-release), runs the whole test suite under the race detector, and a short fuzzing
# pass over every fuzz target. go test's results are shown per package as each finishes
# (scripts/testfmt), failures in full.
#
# A full run takes about 15-20 minutes on 2 cores (go test -race about 6, the rest fuzzing), of which the
# fuzzing pass is 20 s per fuzz target plus its build; FUZZTIME=off skips that pass.
#
# It never stops, disables or reconfigures a service already on the machine: the tests
# start their own brokers on free loopback ports, so a system Mosquitto on 1883 is harmless.
#
# Environment:
#   FUZZTIME         how long each fuzz target runs (default 20s; 0 or "off" skips fuzzing;
#                    `make fuzz` runs 5m each)
#   MQTLS_TEST_PKGS  the packages go vet, go test and the fuzzing pass cover (default ./...;
#                    e.g. "./policy/... ./proxy/..." for a quicker, partial run)
#   CI               set by .ci/run; only reported in the summary
set -euo pipefail

cd "$(dirname "$0")/.."

start=$SECONDS
say() { printf '==> %s\n' "$*"; }
die() { printf 'test.sh: %s\n' "$*" >&2; exit 1; }

install_cmd="apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y mosquitto mosquitto-clients openssl gnutls-bin testssl.sh make file gcc libmbedtls-dev"

need_go=$(awk '$1 == "go" { print $2; exit }' go.mod)
command -v go >/dev/null 2>&1 || die "go is not installed: install Go $need_go or newer (go.mod's go line; see https://go.dev/doc/install)"
have_go=$(go env GOVERSION 2>/dev/null || true)
have_go=${have_go#go}
if [[ -z $have_go || $(printf '%s\n%s\n' "$need_go" "$have_go" | sort -V | head -n1) != "$need_go" ]]; then
	die "this is Go ${have_go:-of unknown version} ($(command -v go)); mqtls needs Go $need_go or newer (go.mod's go line; see https://go.dev/doc/install)"
fi

read -r -a pkgs <<<"${MQTLS_TEST_PKGS:-./...}"
((${#pkgs[@]} > 0)) || die "MQTLS_TEST_PKGS is set but names no package"
npkgs=$(go list "${pkgs[@]}" | wc -l)
say "testing ${pkgs[*]} ($npkgs packages) with Go $have_go; a full run takes about 15-20 minutes on 2 cores${FUZZTIME:+ (FUZZTIME=$FUZZTIME)}"

missing_tools() {
	local tool out=()
	# testssl is the command Debian's testssl.sh package installs.
	for tool in mosquitto mosquitto_pub mosquitto_sub openssl gnutls-cli testssl make file cc; do
		# mosquitto lives in /usr/sbin, which is not on every user's PATH.
		command -v "$tool" >/dev/null 2>&1 || [[ -x /usr/sbin/$tool ]] || out+=("$tool")
	done
	# The mbedTLS DTLS client of the handshake tests is built against libmbedtls-dev.
	[[ -e /usr/include/mbedtls/ssl.h ]] || out+=("libmbedtls-dev")
	echo "${out[@]:-}"
}

# as_root runs a command as root: directly when we are root, through passwordless sudo when
# that works, and fails otherwise.
as_root() {
	if [[ $(id -u) -eq 0 ]]; then
		"$@"
	elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
		sudo -n "$@"
	else
		return 1
	fi
}

missing=$(missing_tools)
if [[ -n $missing ]]; then
	say "installing test tools (missing: $missing)"
	if as_root true 2>/dev/null && command -v apt-get >/dev/null 2>&1; then
		as_root apt-get update
		# The mosquitto package may start a system broker on 1883. It is left alone: the
		# tests start their own brokers on free ports, and a broker someone runs is theirs.
		as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y mosquitto mosquitto-clients openssl gnutls-bin testssl.sh make file gcc libmbedtls-dev
	fi
	missing=$(missing_tools)
	[[ -z $missing ]] || die "missing test tools: $missing; install them with: sudo sh -c '$install_cmd'"
fi
# /usr/sbin holds mosquitto on Debian; the tests look it up on PATH.
case ":$PATH:" in *:/usr/sbin:*) ;; *) PATH="$PATH:/usr/sbin" ;; esac
export PATH

say "gofmt"
unformatted=$(find . -name '*.go' -not -path './.git/*' -not -path '*/testdata/*' -print0 | xargs -0 -r gofmt -l)
[[ -z $unformatted ]] || die "gofmt needed on:"$'\n'"$unformatted"

say "go vet ${pkgs[*]}"
go vet "${pkgs[@]}"

# The Dockerfile's binary, checked here because CI has no container engine to build the image.
say "make check-release"
make check-release

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
go build -o "$tmp/testfmt" ./scripts/testfmt
say "go test -race ${pkgs[*]}: a line per package as it finishes, failures in full"
go test -race -count=1 -timeout 15m -json "${pkgs[@]}" | "$tmp/testfmt" -packages "$npkgs" | tee "$tmp/go-test.log" ||
	die "go test failed: the failing tests' output is above, the list of failed packages just before this line"
counts=$(tail -n1 "$tmp/go-test.log")
counts=${counts#tests: }

fuzzed=0
fuzztime=${FUZZTIME:-20s}
if [[ $fuzztime != 0 && $fuzztime != off ]]; then
	say "fuzzing each target for $fuzztime"
	# go test -list prints a package's matching names, then "ok <package> <time>".
	list=$(go test -list '^Fuzz' "${pkgs[@]}")
	targets=()
	names=()
	while IFS= read -r line; do
		case $line in
		Fuzz*) names+=("$line") ;;
		ok*)
			pkg=$(awk '{print $2}' <<<"$line")
			for name in "${names[@]}"; do targets+=("$pkg $name"); done
			names=()
			;;
		esac
	done <<<"$list"
	fuzzlog=$tmp/fuzz.log
	for target in "${targets[@]}"; do
		read -r pkg name <<<"$target"
		say "fuzz $pkg $name"
		corpus="$(go list -f '{{.Dir}}' "$pkg")/testdata/fuzz/$name"
		before=$(ls "$corpus" 2>/dev/null || true)
		# The engine minimizes every new interesting input, up to a minute each by default:
		# a 3 KiB input took the whole of a 20 s run (execs stalled at "0/sec"). Bound it, so
		# the time goes to fuzzing; a crasher is still reported, minimized for that long.
		rc=0
		go test -run='^$' -fuzz="^${name}\$" -fuzztime="$fuzztime" -fuzzminimizetime=3s "$pkg" 2>&1 |
			tee "$fuzzlog" || rc=$?
		if ((rc != 0)); then
			# Go 1.26's fuzz coordinator can fail a target at the -fuzztime deadline with a bare
			# "context deadline exceeded" and no input (golang/go#75804, fixed in Go 1.27).
			# A real finding always writes its input to testdata/fuzz: only that fails here.
			if [[ $(ls "$corpus" 2>/dev/null || true) == "$before" ]] &&
				grep -qx '    context deadline exceeded' "$fuzzlog" &&
				! grep -q -e 'Failing input' -e '^panic:' "$fuzzlog"; then
				say "fuzz $name: stopped by Go's -fuzztime shutdown race (golang/go#75804), no failing input; not a finding"
			else
				die "fuzz $pkg $name failed; see the output above (a failing input is in $corpus)"
			fi
		fi
		fuzzed=$((fuzzed + 1))
	done
fi

printf 'test.sh: PASS (gofmt, go vet, check-release, go test -race, %d fuzz target(s) x %s) in %ds%s\n' \
	"$fuzzed" "$fuzztime" $((SECONDS - start)) "${CI:+ [CI]}"
# The tests' count, last, in the plain form CI's log reader takes.
printf 'test.sh: %s\n' "$counts"
