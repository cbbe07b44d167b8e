# Build: a full Rust toolchain. Runtime: slim Debian with CA roots for upstream TLS.
# Pinned: the toolchain the project is built and tested with.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock rustfmt.toml ./
COPY vendor ./vendor
COPY src ./src
COPY migrations ./migrations
# Declared bench targets must exist for cargo to read the manifest.
COPY benches ./benches
RUN cargo build --release --locked --bin apiproxy

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* && useradd --system --uid 999 --home /app apiproxy
WORKDIR /app
# The SQLite database and a generated SECRET_KEY live here: mount a volume.
RUN mkdir -p /app/data && chown apiproxy /app/data
VOLUME /app/data
COPY --from=build /src/target/release/apiproxy /usr/local/bin/apiproxy
COPY conf ./conf
USER apiproxy
ENV APIPROXY_LISTEN=0.0.0.0:8000 APIPROXY_ADMIN_LISTEN=0.0.0.0:8001
EXPOSE 8000 8001
# The binary probes its own proxy port (no HTTP client in the image), wherever APIPROXY_LISTEN puts it.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 CMD ["apiproxy", "health"]
ENTRYPOINT ["apiproxy"]
