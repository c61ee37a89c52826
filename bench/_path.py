"""Imported first by every benchmark script: this folder goes to the end of the import path.

Python puts a script's folder first on ``sys.path``, and the issue names one
benchmark ``bench/queue.py``: without this, ``import queue`` anywhere (psycopg,
concurrent.futures) would load that script instead of the standard library.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE] + [str(HERE)]
sys.modules.pop("queue", None)  # in case something cached this folder's queue.py already
