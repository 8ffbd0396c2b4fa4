# hostvol CSI driver image.
#
#   docker build --build-arg VERSION=$(git describe --tags --always --dirty) \
#       -t ghcr.io/seed3e7d50b2/hostvol:TAG .
#
# Multi-arch with buildx: the Go stage runs on the build machine and
# cross-compiles (CGO is off), only the runtime stage is per platform:
#
#   docker buildx build --platform linux/amd64,linux/arm64 ...
#
# The runtime packages are listed in deploy/image/packages.txt, which the
# e2e suite's engine-less image build (test/e2e/scripts/rootfs.sh) reads
# too; `make verify` checks that both install from that file.

# The Go release go.mod asks for; bump both together.
ARG GO_VERSION=1.26.8

FROM --platform=$BUILDPLATFORM golang:${GO_VERSION}-bookworm AS build
ARG TARGETOS
ARG TARGETARCH
ARG VERSION=dev
WORKDIR /src
# Modules first, so a source change does not download them again.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# Static: CGO off, so the binary needs nothing from the runtime image but
# the tools it runs.
RUN CGO_ENABLED=0 GOOS=${TARGETOS} GOARCH=${TARGETARCH} \
    go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" \
    -o /out/hostvol ./cmd/hostvol

# The same Debian release as the build stage and the e2e image.
FROM debian:bookworm-slim
ARG VERSION=dev
# Exactly the packages of deploy/image/packages.txt (one per line, #
# comments): the tools the node plugin runs (mount, losetup, blkid, mkfs,
# resize and quota tools for ext4, XFS and btrfs).
COPY deploy/image/packages.txt /tmp/packages.txt
RUN apt-get update \
    && sed -e 's/#.*//' /tmp/packages.txt | xargs -r \
        env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/* /tmp/packages.txt
COPY --from=build /out/hostvol /usr/local/bin/hostvol
LABEL org.opencontainers.image.title="hostvol" \
      org.opencontainers.image.description="CSI driver for node-local directory, loop-filesystem and block volumes" \
      org.opencontainers.image.source="https://github.com/seed3e7d50b2/hostvol" \
      org.opencontainers.image.version="${VERSION}"
ENTRYPOINT ["/usr/local/bin/hostvol"]
