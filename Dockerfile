# syntax=docker/dockerfile:1
#
# One image for every process of the platform: the web app, the Celery worker,
# Celery beat and the one-shot migration (docker-compose.yml picks the command).
#
#   docker build -t landmark-curation .
#   docker run --rm landmark-curation --help
#
# Only the package sources are copied (never .venv/, var/ or a local
# secret_key), so the image holds nothing from the developer's machine.

FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    CURATION_DATA_DIR=/data

# Build from a throw-away folder; `pip install .` puts the packages (and the
# migrations, which curation.migrate finds beside them) into site-packages.
WORKDIR /src
# README.m[d]: copied when present, skipped (not an error) while it is absent.
COPY pyproject.toml README.m[d] ./
COPY curation ./curation
COPY workers ./workers
COPY webui ./webui
COPY datasets ./datasets
COPY migrations ./migrations
RUN pip install . \
    && rm -rf /src

# Non-root user; /data is created here, owned by that user, so a named volume
# mounted on it starts out writable by the app.
RUN groupadd --system --gid 10001 curation \
    && useradd --system --uid 10001 --gid curation --home-dir /home/curation \
       --create-home --shell /usr/sbin/nologin curation \
    && mkdir -p /data \
    && chown curation:curation /data

USER curation
WORKDIR /home/curation
EXPOSE 8000

ENTRYPOINT ["curation"]
CMD ["web", "--host", "0.0.0.0", "--port", "8000"]
