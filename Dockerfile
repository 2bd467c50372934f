# syntax=docker/dockerfile:1
# Multi-stage build: compile in the Rust image, run as a non-root user in a slim Debian image.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY actors ./actors
COPY load ./load
COPY src ./src
COPY config ./config
RUN cargo build --release --locked --bin ruvector-streaming

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/ruvector --create-home ruvector
COPY --from=build /src/target/release/ruvector-streaming /usr/local/bin/ruvector-streaming
COPY config /etc/ruvector
USER 10001
WORKDIR /var/lib/ruvector
ENV PORT=8080 \
    RUVECTOR__STORAGE__DATA_DIR=/var/lib/ruvector/data \
    RUST_LOG=info
VOLUME ["/var/lib/ruvector/data"]
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
  CMD curl -fsS "http://127.0.0.1:${PORT}/health/ready" || exit 1
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/ruvector-streaming"]
CMD ["serve"]
