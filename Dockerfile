# sluice: HTTP ingest -> RabbitMQ -> pooled workers -> Postgres.
#
#   docker build -t sluice:local .
#   docker run --rm sluice:local --help
#
# One image serves every role; pick it with the command (`serve`, `api`,
# `worker`, ...). See docker-compose.yml.

############################ builder ##########################################
# rust:1 tracks the latest stable toolchain (Cargo.toml needs rust-version 1.88+).
FROM rust:1-bookworm AS builder

WORKDIR /build

# Compile-time-checked sqlx queries (if any are added) must never try to reach a
# database during `docker build`; they then need a committed `.sqlx/` directory
# (`cargo sqlx prepare`) copied in below next to `src`.
ENV SQLX_OFFLINE=true \
    CARGO_TERM_COLOR=never

# 1) Dependency cache: build all dependencies against a dummy crate. This layer
#    is only invalidated when Cargo.toml or Cargo.lock change.
#    The workspace's other members (examples/orders, crates/bench, crates/harness)
#    only need their manifests and empty targets for cargo to load the workspace;
#    they are not built.
COPY Cargo.toml Cargo.lock ./
COPY examples/orders/Cargo.toml ./examples/orders/
COPY crates/bench/Cargo.toml ./crates/bench/
COPY crates/harness/Cargo.toml ./crates/harness/
RUN mkdir -p src examples/orders/src crates/bench/src crates/harness/src/bin \
 && echo 'fn main() {}' > src/main.rs \
 && : > src/lib.rs \
 && echo 'fn main() {}' > examples/orders/src/main.rs \
 && : > examples/orders/src/lib.rs \
 && echo 'fn main() {}' > crates/bench/src/main.rs \
 && echo 'fn main() {}' > crates/harness/src/bin/sluice-fault-node.rs \
 && : > crates/harness/src/lib.rs \
 && cargo build --release --locked -p sluice --bin sluice \
 && rm -rf src \
           target/release/sluice target/release/sluice.d target/release/libsluice.* \
           target/release/deps/sluice-* target/release/deps/libsluice-* \
           target/release/.fingerprint/sluice-*

# 2) The real build. src/ uses include_str! on schemas/ and config/default.toml
#    and sqlx::migrate!("./migrations"), so all of these must be present.
COPY src ./src
COPY migrations ./migrations
COPY schemas ./schemas
COPY config ./config
RUN cargo build --release --locked -p sluice --bin sluice \
 && cp target/release/sluice /usr/local/bin/sluice

############################ runtime ##########################################
FROM debian:bookworm-slim AS runtime

# ca-certificates: TLS to brokers/databases/webhooks (rustls reads the system
# trust store). Nothing else: no shell tools such as curl are installed.
# Unpinned on purpose so rebuilds pick up Debian security updates.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 sluice \
 && useradd --system --uid 10001 --gid sluice --no-create-home \
            --home-dir /nonexistent --shell /usr/sbin/nologin sluice

COPY --from=builder /usr/local/bin/sluice /usr/local/bin/sluice

WORKDIR /app
# Only the production layer: config/test.toml turns the callback SSRF guard off, and
# development.toml is for a checkout. The defaults are compiled into the binary.
COPY config/production.toml /app/config/production.toml

ENV SLUICE_ENV=production
EXPOSE 8080

# Numeric UID so orchestrators can verify runAsNonRoot.
USER 10001:10001

# Every role serves /healthz, /readyz and /metrics on 8080 (workers only those);
# docker-compose.yml probes them with the binary's own `sluice healthcheck`
# (there is no curl in this image).
ENTRYPOINT ["sluice"]
CMD ["serve"]
