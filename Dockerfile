# syntax=docker/dockerfile:1
# rtmp-hls container image: a Rust build stage, then a small Debian runtime running the
# binary as an unprivileged user. Build with `docker build -t rtmp-hls .` (BuildKit: the
# cargo registry and target directory are cache mounts, so rebuilds only recompile what
# changed). See deploy/README.md.

# The builder and the runtime must share a glibc: both are Debian 12 (bookworm).
ARG RUST_VERSION=1.95
FROM rust:${RUST_VERSION}-bookworm AS builder

# librdkafka (vendored by rdkafka-sys, built with its mklove ./configure and make) needs a C
# and C++ compiler, make, python3 (version and linker-script helpers) and the zlib headers;
# the rust image has most of them already, this pins the list (not their versions: bookworm's
# point releases only bring fixes).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends g++ make python3 pkg-config zlib1g-dev \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /src
# Only what the build reads: the workspace manifests and every member's sources.
COPY Cargo.toml Cargo.lock rtmp-hls.example.toml ./
COPY src/ src/
COPY rtmp/ rtmp/
COPY auth/ auth/
COPY packager/ packager/
COPY store/ store/
COPY ingest/ ingest/
COPY http/ http/
COPY tls/ tls/
COPY threads/ threads/
COPY testkit/ testkit/
COPY benches/ benches/
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked -p rtmp-hls \
    && install -D -m 0755 target/release/rtmp-hls /out/rtmp-hls

# The binary links only libc, libm, libgcc_s and libz, all part of the slim image.
FROM debian:bookworm-slim AS runtime

LABEL org.opencontainers.image.title="rtmp-hls" \
      org.opencontainers.image.description="RTMP ingest to in-memory HLS: a native replacement for Nginx-RTMP" \
      org.opencontainers.image.licenses="MIT OR Apache-2.0"

RUN groupadd --system --gid 10001 rtmp-hls \
    && useradd --system --uid 10001 --gid rtmp-hls --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin rtmp-hls \
    && install -d -m 0700 -o 10001 -g 10001 /data

COPY --from=builder /out/rtmp-hls /usr/local/bin/rtmp-hls

# The embedded key store and the persisted sequence numbers live in /data (with MongoDB keys,
# only the sequence numbers). Listen on every interface of the container.
ENV RTMP_HLS_RTMP_ADDR=0.0.0.0:1935 \
    RTMP_HLS_HTTP_ADDR=0.0.0.0:8080 \
    RTMP_HLS_DATA_DIR=/data
VOLUME ["/data"]
WORKDIR /data
EXPOSE 1935 8080

USER 10001:10001
# GET /healthz on RTMP_HLS_HTTP_ADDR (the image has no curl).
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
    CMD ["rtmp-hls", "healthcheck"]
# SIGTERM ends live streams cleanly (last segment, EXT-X-ENDLIST, stop events); give it time:
# docker stop -t 30, or stop_grace_period in compose.
STOPSIGNAL SIGTERM
ENTRYPOINT ["rtmp-hls"]
