# syntax=docker/dockerfile:1
#
# The flotilla binary: the CLI and the four services (flotilla planner,
# executor, monitor, notifier). compose.yaml runs it against Apache Kafka.
#
#   docker build -t flotilla .
#   docker run --rm flotilla --help

FROM golang:1.26 AS build
WORKDIR /src
# Modules first, so that a change to the code does not download them again.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/flotilla ./cmd/flotilla

# debian-slim rather than distroless: compose's one-shot `fleet` service
# needs a shell to register several clusters.
FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --home-dir /var/lib/flotilla flotilla \
 && mkdir -p /var/lib/flotilla/sim \
 && chown -R flotilla /var/lib/flotilla
COPY --from=build /out/flotilla /usr/local/bin/flotilla
USER flotilla
WORKDIR /var/lib/flotilla
ENTRYPOINT ["flotilla"]
CMD ["--help"]
