# amphora-agent: the Octavia amphora agent in Go.
#   make demo    build, install missing packages, run the agent end to end
#   make test    install what the tests need, run every test
#   make deb     the Debian package;  make image  the amphora image
GO      ?= $(shell command -v go 2>/dev/null || echo /usr/local/go/bin/go)
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)
# nomsgpack: gin's MessagePack codec (ugorji/go), which the agent never
# speaks, is left out: 6.5 MB less code in the binary, 1.7 MiB less idle
# PSS before internal/memtrim (README, Performance).
TAGS    := nomsgpack
BIN     := bin/amphora-agent
# The Debian package and the amphora image (scripts/build-deb.sh,
# scripts/build-image.sh).
DEB_VERSION ?= $(shell ./scripts/deb-version.sh)
DEB_ARCH    ?= $(shell dpkg --print-architecture 2>/dev/null || echo amd64)
DEB     := bin/amphora-agent_$(DEB_VERSION)_$(DEB_ARCH).deb
# The VM tests (test/vm) and "make vm" boot the image ($AMPHORA_IMAGE
# overrides).
IMAGE   ?= bin/amphora-x64-haproxy.qcow2
# Test packages run one at a time on small machines: the end-to-end tests
# start real haproxy, keepalived and systemd managers.
TESTFLAGS ?= -race -count=1 -timeout 60m
# The linter, pinned: "go run" fetches exactly this version (module cache).
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2
# Time per fuzz target: short in "make test", longer in "make fuzz".
FUZZTIME ?= 10s
FUZZTIME_LONG ?= 5m

.PHONY: help build deps test vet fmt-check fuzz demo bench clean deb image vm

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "%-10s %s\n", $$1, $$2}'

build: ## build bin/amphora-agent
	$(GO) build -trimpath -tags "$(TAGS)" -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/amphora-agent

deps: ## install the Debian packages the agent and the tests need (idempotent)
	./scripts/deps.sh

vet: ## go vet, gofmt check and staticcheck
	$(GO) vet ./...
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) run $(STATICCHECK) ./...

deb: ## build the Debian package bin/amphora-agent_<version>_<arch>.deb
	# A static program (CGO_ENABLED=0): one package for every Debian and
	# Ubuntu release.
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-s -w -X main.version=$(DEB_VERSION)" -o bin/deb/amphora-agent ./cmd/amphora-agent
	rm -f bin/amphora-agent_*.deb
	./scripts/build-deb.sh bin/deb/amphora-agent $(DEB_VERSION) $(DEB)

image: deps deb ## build bin/amphora-x64-haproxy.qcow2 with diskimage-builder (cached)
	./scripts/build-image.sh $(DEB) $(IMAGE)

test: deps build vet image ## install what tests need, run every test
	# The agent processes the end-to-end tests start run with the race
	# detector too; a race they report fails the test. The image tests
	# check and boot the image "make image" built.
	$(GO) build -race -o $(BIN)-race ./cmd/amphora-agent
	AMPHORA_AGENT_BIN=$(CURDIR)/$(BIN)-race AMPHORA_IMAGE=$(CURDIR)/$(IMAGE) AMPHORA_DEB=$(CURDIR)/$(DEB) \
	  $(GO) test $(TESTFLAGS) ./...
	# Every fuzz target for a short fixed time (their seed corpora in
	# testdata/fuzz already ran as tests above).
	GO=$(GO) ./scripts/fuzz.sh $(FUZZTIME)

fuzz: ## run every fuzz target for FUZZTIME_LONG (5m) each
	GO=$(GO) FUZZ_PARALLEL=$${FUZZ_PARALLEL:-2} ./scripts/fuzz.sh $(FUZZTIME_LONG)

demo: deps build ## run the agent end to end with real haproxy in a namespace
	./scripts/demo.sh $(BIN)

vm: deps image ## boot an amphora in QEMU like Nova + the controller; Ctrl-C removes it
	# test/vm's harness: config drive from Octavia's own compute task,
	# ports hot-plugged through QMP, an HTTP load balancer; it prints how
	# to reach the amphora and keeps it running until interrupted.
	$(GO) run ./test/vm/cmd/amphora-vm -image $(IMAGE)

bench: build ## side-by-side benchmarks with the reference agent
	./scripts/deps.sh bench
	./bench/run.sh $(BIN)

clean: ## remove build output
	rm -rf bin
