"""Over-long provenance is refused per file, on PostgreSQL too, instead of aborting the run."""

from __future__ import annotations

from pathlib import Path

import pytest

from curation.ingest.folders import crawl_items
from curation.ingest.records import IngestSummary
from curation.ingest.runner import IngestRunner
from curation.runtime import Runtime
from tests.factories import jpeg


def _ingest_with_long_crawler(runtime: Runtime, folder: Path) -> IngestSummary:
    folder.mkdir()
    (folder / "ok.jpg").write_bytes(jpeg(1))
    summary = IngestSummary()
    runner = IngestRunner(runtime.factory, runtime.store, runtime.settings)
    items = crawl_items(folder, crawler="c" * 101, manifest=None, summary=summary)
    return runner.run(items, actor="t", action="t", summary=summary, parallel=False)


def test_long_field_rejected_on_sqlite(runtime: Runtime, tmp_path: Path) -> None:
    summary = _ingest_with_long_crawler(runtime, tmp_path / "c")
    assert summary.rejected == [{"path": "ok.jpg", "reason": "crawler longer than 100 characters"}]
    assert list(runtime.store.keys()) == []


@pytest.mark.postgres
def test_long_field_rejected_on_postgres(pg_runtime: Runtime, tmp_path: Path) -> None:
    summary = _ingest_with_long_crawler(pg_runtime, tmp_path / "c")
    assert summary.rejected == [{"path": "ok.jpg", "reason": "crawler longer than 100 characters"}]
    assert list(pg_runtime.store.keys()) == []
