# hostvol: build, run, test, benchmark.
#
#   make run     build and run the driver locally on a socket, with a data
#                directory it creates (Ctrl-C stops it)
#   make test    install test dependencies if missing, vet, unit tests,
#                crash tests and both csi-sanity runs
#   make bench   Go benchmarks and the load tool against a local driver
#   make verify  formatting, vet, go.mod tidiness

SHELL := /bin/bash
GO ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)
BIN := bin
RUN_DIR ?= /tmp/hostvol-run
GO_TEST_FLAGS ?= -count=1 -timeout 10m

.PHONY: all build run test unit sanity deps bench verify clean

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
	$(GO) test $(GO_TEST_FLAGS) -v ./test/sanity/... -args -ginkgo.no-color | \
		grep -E '^(=== RUN|--- |PASS|FAIL|ok |Ran [0-9]+ of|SUCCESS|FAIL!|.*Passed \||  \[FAIL\]|  .*\.go:[0-9]+$$)' ; \
		exit $${PIPESTATUS[0]}

bench: build
	$(GO) test -run '^$$' -bench . -benchtime 2000x ./pkg/records/ ./pkg/volume/
	./test/bench.sh

verify:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	@cp go.mod /tmp/hostvol-go.mod.bak && cp go.sum /tmp/hostvol-go.sum.bak && $(GO) mod tidy && \
		if ! git diff --quiet -- go.mod go.sum; then echo "go.mod/go.sum not tidy"; git diff -- go.mod go.sum; \
		cp /tmp/hostvol-go.mod.bak go.mod; cp /tmp/hostvol-go.sum.bak go.sum; exit 1; fi

clean:
	rm -rf $(BIN)
