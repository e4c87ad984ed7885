# The release image. The binary is built by `make release`, the same target CI builds and
# checks with `make check-release` (static, version stamped), so the two cannot drift.
#
#   docker build --build-arg VERSION="$(git describe --tags --always --dirty)" -t mqtls .
#
# Multi-arch (arm64 gateways, amd64 servers), one manifest list pushed to your registry:
#
#   docker buildx build --platform linux/amd64,linux/arm64 \
#     --build-arg VERSION="$(git describe --tags --always --dirty)" \
#     -t registry.example.com/mqtls:v0.1.0 --push .
#
# The build stage runs on the builder's own platform ($BUILDPLATFORM) and cross-compiles
# for each target with GOOS/GOARCH from TARGETOS/TARGETARCH: the binary is pure Go
# (CGO_ENABLED=0), so no emulation (QEMU) is needed and an arm64 image builds as fast as an
# amd64 one. The final stage is distroless/static, which is published for both.

# Match go.mod's go line: the golang images set GOTOOLCHAIN=local, so an older Go fails
# the build instead of downloading a toolchain.
FROM --platform=$BUILDPLATFORM golang:1.26.8-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# .git is not in the build context, so the version comes from here.
ARG VERSION=dev
# Set by BuildKit for each --platform (the host's without one); where they are empty, Go
# builds for the host.
ARG TARGETOS
ARG TARGETARCH
RUN GOOS=${TARGETOS} GOARCH=${TARGETARCH} make release VERSION="${VERSION}"

# distroless/static: CA certificates, time zones, /etc/passwd with nonroot; no shell, no libc.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /src/bin/mqtls /mqtls
# Numeric, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 65532:65532
# TLS, DTLS, admin (/metrics, /healthz, /readyz): what examples/kubernetes uses.
EXPOSE 8883/tcp 5684/udp 9090/tcp
ENTRYPOINT ["/mqtls"]
CMD ["serve"]
