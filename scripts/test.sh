#!/usr/bin/env bash
# The whole test suite: lint, types, then pytest (unit, PostgreSQL, Redis,
# real Celery workers, the compose file). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh dev
.venv/bin/ruff check .
.venv/bin/mypy
.venv/bin/python -m pytest -q -n 2 --dist loadfile "$@"
