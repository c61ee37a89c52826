"""Ingestion of the real photos under ../shared/data (read in place, never copied).

Skipped where the folder is absent (a fresh clone); CI always has it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import func, select

from curation.exceptions import RejectedInput
from curation.ingest.folders import crawl_items, labelled_tree_items
from curation.ingest.records import IngestSummary
from curation.models import Image, Label, LandmarkClass
from curation.runtime import Runtime, build_runtime
from curation.settings import Settings
from curation.taxonomy import find_class
from curation.validation import sniff_format
from tests.conftest import shared_data
from tests.curation.helpers import counts, run_items, stored_files

pytestmark = [pytest.mark.shared_data, pytest.mark.slow]

WONDERS = [
    "Chichen Itza",
    "Christ The Redeemer Statue",
    "Machu Picchu",
    "Petra",
    "Taj Mahal",
    "The Great Wall Of China",
    "The Roman Colosseum",
]
EXTENSION_FORMATS = {
    ".jpg": "jpeg",
    ".jpeg": "jpeg",
    ".png": "png",
    ".webp": "webp",
    ".gif": "gif",
    ".avif": "avif",
}


@pytest.fixture
def fast_runtime(settings: Settings) -> Iterator[Runtime]:
    runtime = build_runtime(replace(settings, ingest_workers=2))
    yield runtime
    runtime.dispose()


def _labelled(runtime: Runtime, root: Path) -> IngestSummary:
    summary = IngestSummary()
    items = labelled_tree_items(root, dataset_name="wonders7", summary=summary)
    return run_items(runtime, items, summary, parallel=True)


def test_wonders7_as_a_labelled_tree(fast_runtime: Runtime) -> None:
    root = shared_data("wonders7")
    summary = _labelled(fast_runtime, root)
    assert summary.files == 356
    assert summary.exact_duplicates == 2
    assert summary.rejected == []
    assert summary.label_conflicts == []
    assert summary.ingested == 354
    assert summary.labels_added == 354
    assert sorted(summary.classes_created) == sorted(n.lower().replace(" ", "-") for n in WONDERS)
    with fast_runtime.factory() as session:
        assert sorted(session.scalars(select(LandmarkClass.display_name))) == WONDERS
        assert session.scalar(select(func.count()).select_from(Image)) == 354
        assert session.scalar(select(func.count()).select_from(Label)) == 354
        # The crawl13 spelling of a class finds the wonders7 one.
        colosseum = find_class(session, "the_roman_colosseum")
        assert colosseum is not None and colosseum.display_name == "The Roman Colosseum"
    assert len(stored_files(fast_runtime.store)) == 354

    before = counts(fast_runtime.factory)
    again = _labelled(fast_runtime, root)
    assert again.already_present == 356
    assert (again.ingested, again.exact_duplicates, again.labels_added) == (0, 0, 0)
    assert again.rejected == [] and again.classes_created == []
    assert counts(fast_runtime.factory) == before
    assert len(stored_files(fast_runtime.store)) == 354


def _lying_files(root: Path) -> list[tuple[Path, str]]:
    lying = []
    for path in sorted(root.rglob("*")):
        if not path.is_file():
            continue
        try:
            actual = sniff_format(path.read_bytes()[:64])
        except RejectedInput:
            continue
        claimed = EXTENSION_FORMATS.get(path.suffix.lower())
        if claimed != actual:
            lying.append((path, actual))
    return lying


def test_crawl13_as_a_crawl(fast_runtime: Runtime) -> None:
    root = shared_data("crawl13")
    summary = IngestSummary()
    items = crawl_items(root, crawler="image-search", manifest=None, summary=summary)
    run_items(fast_runtime, items, summary, parallel=True)
    assert summary.files == 1025
    assert summary.rejected == []
    assert summary.ingested + summary.exact_duplicates == 1025
    with fast_runtime.factory() as session:
        assert session.scalar(select(func.count()).select_from(Image)) == summary.ingested
        formats = set(session.scalars(select(Image.format).distinct()))
        assert {"jpeg", "png", "webp"} <= formats
        lying = _lying_files(root)
        assert len(lying) >= 1
        for path, actual in lying[:25]:
            sha = hashlib.sha256(path.read_bytes()).hexdigest()
            image = session.scalars(select(Image).where(Image.sha256 == sha)).one()
            assert image.format == actual, path
            assert image.format != EXTENSION_FORMATS.get(path.suffix.lower())
    assert len(stored_files(fast_runtime.store)) == summary.ingested
