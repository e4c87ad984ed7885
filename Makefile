# Release build and its checks. The Dockerfile runs `make release`, so the image holds the
# binary CI checks here; CI has no container engine, so check-release proves what the image
# relies on: the binary is static (distroless/static has no libc) and carries its version.

# VERSION is stamped into the binary (mqtls version prints it): the nearest tag, else the
# commit, with -dirty for uncommitted changes; "dev" outside a git checkout.
ifeq ($(origin VERSION),undefined)
VERSION := $(shell git describe --tags --always --dirty 2>/dev/null)
endif
ifeq ($(strip $(VERSION)),)
override VERSION := dev
endif

BIN := bin/mqtls

.PHONY: release check-release test clean

# release builds the static release binary: no cgo, no local paths, no symbol table.
release:
	CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=$(VERSION)" -o $(BIN) ./cmd/mqtls

# check-release builds the release binary and fails unless it is statically linked (by
# file, or by ldd when file is missing or unsure; both phrasings of each), was built
# without cgo and with -trimpath, and reports the version it was stamped with.
check-release: release
	@set -eu; \
	static=; \
	if command -v file >/dev/null 2>&1; then \
		out=$$(file $(BIN)); echo "file: $$out"; \
		case "$$out" in *"statically linked"*|*"static-pie linked"*) static=file;; esac; \
	fi; \
	if [ -z "$$static" ]; then \
		out=$$(ldd $(BIN) 2>&1 || true); echo "ldd: $$out"; \
		case "$$out" in *"not a dynamic executable"*|*"statically linked"*) static=ldd;; esac; \
	fi; \
	[ -n "$$static" ] || { echo "check-release: $(BIN) is dynamically linked; the distroless/static image cannot run it" >&2; exit 1; }; \
	settings=$$(go version -m $(BIN)); \
	echo "$$settings" | grep -q 'CGO_ENABLED=0' || { echo "check-release: $(BIN) was not built with CGO_ENABLED=0" >&2; exit 1; }; \
	echo "$$settings" | grep -q -- '-trimpath=true' || { echo "check-release: $(BIN) was not built with -trimpath" >&2; exit 1; }; \
	out=$$(./$(BIN) version); echo "version: $$out"; \
	set -- $$out; \
	[ "$${2:-}" = "$(VERSION)" ] || { echo "check-release: $(BIN) version says '$${2:-}', want '$(VERSION)'" >&2; exit 1; }; \
	echo "check-release: $(BIN) is static (by $$static), CGO_ENABLED=0, -trimpath, version $(VERSION)"

# test runs the project's whole test command (it runs check-release too).
test:
	./scripts/test.sh

clean:
	rm -rf bin

# fuzz runs every fuzz target for FUZZTIME each (default 5 minutes) after the test suite's
# own checks; CI runs the same pass with 20 s per target. Crashers land in testdata/fuzz.
FUZZTIME ?= 5m
.PHONY: fuzz
fuzz:
	FUZZTIME=$(FUZZTIME) ./scripts/test.sh

# bench-peers measures mqtls against stunnel, HAProxy, nginx stream and Mosquitto's own TLS
# listener on this machine and rewrites BENCHMARKS.md (installs the peers with apt-get when
# missing; about 10 minutes). BENCH_ARGS=--quick for a short run, e.g.
# make bench-peers BENCH_ARGS="--quick --work /tmp/bench".
.PHONY: bench-peers
bench-peers:
	./scripts/bench-peers.sh $(BENCH_ARGS)

# bench-dtls-flood: 20,000 spoofed ClientHellos per second for 30 s at mqtls's DTLS
# listener while real DTLS-PSK devices connect; prints their success rate and mqtls's
# memory. Other rates: make bench-dtls-flood FLOOD_RATES="20000 40000 80000".
.PHONY: bench-dtls-flood
bench-dtls-flood:
	./scripts/bench-dtls-flood.sh $(FLOOD_RATES)

# soak runs TestSoak (cmd/mqtls/soak_e2e_test.go) for MQTLS_SOAK with MQTLS_SOAK_DEVICES
# devices: the real binary in front of a real Mosquitto while the broker is killed and
# restarted, the certificates and PSK file rotated, the TCP listeners flooded and half the
# DTLS devices run over a lossy relay, one round of faults a minute. CI runs the same test
# for a minute with 300 devices. No -race here: the race detector allows 8128 goroutines
# per process, fewer than 3000 devices need.
MQTLS_SOAK ?= 10m
MQTLS_SOAK_DEVICES ?= 3000
.PHONY: soak
soak:
	PATH="$$PATH:/usr/sbin" MQTLS_SOAK=$(MQTLS_SOAK) MQTLS_SOAK_DEVICES=$(MQTLS_SOAK_DEVICES) \
		go test -count=1 -timeout 3h -run '^TestSoak$$' -v ./cmd/mqtls
