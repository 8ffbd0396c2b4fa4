# hostvol CSI driver image.
#
#   docker build --build-arg VERSION=$(git describe --tags --always --dirty) \
#       -t ghcr.io/seed3e7d50b2/hostvol:TAG .
#
# Multi-arch with buildx: the Go stage runs on the build machine and
# cross-compiles (CGO is off), only the runtime stage is per platform:
#
#   docker buildx build --platform linux/amd64,linux/arm64 ...

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
RUN CGO_ENABLED=0 GOOS=${TARGETOS} GOARCH=${TARGETARCH} \
    go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" \
    -o /out/hostvol ./cmd/hostvol

FROM debian:bookworm-slim
ARG VERSION=dev
# Tools the node plugin runs: blkid (util-linux), mount, umount and losetup
# (mount), and mkfs, resize and tuning tools for ext4 (e2fsprogs), XFS
# (xfsprogs) and btrfs (btrfs-progs).
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        util-linux \
        mount \
        e2fsprogs \
        xfsprogs \
        btrfs-progs \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/hostvol /usr/local/bin/hostvol
LABEL org.opencontainers.image.title="hostvol" \
      org.opencontainers.image.description="CSI driver for node-local directory, loop-filesystem and block volumes" \
      org.opencontainers.image.source="https://github.com/seed3e7d50b2/hostvol" \
      org.opencontainers.image.version="${VERSION}"
ENTRYPOINT ["/usr/local/bin/hostvol"]
