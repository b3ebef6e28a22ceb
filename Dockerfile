# Dockerfile: the bulkhead API server image.
#
#   docker compose up --build            (see docker-compose.yml)
#   docker compose exec api bash ./load-test.sh
#
# Two stages. Both install their Debian packages with scripts/deps.sh, the script `make` uses,
# so the image and a developer's machine cannot drift apart: the "build" set (compiler and -dev
# packages) to build, the "runtime" set (the shared libraries, curl for the health check, wrk and
# hey for load-test.sh) to run. The server runs as an unprivileged user.

# ---- build ------------------------------------------------------------------------------------
FROM debian:bookworm AS build
WORKDIR /src
COPY scripts/deps.sh scripts/deps.sh
RUN scripts/deps.sh build && rm -rf /var/lib/apt/lists/*
COPY Makefile ./
COPY src src
COPY config config
COPY web web
# `make` checks the build set again (already installed: nothing to do) and builds build/bulkhead.
RUN make -j"$(nproc)" && build/bulkhead --version

# ---- run --------------------------------------------------------------------------------------
FROM debian:bookworm-slim
COPY scripts/deps.sh /usr/local/lib/bulkhead/deps.sh
RUN /usr/local/lib/bulkhead/deps.sh runtime && rm -rf /var/lib/apt/lists/*
RUN useradd --system --uid 10001 --user-group --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin bulkhead \
    && mkdir -p /app && chown bulkhead:bulkhead /app
WORKDIR /app
COPY --from=build /src/build/bulkhead /usr/local/bin/bulkhead
# The tier table the binary has built in, as a starting point for TIERS_FILE.
COPY config/tiers.json /app/config/tiers.json
# The seed's flow: `docker compose exec api bash ./load-test.sh` runs from /app.
COPY --chown=bulkhead:bulkhead init-db.sql load-test.sh /app/
USER bulkhead
ENV API_PORT=8080 \
    API_BIND=0.0.0.0
EXPOSE 8080
HEALTHCHECK --interval=5s --timeout=3s --start-period=20s --retries=3 \
    CMD curl -fsS "http://127.0.0.1:${API_PORT:-8080}/health" >/dev/null || exit 1
# bulkhead handles SIGTERM itself (graceful drain, see SHUTDOWN_TIMEOUT_MS) and SIGHUP (reload).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/bulkhead"]
CMD ["serve"]
