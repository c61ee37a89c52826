#!/usr/bin/env bash
# Run the platform on its embedded defaults: SQLite and the image store under
# ./var, kombu's filesystem broker (no Redis), a real Celery worker process,
# and the web app. Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
export CURATION_DATA_DIR="${CURATION_DATA_DIR:-$PWD/var}"
host="${CURATION_HOST:-127.0.0.1}"
port="${CURATION_PORT:-8000}"
.venv/bin/curation db upgrade
mkdir -p "$CURATION_DATA_DIR/log"
# -B embeds the beat scheduler (periodic sweeps) in this one development
# worker; production runs beat as its own service.
.venv/bin/curation worker -Q default,scoring,training --concurrency 2 \
  -B --schedule "$CURATION_DATA_DIR/celerybeat-schedule" \
  >"$CURATION_DATA_DIR/log/worker.log" 2>&1 &
worker_pid=$!
trap 'kill "$worker_pid" 2>/dev/null || true; wait "$worker_pid" 2>/dev/null || true' EXIT INT TERM
echo "worker started (pid $worker_pid, log $CURATION_DATA_DIR/log/worker.log)"
echo "platform running at http://$host:$port/"
.venv/bin/curation web --host "$host" --port "$port"
