"""Imported first by every benchmark script: this folder goes to the end of the import path.

Python puts a script's folder first on ``sys.path``, and the issues name the
benchmarks ``bench/queue.py`` and ``bench/datasets.py``: without this,
``import queue`` anywhere (psycopg, concurrent.futures) would load a script
instead of the standard library, and ``import datasets`` a script instead of
the project's package. So the repository root goes first and this folder last.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
others = [p for p in sys.path if Path(p or ".").resolve() not in (HERE, ROOT)]
sys.path[:] = [str(ROOT), *others, str(HERE)]
for name in ("queue", "datasets"):  # in case this folder's script was cached already
    module = sys.modules.get(name)
    if module is not None and Path(getattr(module, "__file__", "") or "").parent == HERE:
        del sys.modules[name]
