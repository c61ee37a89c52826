"""Leak checks: duplicates across splits in folders and in platform versions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from curation.cli import main as cli
from curation.ingest.folders import labelled_tree_items
from curation.ingest.records import IngestSummary
from curation.ingest.runner import IngestRunner
from curation.models import Split
from datasets.leaks import check_folder, check_version, cross_split_pairs, split_of_path
from datasets.versions import load_manifest, snapshot
from tests.conftest import shared_data
from tests.factories import jpeg, near_copy

LIMITS = {"max_bytes": 10_000_000, "max_pixels": 50_000_000}


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


@pytest.mark.parametrize(
    ("path", "split"),
    [
        ("train/gyeongbokgung/a.jpg", Split.TRAIN),
        ("Validation/x/b.png", Split.VALIDATION),
        ("arrabida/test_12.jpg", Split.TEST),
        ("arrabida/val_3.jpg", Split.VALIDATION),
        ("arrabida/photo.jpg", None),
        ("testimony/photo.jpg", None),
    ],
)
def test_the_split_is_read_from_directory_or_file_name(path: str, split) -> None:
    assert split_of_path(path) == split


def test_pairs_are_found_only_across_splits_within_the_distance() -> None:
    hashes = np.array([0b0000, 0b0001, 0b0000, 0b1111_0000], dtype=np.uint64)
    splits = np.array([Split.TRAIN, Split.TEST, Split.TRAIN, Split.TEST], dtype=np.int8)
    pairs = sorted(cross_split_pairs(hashes, splits, max_distance=1))
    assert pairs == [(0, 1, 1), (2, 1, 1)]  # 0 and 2 share a split: not a leak


def test_a_folder_with_a_copy_and_a_near_copy_across_splits_leaks(tmp_path: Path) -> None:
    _write(tmp_path / "train" / "a" / "one.jpg", jpeg(1))
    _write(tmp_path / "train" / "a" / "two.jpg", jpeg(2))
    _write(tmp_path / "test" / "a" / "one-again.jpg", jpeg(1))  # the same bytes
    _write(tmp_path / "validation" / "a" / "two-edited.jpg", near_copy(2))
    _write(tmp_path / "test" / "a" / "three.jpg", jpeg(3))
    _write(tmp_path / "notes.txt", b"not an image")
    report = check_folder(tmp_path, max_distance=10, **LIMITS)
    assert report.items == 5
    kinds = {(leak.a, leak.b): leak.kind for leak in report.leaks}
    assert kinds == {
        ("train/a/one.jpg", "test/a/one-again.jpg"): "exact",
        ("train/a/two.jpg", "validation/a/two-edited.jpg"): "near-duplicate",
    }
    assert report.skipped == [{"path": "notes.txt", "reason": "its path names no split"}]


def test_a_clean_folder_reports_no_leak_and_the_cli_exits_zero(tmp_path, settings, monkeypatch):
    _write(tmp_path / "train" / "a" / "one.jpg", jpeg(1))
    _write(tmp_path / "test" / "a" / "two.jpg", jpeg(2))
    monkeypatch.setenv("CURATION_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("CURATION_DATABASE_URL", settings.database_url)
    result = CliRunner().invoke(cli, ["dataset", "check-leaks", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["clean"] is True
    _write(tmp_path / "test" / "a" / "copy.jpg", jpeg(1))
    result = CliRunner().invoke(cli, ["dataset", "check-leaks", str(tmp_path)])
    assert result.exit_code == 1
    assert "LEAKS: 1 pairs" in result.output


def test_porto5_leaks_across_its_split_and_a_platform_version_of_it_does_not(runtime) -> None:
    porto = shared_data("porto5")
    settings = runtime.settings
    original = check_folder(
        porto,
        max_distance=settings.near_duplicate_max_distance,
        max_bytes=settings.max_image_bytes,
        max_pixels=settings.max_image_pixels,
    )
    assert original.items == 1166
    assert len(original.leaks) >= 100  # burst shots straddle the authors' split
    assert {leak.kind for leak in original.leaks} == {"exact", "near-duplicate"}

    summary = IngestSummary()
    IngestRunner(runtime.factory, runtime.store, settings).run(
        labelled_tree_items(porto, dataset_name="porto5", summary=summary),
        actor="test",
        action="t",
        summary=summary,
    )
    assert summary.rejected == []
    with runtime.factory() as session, session.begin():
        version = snapshot(session, author="test", message="porto5").version
    with runtime.factory() as session:
        manifest = load_manifest(session, version)
        report = check_version(session, version, max_distance=settings.near_duplicate_max_distance)
    # Byte-identical files are stored once, so the version holds fewer images.
    assert 1000 < len(manifest) <= 1166
    assert report.leaks == [], report.as_text()
    assert min(report.split_counts.values()) > 100
