# turnout: `make run` starts the quickstart on the embedded broker, `make test` runs every test.
GO        ?= go
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
VERSION   := $(VERSION)
LDFLAGS   := -s -w -X main.version=$(VERSION)
BIN       := build/turnout
# Build tags for `make build`: TAGS=otel compiles in the OpenTelemetry exporter (tracing block,
# docs/configuration.md); the container image is built with it, the release binaries without.
TAGS      ?=

.PHONY: all build release run test brokers toolchains vet fmt-check bench bench-e2e bench-footprint reliability fuzz clean rules image deploy-check

all: build rules

# The stock rules, built to build/rules/<name>.wasm with the standard Go toolchain, and the
# AssemblyScript and Rust SDKs' to build/rules/{assemblyscript,rust}/<name>.wasm.
include filters/rules.mk
include filters/sdk-as/rules.mk
include filters/sdk-rust/rules.mk

build:
	CGO_ENABLED=0 $(GO) build -trimpath -tags '$(TAGS)' -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/turnout

# Release binaries for the device edition and the cloud: static (CGO_ENABLED=0) linux/amd64,
# linux/arm64 and linux/arm/v7 builds of cmd/turnout, stamped like `make build`, as
# build/release/turnout-$(VERSION)-linux-{amd64,arm64,armv7}, with SHA256SUMS over them. The same
# sources and version give the same bytes (-trimpath, no build id or time in the binary); the
# directory is rewritten each time and then checked by scripts/releasecheck (static ELF of the
# right architecture, build settings, checksums, `turnout version` prints $(VERSION)).
RELEASE_DIR := build/release

release:
	@mkdir -p $(RELEASE_DIR)
	rm -f $(RELEASE_DIR)/turnout-* $(RELEASE_DIR)/SHA256SUMS
	CGO_ENABLED=0 GOOS=linux GOARCH=amd64 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(RELEASE_DIR)/turnout-$(VERSION)-linux-amd64 ./cmd/turnout
	CGO_ENABLED=0 GOOS=linux GOARCH=arm64 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(RELEASE_DIR)/turnout-$(VERSION)-linux-arm64 ./cmd/turnout
	CGO_ENABLED=0 GOOS=linux GOARCH=arm GOARM=7 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(RELEASE_DIR)/turnout-$(VERSION)-linux-armv7 ./cmd/turnout
	cd $(RELEASE_DIR) && sha256sum turnout-$(VERSION)-linux-amd64 turnout-$(VERSION)-linux-arm64 turnout-$(VERSION)-linux-armv7 > SHA256SUMS
	$(GO) run ./scripts/releasecheck -version '$(VERSION)' $(RELEASE_DIR)

# The container image (Dockerfile): the binary as `make build` makes it and the stock rules, on
# distroless/static, as $(IMAGE), with docker or else podman. The Dockerfile is checked without
# either by `make deploy-check` (BuildKit's linter; the image's file system run as uid 65532).
IMAGE ?= turnout:$(VERSION)

image:
	@if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then engine=docker; \
	elif command -v podman >/dev/null 2>&1 && podman info >/dev/null 2>&1; then engine=podman; \
	else echo "make image: needs docker with a running engine, or podman; neither works here (docker info / podman info fail). make deploy-check checks the Dockerfile without them." >&2; exit 1; fi; \
	echo "$$engine build -t $(IMAGE) --build-arg VERSION=$(VERSION) ."; \
	$$engine build -t '$(IMAGE)' --build-arg 'VERSION=$(VERSION)' .

# Quickstart: embedded MQTT broker on 127.0.0.1:11883, HTTP input on 127.0.0.1:8080,
# admin (metrics) on 127.0.0.1:9090. Needs nothing but Go.
run: build rules
	$(BIN) run -c examples/quickstart/turnout.yaml

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

# The deployment kit (deploy/, a Go module of its own so that the Kubernetes and BuildKit
# libraries stay out of turnout's go.mod): the Dockerfile linted and its image's file system run,
# the kustomizations rendered, decoded strictly and checked against their configuration (which
# `turnout validate` checks). gofmt is fmt-check's (git ls-files covers deploy/); `go vet ./...`
# at the root does not enter a nested module, so it runs here.
deploy-check:
	cd deploy && $(GO) vet ./... && $(GO) test -count=1 -timeout 10m ./...

vet:
	$(GO) vet ./...
	$(GO) vet -tags otel ./internal/tracing/ ./cmd/turnout/

# The brokers the integration tests talk to: installs what is missing, starts what is stopped,
# enables RabbitMQ's AMQP 1.0 plugin and waits until every broker answers (idempotent).
brokers:
	bash scripts/brokers.sh

# The compilers of the rule SDKs beyond Go (scripts/toolchains.d: one script per language).
toolchains:
	bash scripts/toolchains.sh

# Unit and integration tests, against the real brokers.
test: brokers toolchains fmt-check vet deploy-check
	$(GO) test -race -timeout 20m ./...
	$(GO) test -race -tags otel ./internal/tracing/
	$(GO) test -race -tags otel -run 'Tracing' ./cmd/turnout/

# Benchmarks: the rule call path, the engine, the file output, the spool, tracing, the JSON
# event format's reader and the HTTP input's CPU per event (3 runs: read the medians); figures
# go to docs/benchmarks.md.
bench:
	$(GO) test -run '^$$' -bench . -benchmem -count 1 ./engine/ ./hostabi/ ./transports/file/ ./spool/ ./internal/ce/
	$(GO) test -tags otel -run '^$$' -bench . -benchmem -count 1 ./internal/tracing/
	$(GO) test -run '^$$' -bench BenchmarkInput -benchmem -count 3 ./transports/http/

# End-to-end benchmark through the local brokers (a private mosquitto, RabbitMQ on 127.0.0.1:5672
# with AMQP 1.0, nats-server with JetStream on 127.0.0.1:4222; see scripts/brokers.sh; Kafka is
# kfake in a process of its own): the brokers alone, then turnout at-least-once and best-effort,
# for each pipeline. Figures and definitions: docs/benchmarks.md. Knobs (environment):
# TURNOUT_BENCH_EVENTS (30000), TURNOUT_BENCH_REPEAT (1), TURNOUT_BENCH_PIPELINES (e.g.
# http-nats,nats-kafka), TURNOUT_BENCH_VARIANTS, TURNOUT_BENCH_WINDOW, TURNOUT_BENCH_HTTP_WINDOW.
bench-e2e:
	TURNOUT_BENCH_E2E=1 $(GO) test -count=1 -v -timeout 60m -run '^TestBenchE2E$$' ./reliability/

# Footprint benchmark through the turnout binary (docs/benchmarks.md, "Footprint"): start-up time
# to /readyz with an empty and a filled rule compilation cache, RSS idle and under load (peak and
# steady), for 1, 5 and 20 routes each MQTT -> attrroute (a Go rule) -> MQTT on a private
# mosquitto. Prints one table; asserts nothing. Knobs (environment): TURNOUT_FOOTPRINT_DURATION
# (load, 10s; the recorded figures use 60s), TURNOUT_FOOTPRINT_RATE (events/s over all routes,
# 2000), TURNOUT_FOOTPRINT_ROUTES (1,5,20), TURNOUT_FOOTPRINT_POOL_SIZES (default; e.g.
# default,1), TURNOUT_FOOTPRINT_MEMORY_LIMITS (none; e.g. none,200MiB), TURNOUT_FOOTPRINT_IDLE
# (5s), TURNOUT_FOOTPRINT_GOMAXPROCS (the machine's). It runs build/turnout, built as releases are.
bench-footprint: build
	TURNOUT_BENCH_FOOTPRINT=1 TURNOUT_FOOTPRINT_BINARY=$(abspath $(BIN)) $(GO) test -count=1 -v -timeout 60m -run '^TestBenchFootprint$$' ./reliability/

# The reliability suite in full (docs/reliability.md): every input/output pair through the turnout
# binary while turnout is killed with SIGKILL, the output refuses, and the output's broker
# restarts, on private brokers; the scale-out test (docs/scaling.md): two instances on one
# input per protocol, one killed mid-stream; and the spool's uplink outage (60 s at 2,000
# events/s, turnout killed twice during it). make test runs the short versions.
reliability: brokers
	RELIABILITY=full $(GO) test -count=1 -v -timeout 60m -run '^(TestReliability|TestScaleOut|TestSpoolOutage)$$' ./reliability/

# Every fuzz target in the module, one after another, each for FUZZTIME (make fuzz FUZZTIME=10m).
# The targets are found with `go test -list '^Fuzz'` in each package with tests, so a new one is
# never left out; the first failure stops the run, its crasher written to the package's
# testdata/fuzz/<Target>/. FUZZFLAGS adds flags, e.g. FUZZFLAGS=-parallel=1 for one worker;
# FUZZPKGS narrows the packages (FUZZPKGS=./transports/...). -timeout 0: go test's default
# 10m timeout would kill a run of FUZZTIME=10m. `make test` runs only the seed corpora (as every
# `go test` does), never this.
FUZZTIME  ?= 10s
FUZZFLAGS ?=
FUZZPKGS  ?= ./...
fuzz:
	@for pkg in $$($(GO) list -f '{{if or .TestGoFiles .XTestGoFiles}}{{.ImportPath}}{{end}}' $(FUZZPKGS)); do \
	  list=$$($(GO) test -list '^Fuzz' $$pkg) || exit 1; \
	  for f in $$(echo "$$list" | grep '^Fuzz'); do \
	    echo "fuzz $$pkg $$f $(FUZZTIME)"; \
	    $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) -timeout 0 $(FUZZFLAGS) $$pkg || exit 1; \
	  done; \
	done

clean:
	rm -rf build
