#!/usr/bin/env bash
# Install (and optionally start) a real Label Studio server for the integration
# tests. Label Studio pins its own dependencies, which conflict with ours, so it
# lives in its own venv under .cache/label-studio-venv (git-ignored).
#
# Usage:
#   scripts/labelstudio.sh install        # create/refresh the venv (idempotent)
#   scripts/labelstudio.sh sdk            # the client (label-studio-sdk) into .venv
#   scripts/labelstudio.sh start [PORT]   # run a server in the foreground
#
# The integration test (tests/integration/test_labelstudio.py) starts its own
# server from this venv; it only needs `install` to have run.
set -euo pipefail
cd "$(dirname "$0")/.."
LS_VERSION="${LABEL_STUDIO_VERSION:-1.23.2}"
venv="${CURATION_LABELSTUDIO_VENV:-.cache/label-studio-venv}"
pick_python() {
  for candidate in python3.12 python3.11 python3; do
    if "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 10))' >/dev/null 2>&1; then
      echo "$candidate"
      return 0
    fi
  done
  echo "no python >= 3.10 found" >&2
  return 1
}
python_bin="${PYTHON:-$(pick_python)}"

install() {
  stamp="$venv/.installed-label-studio-$LS_VERSION"
  if [ -f "$stamp" ]; then
    return 0
  fi
  mkdir -p "$(dirname "$venv")"
  [ -x "$venv/bin/python" ] || "$python_bin" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --upgrade pip
  "$venv/bin/python" -m pip install --quiet "label-studio==$LS_VERSION"
  touch "$stamp"
}

# The client goes into the project's own .venv, beside numpy 2.4: the SDK
# pulls in opencv-python-headless, which pins numpy below 2.3, but the client
# never imports OpenCV; the numpy the project was installed with is put back.
sdk() {
  stamp=".venv/.installed-label-studio-sdk"
  [ -f "$stamp" ] && return 0
  numpy_version="$(.venv/bin/python -c 'import numpy; print(numpy.__version__)')"
  .venv/bin/python -m pip install --quiet "label-studio-sdk>=2.1.2,<2.2"
  # pip warns that opencv-python-headless wants an older numpy: expected.
  .venv/bin/python -m pip install --quiet "numpy==$numpy_version"
  .venv/bin/python -c "import numpy, label_studio_sdk; assert numpy.__version__ == '$numpy_version'"
  touch "$stamp"
}

case "${1:-install}" in
  install) install ;;
  sdk) sdk ;;
  start)
    install
    port="${2:-8089}"
    data="${LABEL_STUDIO_BASE_DATA_DIR:-.cache/label-studio-data}"
    mkdir -p "$data"
    export LABEL_STUDIO_BASE_DATA_DIR="$data" LATEST_VERSION_CHECK=false
    exec "$venv/bin/label-studio" start --no-browser --internal-host 127.0.0.1 \
      --port "$port" --enable-legacy-api-token
    ;;
  *) echo "usage: $0 install|sdk|start [PORT]" >&2; exit 2 ;;
esac
