"""The ``curation`` command line, run in-process against a temporary database."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from curation.cli import main
from curation.db import make_engine, make_session_factory
from curation.store import LocalImageStore
from tests.curation.helpers import bmp, counts, write_tree
from tests.factories import jpeg, png

ENV_KEYS = (
    "ENV",
    "DATA_DIR",
    "DATABASE_URL",
    "BROKER_URL",
    "RESULT_BACKEND",
    "SECRET_KEY",
    "MAX_IMAGE_BYTES",
    "MAX_IMAGE_PIXELS",
    "NEAR_DUPLICATE_MAX_DISTANCE",
    "INGEST_WORKERS",
    "INGEST_COMMIT_EVERY",
    "NO_PROGRESS",
)


class Cli:
    def __init__(self, tmp_path: Path) -> None:
        self.data_dir = tmp_path / "var"
        self.database_url = f"sqlite:///{tmp_path / 'cli.db'}"
        self.env: dict[str, str | None] = {f"CURATION_{key}": None for key in ENV_KEYS}
        self.env |= {
            "CURATION_ENV": "test",
            "CURATION_DATA_DIR": str(self.data_dir),
            "CURATION_DATABASE_URL": self.database_url,
            "CURATION_SECRET_KEY": "cli-test-secret",
            "CURATION_INGEST_WORKERS": "1",
        }

    def __call__(self, *args: str, **env: str) -> Result:
        extra = {f"CURATION_{k.upper()}": v for k, v in env.items()}
        return CliRunner().invoke(main, list(args), env=self.env | extra, catch_exceptions=False)

    def counts(self) -> dict[str, int]:
        engine = make_engine(self.database_url)
        try:
            return counts(make_session_factory(engine))
        finally:
            engine.dispose()


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    cli = Cli(tmp_path)
    result = cli("db", "upgrade")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "database at head"
    return cli


def _one_error_line(result: Result) -> str:
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


def test_crawl_json_summary_names_each_rejected_file(cli: Cli, tmp_path: Path) -> None:
    root = write_tree(
        tmp_path / "crawl",
        {
            "good.jpg": jpeg(1),
            "copy.jpg": jpeg(1),
            "fake.jpg": b"this is text",
            "empty.jpg": b"",
            "old.bmp": bmp(2),
            "real.png": png(3),
        },
    )
    result = cli("ingest", "crawl", str(root), "--crawler", "bing", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["files"] == 6
    assert summary["ingested"] == 2
    assert summary["exact_duplicates"] == 1
    assert summary["rejected_count"] == 3
    assert summary["rejected"] == [
        {"path": "empty.jpg", "reason": "empty file"},
        {"path": "fake.jpg", "reason": "not an image: the file holds text"},
        {
            "path": "old.bmp",
            "reason": "unsupported format: bmp (allowed: jpeg, png, webp, gif, avif)",
        },
    ]
    assert cli.counts()["images"] == 2
    assert len(list(LocalImageStore(cli.data_dir / "images").keys())) == 2


def test_crawl_with_manifest_problems_in_json(cli: Cli, tmp_path: Path) -> None:
    root = write_tree(tmp_path / "crawl", {"a.jpg": jpeg(1)})
    manifest = tmp_path / "urls.csv"
    manifest.write_text(
        "path,url\na.jpg,javascript:alert(1)\nb.jpg,https://e.com/b\n", encoding="utf-8"
    )
    result = cli("ingest", "crawl", str(root), "--manifest", str(manifest), "--json")
    assert result.exit_code == 0, result.output
    problems = json.loads(result.stdout)["manifest_problems"]
    assert [p["path"] for p in problems] == ["urls.csv:2", "b.jpg"]


def test_crawl_of_a_missing_folder_is_one_error_line(cli: Cli, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    result = cli("ingest", "crawl", str(missing), "--json")
    assert _one_error_line(result) == f"error: folder not found: {missing}"
    assert cli.counts()["images"] == 0


def test_bad_manifest_is_one_error_line(cli: Cli, tmp_path: Path) -> None:
    root = write_tree(tmp_path / "crawl", {"a.jpg": jpeg(1)})
    manifest = tmp_path / "m.csv"
    manifest.write_bytes("path,url\nChâteau.jpg,https://e.com\n".encode("latin-1"))
    assert _one_error_line(cli("ingest", "crawl", str(root), "--manifest", str(manifest))) == (
        "error: manifest m.csv is not UTF-8 text"
    )
    manifest.write_text("file_name,link\n", encoding="utf-8")
    assert _one_error_line(
        cli("ingest", "crawl", str(root), "--manifest", str(manifest))
    ).startswith("error: manifest needs a 'path'")


def test_labelled_human_summary(cli: Cli, tmp_path: Path) -> None:
    root = write_tree(
        tmp_path / "wonders",
        {
            "Petra/a.jpg": jpeg(1),
            "Taj Mahal/b.jpg": jpeg(1),
            "경복궁/c.jpg": jpeg(2),
            "x.jpg": jpeg(3),
        },
    )
    result = cli("ingest", "labelled", str(root))
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith(
        "4 files: 2 ingested, 1 exact duplicates, 0 near-duplicates, "
        "0 already present, 1 rejected ("
    )
    assert "labels: 2 added, 0 changed" in lines
    assert any(line.startswith("new classes: ") and "경복궁" in line for line in lines)
    assert "  rejected x.jpg: not inside a class folder" in lines
    assert "  label conflict Taj Mahal/b.jpg: already labelled otherwise in import:wonders" in lines
    again = cli("ingest", "labelled", str(root), "--dataset", "wonders", "--json")
    assert json.loads(again.stdout)["already_present"] == 3


def test_json_import_with_a_mapping_file(cli: Cli, tmp_path: Path) -> None:
    root = write_tree(
        tmp_path / "vendor",
        {
            "a.jpg": jpeg(1),
            "a.json": json.dumps({"obj": {"name": "Petra", "box": [0.1, 0.1, 0.5, 0.5]}}).encode(),
            "b.jpg": jpeg(2),
        },
    )
    mapping = tmp_path / "mapping.json"
    mapping.write_text(
        json.dumps(
            {
                "class_key": "obj.name",
                "box_key": "obj.box",
                "box_format": "xyxy",
                "box_units": "normalized",
            }
        ),
        encoding="utf-8",
    )
    result = cli("ingest", "json", str(root), "--mapping", str(mapping), "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["ingested"], summary["labels_added"]) == (1, 1)
    assert summary["rejected"] == [
        {"path": "b.jpg", "reason": "no JSON annotation beside it (expected b.json)"}
    ]
    mapping.write_text(json.dumps({"class": "x"}), encoding="utf-8")
    assert _one_error_line(cli("ingest", "json", str(root), "--mapping", str(mapping))) == (
        "error: mapping: unknown keys ['class']"
    )


def test_report_command(cli: Cli, tmp_path: Path) -> None:
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(jpeg(4))
    result = cli(
        "ingest",
        "report",
        str(photo),
        "--claimed",
        "경복궁",
        "--predicted",
        "Namsan",
        "--reporter",
        "u1",
        "--note",
        "gate",
        "--json",
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["outcome"] == "new"
    assert cli.counts()["sources"] == 1
    again = cli(
        "ingest",
        "report",
        str(photo),
        "--claimed",
        "경복궁",
        "--predicted",
        "Namsan",
        "--reporter",
        "u1",
        "--note",
        "gate",
    )
    assert again.stdout.strip() == f"report stored: image {payload['image_id']} (already_present)"
    assert _one_error_line(cli("ingest", "report", str(photo), "--claimed", "  ")) == (
        "error: class name is empty"
    )
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"")
    assert (
        _one_error_line(cli("ingest", "report", str(bad), "--claimed", "Petra"))
        == "error: empty file"
    )
    assert _one_error_line(
        cli("ingest", "report", str(tmp_path / "none.jpg"), "--claimed", "Petra")
    ).startswith("error: cannot read file: ")
    assert cli.counts()["sources"] == 1


def test_store_gc(cli: Cli) -> None:
    store = LocalImageStore(cli.data_dir / "images")
    key = "ab/cd/" + "ab" * 32 + ".jpg"
    store.put(key, b"orphan")
    old = time.time() - 7200
    os.utime(store.path_for(key), (old, old))
    # A classifier file a killed fine-tuning run left, which no model names.
    classifier = cli.data_dir / "models" / "0123abcd.keras"
    classifier.parent.mkdir(parents=True, exist_ok=True)
    classifier.write_bytes(b"not a model")
    os.utime(classifier, (old, old))
    dry = cli("store", "gc", "--dry-run", "--json")
    assert json.loads(dry.stdout) == {
        "orphans": [key],
        "fine_tuning_leftovers": ["0123abcd.keras"],
        "dry_run": True,
    }
    assert store.exists(key) and classifier.exists()
    done = cli("store", "gc")
    assert done.stdout.strip() == (
        "removed 1 orphan files and 1 fine-tuning leftovers (0123abcd.keras)"
    )
    assert not store.exists(key) and not classifier.exists()


def test_bad_setting_is_one_error_line(cli: Cli, tmp_path: Path) -> None:
    root = write_tree(tmp_path / "crawl", {"a.jpg": jpeg(1)})
    result = cli("ingest", "crawl", str(root), max_image_bytes="lots")
    assert _one_error_line(result) == (
        "error: CURATION_MAX_IMAGE_BYTES must be a whole number, got 'lots'"
    )
