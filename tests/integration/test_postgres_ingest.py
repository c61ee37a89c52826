"""Ingestion on the real PostgreSQL, including two writers racing on the same files."""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import func, select

from curation.ingest.folders import crawl_items, labelled_tree_items
from curation.ingest.records import IngestSummary
from curation.ingest.runner import IngestRunner
from curation.models import Image, ImageSource, Label, NearDuplicateGroup
from curation.runtime import Runtime, build_runtime
from tests.factories import image_row, jpeg, near_copy

pytestmark = pytest.mark.postgres


def _write(folder: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def _count(runtime: Runtime, model: object) -> int:
    with runtime.factory() as session:
        return session.scalar(select(func.count()).select_from(model)) or 0  # type: ignore[arg-type]


def test_labelled_ingest_on_postgres(pg_runtime: Runtime, tmp_path: Path) -> None:
    root = tmp_path / "set"
    _write(
        root,
        {
            "train/Gyeongbokgung/a.jpg": jpeg(1),
            "train/Gyeongbokgung/a-copy.jpg": jpeg(1),
            "test/Gyeongbokgung/b.jpg": near_copy(1),
            "train/경복궁 별관/c.jpg": jpeg(2),
            "train/Namsan/bad.jpg": b"not an image",
        },
    )
    summary = IngestSummary()
    runner = IngestRunner(pg_runtime.factory, pg_runtime.store, pg_runtime.settings)
    runner.run(
        labelled_tree_items(root, dataset_name="set", summary=summary),
        actor="test",
        action="t",
        summary=summary,
        parallel=False,
    )
    assert (summary.files, summary.ingested, summary.exact_duplicates) == (5, 3, 1)
    assert summary.near_duplicates == 1
    assert [r["path"] for r in summary.rejected] == ["train/Namsan/bad.jpg"]
    assert _count(pg_runtime, Image) == 3
    assert _count(pg_runtime, ImageSource) == 4
    assert _count(pg_runtime, NearDuplicateGroup) == 2
    assert _count(pg_runtime, Label) == 3

    again = IngestSummary()
    runner.run(
        labelled_tree_items(root, dataset_name="set", summary=again),
        actor="test",
        action="t",
        summary=again,
        parallel=False,
    )
    assert again.already_present == 4 and again.ingested == 0
    assert _count(pg_runtime, ImageSource) == 4 and _count(pg_runtime, Label) == 3


def test_two_writers_racing_store_each_image_once(pg_runtime: Runtime, tmp_path: Path) -> None:
    root = tmp_path / "crawl"
    _write(root, {f"img{i:02}.jpg": jpeg(100 + i) for i in range(24)})
    settings = replace(pg_runtime.settings, ingest_commit_every=1)
    runtimes = [build_runtime(settings) for _ in range(2)]
    summaries = [IngestSummary() for _ in runtimes]
    errors: list[BaseException] = []

    def ingest(runtime: Runtime, summary: IngestSummary, crawler: str) -> None:
        try:
            runner = IngestRunner(runtime.factory, runtime.store, runtime.settings)
            items = crawl_items(root, crawler=crawler, manifest=None, summary=summary)
            runner.run(items, actor="test", action="t", summary=summary, parallel=False)
        except BaseException as error:  # surfaced below
            errors.append(error)

    threads = [
        threading.Thread(target=ingest, args=(rt, sm, f"bot{i}"))
        for i, (rt, sm) in enumerate(zip(runtimes, summaries, strict=True))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for runtime in runtimes:
        runtime.dispose()
    assert errors == []
    assert all(not s.rejected for s in summaries)
    assert sum(s.ingested for s in summaries) == 24
    assert _count(pg_runtime, Image) == 24
    assert _count(pg_runtime, ImageSource) == 48
    assert len(list(pg_runtime.store.keys())) == 24


def test_index_refresh_sees_a_smaller_id_committed_late(pg_runtime: Runtime) -> None:
    """A writer that took id N but committed after id N+1 was seen is still indexed."""
    from curation.neardup import NearDuplicateIndex

    with pg_runtime.factory() as slow:
        slow.begin()
        late = image_row(slow, 1, phash_unsigned=1)  # takes the smaller id, not yet committed
        with pg_runtime.factory() as fast, fast.begin():
            image_row(fast, 2, phash_unsigned=2)
        index = NearDuplicateIndex()
        with pg_runtime.factory() as reader:
            index.refresh(reader)
        assert len(index) == 1
        slow.commit()
    with pg_runtime.factory() as reader:
        index.refresh(reader)
    assert len(index) == 2
    assert index.matching_image_ids(1, max_distance=0) == [late.id]
