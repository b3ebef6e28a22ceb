# Dockerfile: the bulkhead API server image, and a separate image for the load test.
#
#   docker compose up --build                              (see docker-compose.yml)
#   docker compose --profile loadtest run --rm loadtest    load-test.sh against the stack
#   docker build -t bulkhead:local \
#       --build-arg REVISION="$(git rev-parse HEAD)" --build-arg CREATED="$(date -u +%FT%TZ)" .
#
# Three stages. All install their Debian packages with scripts/deps.sh, the script `make` uses,
# so the images and a developer's machine cannot drift apart:
#   build     the "build" set (compiler, -dev packages); builds and strips build/bulkhead;
#   loadtest  the "loadtest" set (hey, wrk, curl) and load-test.sh, nothing of the server
#             (`--target loadtest`);
#   runtime   the "runtime" set (the shared libraries, curl for HEALTHCHECK on /livez) and the
#             stripped binary: no compiler, no load generator. The last stage, so the default
#             target.
# Both images run as the numeric user 10001 (Kubernetes runAsNonRoot needs a number to check).

ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown

# ---- build ------------------------------------------------------------------------------------
FROM debian:bookworm AS build
WORKDIR /src
COPY scripts/deps.sh scripts/deps.sh
RUN scripts/deps.sh build && rm -rf /var/lib/apt/lists/*
COPY Makefile ./
COPY src src
COPY config config
COPY web web
# `make` checks the build set again (already installed: nothing to do) and builds build/bulkhead;
# the image gets it without symbols (about a third of the size; debug with the build stage).
RUN make -j"$(nproc)" && strip --strip-unneeded build/bulkhead && build/bulkhead --version

# ---- loadtest ---------------------------------------------------------------------------------
FROM debian:bookworm-slim AS loadtest
COPY scripts/deps.sh /usr/local/lib/bulkhead/deps.sh
RUN /usr/local/lib/bulkhead/deps.sh loadtest && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY load-test.sh /app/load-test.sh
USER 10001:10001
# The compose stack's api service; override with -e BASE_URL=...
ENV BASE_URL=http://api:8080
ENTRYPOINT ["bash", "/app/load-test.sh"]

# ---- runtime (default target) -----------------------------------------------------------------
FROM debian:bookworm-slim AS runtime
ARG VERSION
ARG REVISION
ARG CREATED
LABEL org.opencontainers.image.title="bulkhead" \
      org.opencontainers.image.description="Multi-tenant HTTP API server that isolates tenant tiers: rate limits, worker pools, PostgreSQL pools and circuit breakers per tier" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.base.name="docker.io/library/debian:bookworm-slim"
COPY scripts/deps.sh /usr/local/lib/bulkhead/deps.sh
RUN /usr/local/lib/bulkhead/deps.sh runtime && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 bulkhead \
    && useradd --system --uid 10001 --gid 10001 --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin bulkhead \
    && mkdir -p /app && chown 10001:10001 /app
WORKDIR /app
COPY --from=build /src/build/bulkhead /usr/local/bin/bulkhead
# The tier table the binary has built in, as a starting point for TIERS_FILE.
COPY config/tiers.json /app/config/tiers.json
COPY init-db.sql /app/
USER 10001:10001
ENV API_PORT=8080 \
    API_BIND=0.0.0.0
EXPOSE 8080
# Liveness, not readiness: a database outage must not mark every API container unhealthy
# (an orchestrator would restart processes that are fine). /readyz is for load balancers and
# Kubernetes readiness probes; /health is the seed's database check.
HEALTHCHECK --interval=5s --timeout=3s --start-period=20s --retries=3 \
    CMD curl -fsS "http://127.0.0.1:${API_PORT:-8080}/livez" >/dev/null || exit 1
# bulkhead handles SIGTERM itself (graceful drain, see SHUTDOWN_TIMEOUT_MS) and SIGHUP (reload).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/bulkhead"]
CMD ["serve"]
