# syntax=docker/dockerfile:1
# Multi-stage build. `planner` reduces the workspace to its dependency recipe (cargo-chef), `build`
# compiles the dependencies from that recipe alone — a cached layer that only a Cargo.lock
# change rebuilds — then the sources, with the `dist` profile (release + fat LTO, stripped;
# benchmarks use `release`). The runtime image is Debian slim, non-root, with the data directory
# a volume and a health check on /health/ready.
ARG RUST_IMAGE=rust:1.95-bookworm

FROM ${RUST_IMAGE} AS chef
RUN cargo install cargo-chef --locked
WORKDIR /src

FROM chef AS planner
COPY Cargo.toml Cargo.lock ./
COPY actors ./actors
COPY load ./load
COPY src ./src
COPY config ./config
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS build
COPY --from=planner /src/recipe.json recipe.json
RUN cargo chef cook --profile dist --locked --recipe-path recipe.json --bin ruvector-streaming
COPY Cargo.toml Cargo.lock ./
COPY actors ./actors
COPY load ./load
COPY src ./src
COPY config ./config
RUN cargo build --profile dist --locked --bin ruvector-streaming

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/ruvector --create-home ruvector
COPY --from=build /src/target/dist/ruvector-streaming /usr/local/bin/ruvector-streaming
COPY config /etc/ruvector
USER 10001
WORKDIR /var/lib/ruvector
# PORT (the platform's) is honoured by the server; production.toml binds 0.0.0.0.
ENV PORT=8080 \
    RUVECTOR_CONFIG=/etc/ruvector/production.toml \
    RUVECTOR__STORAGE__DATA_DIR=/var/lib/ruvector/data \
    RUST_LOG=info
VOLUME ["/var/lib/ruvector/data"]
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
  CMD curl -fsS "http://127.0.0.1:${PORT}/health/ready" || exit 1
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/ruvector-streaming"]
CMD ["serve"]
