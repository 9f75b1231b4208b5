# emgd: the EMG analysis daemon. Build: docker build -t emgd .   Run: docker run --env-file .env emgd
# Two stages: dependencies are installed into a virtualenv in the build stage; the final image gets
# only that virtualenv, the migrations and a non-root user (no pip cache, no build tools, no compiler).
ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/emgd
# Dependencies first, so code edits do not reinstall numpy/scipy/ezc3d (all ship binary wheels).
COPY pyproject.toml README.md ./
COPY daemon ./daemon
COPY emg_core ./emg_core
# the migrations go into the package (pyproject.toml maps them), so the build needs them too
COPY supabase/migrations ./supabase/migrations
RUN /opt/emgd/bin/pip install --no-cache-dir . \
    && /opt/emgd/bin/emgd --help > /dev/null

FROM python:${PYTHON_VERSION}-slim-bookworm AS runtime
LABEL org.opencontainers.image.title="emgd" \
      org.opencontainers.image.description="Event-driven daemon analysing EMG recordings uploaded to Supabase Storage"
ENV PATH=/opt/emgd/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    EMGD_MIGRATIONS_DIR=/app/supabase/migrations \
    EMGD_STORAGE_BACKEND=supabase \
    EMGD_HEALTH_HOST=0.0.0.0 \
    EMGD_HEALTH_PORT=8080 \
    EMGD_LOG_FORMAT=json
RUN groupadd --system --gid 10001 emgd \
    && useradd --system --uid 10001 --gid emgd --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin emgd \
    && mkdir -p /app/.emgd \
    && chown emgd:emgd /app/.emgd
COPY --from=build /opt/emgd /opt/emgd
COPY supabase/migrations /app/supabase/migrations
WORKDIR /app
USER 10001:10001
EXPOSE 8080
# SIGTERM starts the drain (EMGD_SHUTDOWN_GRACE, default 20 s); give `docker stop -t` more than that.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 CMD ["emgd", "check"]
ENTRYPOINT ["emgd"]
CMD ["run"]
