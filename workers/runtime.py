"""One runtime per worker process, built lazily on the first task (not at import)."""

from __future__ import annotations

from functools import cache

from curation.runtime import Runtime, build_runtime


@cache
def worker_runtime() -> Runtime:
    return build_runtime()
