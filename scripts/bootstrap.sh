#!/usr/bin/env bash
# Create .venv (if needed) and install the project into it.
# Usage: scripts/bootstrap.sh [extras], e.g. scripts/bootstrap.sh dev
set -euo pipefail
cd "$(dirname "$0")/.."
python_bin="${PYTHON:-$(command -v python3.11 || command -v python3)}"
if [ ! -x .venv/bin/python ]; then
  "$python_bin" -m venv .venv
fi
extras="${1:-}"
target="."
[ -n "$extras" ] && target=".[$extras]"
stamp=".venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)-${extras:-base}"
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e "$target"
  touch "$stamp"
fi
