# syntax=docker/dockerfile:1
# retryhub images, built from the repository root:
#   docker build --target server -t retryhub-server .
#   docker build --target orders -t retryhub-orders .
# Both are one static binary (CGO_ENABLED=0: the embedded SQLite is pure Go) on distroless
# static, running as a non-root user. The console's built files are committed under
# server/internal/web/static and embedded, so no Node stage is needed.

ARG GO_VERSION=1.26

FROM golang:${GO_VERSION} AS build
WORKDIR /src
ENV CGO_ENABLED=0 GOFLAGS=-trimpath
# The modules first, so a source edit keeps the download layer.
COPY go.work go.work.sum ./
COPY client-sdk/go.mod client-sdk/go.sum client-sdk/
COPY server/go.mod server/go.sum server/
COPY examples/go.mod examples/
RUN go mod download
COPY client-sdk/ client-sdk/
COPY server/ server/
COPY examples/ examples/
ARG VERSION=dev
RUN go build -ldflags "-s -w -X github.com/retryhub/retryhub/server/internal/app.Version=${VERSION}" \
      -o /out/retryhub-server ./server/cmd/retryhub-server && \
    go build -ldflags "-s -w" -o /out/orders ./examples/cmd/orders && \
    mkdir -p /out/data

# The server: the console and the client API on :8080. Without RETRYHUB_DATABASE_DSN it keeps an
# SQLite database under /home/nonroot/data (mount a volume there to keep it).
FROM gcr.io/distroless/static-debian12:nonroot AS server
COPY --from=build /out/retryhub-server /usr/local/bin/retryhub-server
COPY --from=build --chown=65532:65532 /out/data /home/nonroot/data
WORKDIR /home/nonroot
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
  CMD ["/usr/local/bin/retryhub-server", "-healthcheck"]
ENTRYPOINT ["/usr/local/bin/retryhub-server"]

# The example order service (examples/cmd/orders): the order API on :8000, the executor
# endpoint the server sends replays to on :7070. Its group token comes from RETRYHUB_TOKEN.
FROM gcr.io/distroless/static-debian12:nonroot AS orders
COPY --from=build /out/orders /usr/local/bin/orders
EXPOSE 8000 7070
ENTRYPOINT ["/usr/local/bin/orders"]
