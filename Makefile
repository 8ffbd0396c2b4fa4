# hostvol: build, run, test, benchmark.
#
#   make run     build and run the driver locally on a socket, with a data
#                directory it creates (Ctrl-C stops it)
#   make test    install test dependencies if missing, vet, unit tests,
#                crash tests, every csi-sanity run, and the VM tests
#                (test/vm: Debian's kernel in qemu, for what this host's
#                kernel or capabilities cannot do); the one command that
#                runs every test
#   make unit    the edit loop: go test -short on pkg/, cmd/ and
#                hack/load, as any user; the tests that need root (real
#                mounts, loop devices) skip, csi-sanity, crash and VM
#                tests do not run; no package installs. 11 s here (median
#                of 3, -count=1, build cache warm, 2 cores shared with
#                other work)
#   make sanity  the csi-sanity suites alone (test/sanity/run.sh: full log
#                in bin/sanity.log, a summary per package, the whole log
#                when anything fails)
#   make bench   Go benchmarks and the load tool against a local driver
#   make verify  formatting, vet, go.mod tidiness; deploy/: the kustomize
#                base and the Helm chart render the same objects, every
#                overlay builds, helm lint (kustomize and helm: pinned,
#                built once by hack/tools.sh); the Dockerfile and the e2e
#                image install deploy/image/packages.txt; make lint
#   make lint    golangci-lint (.golangci.yml; pinned, built once by
#                hack/tools.sh) on the driver's module and hack/manifestnorm
#   make e2e     a real single-node Kubernetes on this machine (test/e2e):
#                install hostvol with kubectl apply -k, run the scenarios,
#                tear down; needs root (see test/e2e/README.md)

SHELL := /bin/bash
GO ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)
BIN := bin
RUN_DIR ?= /tmp/hostvol-run
GO_TEST_FLAGS ?= -count=1 -timeout 10m

.PHONY: all build run test unit sanity deps bench verify lint verify-deploy verify-image clean vm-test e2e

all: build

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/hostvol ./cmd/hostvol

# The driver on a local socket with a pool and state directory under
# $(RUN_DIR). Publishing (bind mounts) needs root; everything else does not.
run: build
	@mkdir -p $(RUN_DIR)/pool $(RUN_DIR)/state
	@echo "hostvol: socket unix://$(RUN_DIR)/csi.sock, pool $(RUN_DIR)/pool, state $(RUN_DIR)/state"
	@echo "hostvol: in another shell try:  HOSTVOL_ENDPOINT=unix://$(RUN_DIR)/csi.sock $(BIN)/hostvol client info"
	exec $(BIN)/hostvol --endpoint unix://$(RUN_DIR)/csi.sock --state-dir $(RUN_DIR)/state \
		--pool default=$(RUN_DIR)/pool --node-id $${NODE_NAME:-$$(hostname)} -v 2

# Tools the tests use: mount/umount/losetup (util-linux), mkfs.ext4 and
# resize2fs (e2fsprogs), mkfs.xfs and xfs_growfs (xfsprogs). Installed from
# Debian's packages when missing (needs root), so a fresh machine needs no
# manual step.
deps:
	@./test/install-deps.sh

test: deps
	$(GO) vet ./...
	$(GO) test $(GO_TEST_FLAGS) $$($(GO) list ./... | grep -v /test/sanity/)
	GO="$(GO)" test/sanity/run.sh $(GO_TEST_FLAGS)
	$(MAKE) vm-test

# The edit loop: the tests of every package under pkg/, cmd/ and hack/load
# (the load tool) with -short, which skips the tests that need root (real
# mounts, loop devices) even as root. No csi-sanity, no crash or VM tests,
# no package installs. Go caches the results of packages that did not
# change.
unit:
	$(GO) test -short -timeout 5m ./pkg/... ./cmd/... ./hack/load/...

# The csi-sanity packages alone, as make test runs them: the whole go test -v
# output goes to bin/sanity.log; printed are the specs passed, failed,
# pending and skipped per package, and the whole log when anything fails.
sanity:
	GO="$(GO)" test/sanity/run.sh $(GO_TEST_FLAGS)

# Tests that need a real kernel as full root (online ext4 grow, project
# quotas): test/vmtests in a qemu VM booting Debian's kernel. See
# test/vm/README.md.
vm-test:
	@if [ "$$(id -u)" -ne 0 ] && [ -z "$${HOSTVOL_VM_CACHE:-}" ] && [ "$${HOSTVOL_REQUIRE_ROOT_TESTS:-}" != 1 ]; then \
		echo "vm-test: skipped: needs root (qemu install, /var/cache/hostvol-vm) or HOSTVOL_VM_CACHE; HOSTVOL_REQUIRE_ROOT_TESTS=1 makes this a failure"; \
	else test/vm/run.sh ./test/vmtests -test.v; fi

# End-to-end on a real cluster built here (Kubernetes from the Go module
# proxy, cached in /var/cache/hostvol-e2e). E2E_SCENARIOS="01 06" runs some,
# E2E_KEEP=1 leaves the cluster up. See test/e2e/README.md.
e2e:
	test/e2e/run.sh

bench: build
	$(GO) test -run '^$$' -bench . -benchtime 2000x ./pkg/records/ ./pkg/volume/
	./test/bench.sh

verify:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) mod tidy -diff
	$(MAKE) verify-deploy verify-image lint

# golangci-lint (pinned, built once by hack/tools.sh) with .golangci.yml,
# on the driver's module and on hack/manifestnorm's.
lint:
	@lint=$$(hack/tools.sh golangci-lint) && set -x && \
		$$lint run ./... && \
		cd hack/manifestnorm && $$lint run --config ../../.golangci.yml ./...

# hack/manifestnorm is its own module (it keeps a YAML library out of the
# driver's go.mod): vet and test it here, then compare the base with the
# chart. The first run builds kustomize and helm (3.5 to 4.5 minutes on 2
# cores with empty Go caches), later runs take seconds.
verify-deploy:
	$(GO) -C hack/manifestnorm mod tidy -diff
	$(GO) -C hack/manifestnorm vet ./...
	$(GO) -C hack/manifestnorm test -count=1 ./...
	hack/verify-deploy.sh

verify-image:
	hack/verify-image-packages.sh

clean:
	rm -rf $(BIN)
