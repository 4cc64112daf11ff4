# syntax=docker/dockerfile:1
# turnout's container image: the static binary, the stock rules and a default configuration on
# distroless/static (CA certificates, tzdata, /etc/passwd with the nonroot user 65532, no shell).
#
#   make image                          # docker or podman; IMAGE=turnout:$(VERSION) by default
#   docker run --rm -p 8080:8080 -p 1883:1883 -p 9090:9090 turnout:dev
#
# Paths in the image:
#   /turnout                              the binary (ENTRYPOINT)
#   /usr/share/turnout/rules/NAME.wasm    the stock rules (filters/rules): attrroute, passthrough
#   /etc/turnout/turnout.yaml             the default configuration (deploy/image/turnout.yaml);
#                                         mount your own over /etc/turnout
#   /var/lib/turnout                      data_dir (rule store, compiled-rule cache, spools,
#                                         broker persistence): a VOLUME owned by 65532
#
# deploy/dockerfile_test.go checks this file with BuildKit's linter (the checks of
# `docker build --check`) and runs the binary from the file system the final stage lays out.

ARG GO_VERSION=1.26

# The builder runs on the build machine's platform and cross-compiles for the target's.
FROM --platform=$BUILDPLATFORM golang:${GO_VERSION} AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
ARG VERSION=dev
ARG TARGETOS=linux
ARG TARGETARCH
ARG TARGETVARIANT
# `make build` and `make rules`, as on a workstation: the binary static (CGO_ENABLED=0),
# -trimpath, stamped with VERSION, with the OpenTelemetry exporter (TAGS=otel: the cloud has
# collectors; the device release binaries go without); the rules are wasip1 modules, the same
# for every platform.
# build/image-data becomes the data volume's mount point, owned by the nonroot user.
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    GOOS="$TARGETOS" GOARCH="$TARGETARCH" GOARM="${TARGETVARIANT#v}" make build VERSION="$VERSION" TAGS=otel \
    && make rules \
    && mkdir -p build/image-data

FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION=dev
LABEL org.opencontainers.image.title="turnout" \
      org.opencontainers.image.description="CloudEvents router: MQTT, AMQP 1.0, Kafka, NATS JetStream and HTTP, with rules in WebAssembly" \
      org.opencontainers.image.version="${VERSION}"
COPY --from=build /src/build/turnout /turnout
COPY --from=build /src/build/rules/ /usr/share/turnout/rules/
COPY deploy/image/turnout.yaml /etc/turnout/turnout.yaml
COPY --from=build --chown=65532:65532 /src/build/image-data/ /var/lib/turnout/
# Numeric, so that Kubernetes' runAsNonRoot can verify it.
USER 65532:65532
VOLUME ["/var/lib/turnout"]
# HTTP input, embedded MQTT broker, admin listener (/metrics, /healthz, /readyz, rules API).
EXPOSE 8080 1883 9090
# No HEALTHCHECK: orchestrators probe /healthz and /readyz on the admin port themselves, and
# distroless has no shell or client to run one with.
ENTRYPOINT ["/turnout"]
CMD ["run", "-c", "/etc/turnout/turnout.yaml"]
