"""``curation classes ...``, run in-process against a temporary SQLite database."""

from __future__ import annotations

import getpass
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import select

from curation.cli import main
from curation.db import make_engine, make_session_factory
from curation.labels import append_label, current_label
from curation.models import LandmarkClass, QueueItem
from tests.factories import image_row


class Cli:
    def __init__(self, tmp_path: Path) -> None:
        self.database_url = f"sqlite:///{tmp_path / 'cli.db'}"
        self.env = {
            "CURATION_ENV": "test",
            "CURATION_DATA_DIR": str(tmp_path / "var"),
            "CURATION_DATABASE_URL": self.database_url,
            "CURATION_SECRET_KEY": "cli-test-secret",
            "CURATION_NO_PROGRESS": "1",
        }

    def __call__(self, *args: str) -> Result:
        return CliRunner().invoke(main, list(args), env=self.env, catch_exceptions=False)

    def json(self, *args: str) -> Any:
        result = self(*args, "--json")
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    def label_images(self, slug: str, first: int, count: int) -> list[int]:
        engine = make_engine(self.database_url)
        try:
            with make_session_factory(engine)() as session, session.begin():
                landmark = session.scalars(
                    select(LandmarkClass).where(LandmarkClass.slug == slug)
                ).one()
                ids = []
                for n in range(first, first + count):
                    image = image_row(session, n)
                    append_label(
                        session, image_id=image.id, class_id=landmark.id, box=None, origin="t"
                    )
                    ids.append(image.id)
                return ids
        finally:
            engine.dispose()

    def query(self, fn):  # type: ignore[no-untyped-def]
        engine = make_engine(self.database_url)
        try:
            with make_session_factory(engine)() as session:
                return fn(session)
        finally:
            engine.dispose()


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    cli = Cli(tmp_path)
    assert cli("db", "upgrade").exit_code == 0
    return cli


def _error_line(result: Result) -> str:
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith("error: ")
    return line


def test_add_and_list(cli: Cli) -> None:
    added = cli.json(
        "classes",
        "add",
        "Gyeongbokgung",
        "--alias",
        "ko:경복궁",
        "--alias",
        "景福宮",
        "--lat",
        "37.5796",
        "--lon",
        "126.977",
        "--reason",
        "many reports",
    )
    assert added["class"] == {
        "id": 1,
        "slug": "gyeongbokgung",
        "display_name": "Gyeongbokgung",
        "status": "proposed",
        "latitude": 37.5796,
        "longitude": 126.977,
        "aliases": [
            {"language": "en", "name": "Gyeongbokgung"},
            {"language": "ko", "name": "경복궁"},
            {"language": "zh", "name": "景福宮"},
        ],
    }
    human = cli("classes", "add", "Deoksugung")
    assert human.exit_code == 0 and human.stdout == "class Deoksugung proposed as deoksugung\n"
    cli.label_images("gyeongbokgung", 1, 2)
    listed = cli.json("classes", "list")["classes"]
    assert [(c["slug"], c["images"], c["status"]) for c in listed] == [
        ("deoksugung", 0, "proposed"),
        ("gyeongbokgung", 2, "proposed"),
    ]
    assert cli.json("classes", "list", "--status", "active") == {"classes": []}
    text = cli("classes", "list").stdout
    assert "gyeongbokgung" in text and "ko:경복궁" in text and "2 images" in text
    history = cli.json("classes", "history", "경복궁")
    [change] = history["history"]
    assert change["kind"] == "proposed" and change["reason"] == "many reports"
    assert change["actor"] == f"cli:{getpass.getuser()}"


def test_refusals_are_one_clear_line(cli: Cli) -> None:
    assert cli("classes", "add", "Gyeongbokgung").exit_code == 0
    assert _error_line(cli("classes", "add", "gyeongbokgung!", "--json")) == (
        "error: the name 'gyeongbokgung!' already belongs to class Gyeongbokgung (gyeongbokgung)"
    )
    assert "latitude must lie" in _error_line(
        cli("classes", "add", "Nowhere", "--lat", "95", "--lon", "0")
    )
    assert "both latitude and longitude" in _error_line(
        cli("classes", "add", "Nowhere", "--lat", "5")
    )
    assert _error_line(cli("classes", "rename", "Nowhere", "Somewhere")) == (
        "error: no class is called 'Nowhere'"
    )
    assert "cannot be merged into itself" in _error_line(
        cli("classes", "merge", "gyeongbokgung", "Gyeongbokgung")
    )
    assert "at least 2 new class names" in _error_line(
        cli("classes", "split", "gyeongbokgung", "--into", "East Gate")
    )
    assert "already called" in _error_line(
        cli("classes", "rename", "gyeongbokgung", "Gyeongbokgung")
    )
    usage = cli("classes", "list", "--status", "gone")
    assert usage.exit_code == 2 and "Invalid value for '--status'" in usage.stderr
    # Nothing was half-applied.
    assert [c["slug"] for c in cli.json("classes", "list")["classes"]] == ["gyeongbokgung"]


def test_rename_alias_merge_split_retire(cli: Cli) -> None:
    cli("classes", "add", "Seoul Tower")
    cli("classes", "add", "Namsan Tower")
    cli("classes", "add", "Gyeongbokgung")
    cli.label_images("seoul-tower", 1, 2)
    namsan = cli.label_images("namsan-tower", 10, 3)
    palace = cli.label_images("gyeongbokgung", 20, 2)

    renamed = cli.json("classes", "rename", "seoul tower", "N Seoul Tower", "--reason", "official")
    assert (renamed["from"], renamed["to"]) == ("Seoul Tower", "N Seoul Tower")
    assert renamed["class"]["slug"] == "seoul-tower"
    # The old name still finds the class.
    assert cli.json("classes", "history", "Seoul Tower")["class"]["display_name"] == (
        "N Seoul Tower"
    )
    alias = cli.json("classes", "alias", "seoul-tower", "남산타워")
    assert alias["alias"] == {"language": "ko", "name": "남산타워"}

    merged = cli.json("classes", "merge", "Namsan Tower", "N Seoul Tower", "--reason", "same")
    assert merged["labels_moved"] == 3 and merged["source"]["status"] == "retired"
    assert {"language": "en", "name": "Namsan Tower"} in merged["into"]["aliases"]
    text = cli("classes", "merge", "namsan-tower", "seoul-tower")
    assert "is retired" in _error_line(text)

    def labels(session):  # type: ignore[no-untyped-def]
        return {i: current_label(session, i).class_id for i in namsan}  # type: ignore[union-attr]

    assert set(cli.query(labels).values()) == {1}

    split = cli.json(
        "classes", "split", "gyeongbokgung", "--into", "Geunjeongjeon", "--into", "Gwanghwamun"
    )
    assert split["images_reopened"] == 2 and split["grouped_by"] == "near_duplicates"
    assert [c["status"] for c in split["new_classes"]] == ["proposed", "proposed"]
    assert split["original"]["status"] == "retired"

    def items(session):  # type: ignore[no-untyped-def]
        return sorted((i.image_id, i.status) for i in session.scalars(select(QueueItem)).all())

    assert cli.query(items) == [(palace[0], "pending"), (palace[1], "pending")]

    retired = cli.json("classes", "retire", "N Seoul Tower", "--reason", "closed")
    assert retired["class"]["status"] == "retired"
    assert "already retired" in _error_line(cli("classes", "retire", "seoul-tower"))
    history = cli("classes", "history", "seoul-tower")
    assert history.exit_code == 0
    lines = history.stdout.splitlines()
    assert lines[0] == "N Seoul Tower (seoul-tower), retired"
    assert "renamed from 'Seoul Tower' to 'N Seoul Tower'" in lines[2] and "(official)" in lines[2]
    assert "absorbed namsan-tower: 3 labels moved" in lines[4]
    assert "retired (5 images still labelled with it)" in lines[5]
    statuses = {c["slug"]: c["status"] for c in cli.json("classes", "list")["classes"]}
    assert statuses == {
        "seoul-tower": "retired",
        "namsan-tower": "retired",
        "gyeongbokgung": "retired",
        "geunjeongjeon": "proposed",
        "gwanghwamun": "proposed",
    }
