"""Diffs between versions, and the `curation dataset` commands, end to end."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from curation.accounts import create_user
from curation.cli import main as cli
from curation.labels import append_label, current_label
from curation.models import ClassChange, LandmarkClass, NearDuplicateGroup
from datasets.diff import diff_versions
from datasets.versions import find_version, snapshot
from tests.factories import image_row


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def any_runtime(request):
    return request.getfixturevalue("runtime" if request.param == "sqlite" else "pg_runtime")


def _landmark(session, slug: str) -> int:
    landmark = LandmarkClass(slug=slug, display_name=slug.title(), status="active")
    session.add(landmark)
    session.flush()
    return landmark.id


def _labelled(session, n: int, class_id: int) -> None:
    group = NearDuplicateGroup()
    session.add(group)
    session.flush()
    image_row(session, n, group_id=group.id)
    append_label(session, image_id=n, class_id=class_id, box=None, origin="import:test")


def test_a_diff_names_added_removed_relabelled_and_class_changes(any_runtime) -> None:
    with any_runtime.factory() as session, session.begin():
        a, b = _landmark(session, "gyeongbokgung"), _landmark(session, "namsan")
        for n in range(1, 41):
            _labelled(session, n, a)
        ann = create_user(
            session, username="ann", password="correct horse 1", role="reviewer", actor="test"
        )
    with any_runtime.factory() as session, session.begin():
        v1 = snapshot(session, author="test", message="first").version
    with any_runtime.factory() as session, session.begin():
        for n in range(41, 46):
            _labelled(session, n, b)
        # A train-or-validation image relabelled by ann; one image turned out junk.
        target = 1
        head = current_label(session, target)
        append_label(
            session,
            image_id=target,
            class_id=b,
            box=(1, 1, 50, 60),
            origin="review",
            author_id=ann.id,
            supersedes=head,
        )
        junk = current_label(session, 2)
        append_label(session, image_id=2, class_id=None, box=None, origin="review", supersedes=junk)
        landmark = session.get_one(LandmarkClass, b)
        landmark.display_name = "N Seoul Tower"
        session.add(
            ClassChange(
                class_id=b,
                kind="renamed",
                actor="root",
                reason="official name",
                details={"from": "Namsan", "to": "N Seoul Tower"},
            )
        )
        new_class = _landmark(session, "seoul-national-university")
    with any_runtime.factory() as session, session.begin():
        result = snapshot(session, author="test", message="second")
        v2 = result.version
    with any_runtime.factory() as session:
        difference = diff_versions(session, v1, v2)
        data = difference.as_dict()
        text = difference.as_text()
    assert data["counts"]["added"] == 5 and data["added"] == [41, 42, 43, 44, 45]
    assert data["removed"] == [2]
    assert [c["slug"] for c in data["classes"]["added"]] == ["seoul-national-university"]
    assert data["classes"]["renamed"] == [
        {"id": b, "slug": "namsan", "from": "Namsan", "to": "N Seoul Tower"}
    ]
    assert [h["kind"] for h in data["classes"]["history"]] == ["renamed"]
    assert new_class > 0
    if 1 in result.held_back:  # image 1 drew the frozen test split: its change waits
        assert data["counts"]["relabelled"] == 0
    else:
        assert data["label_changes"] == [
            {"image_id": 1, "from": "gyeongbokgung", "to": "namsan", "by": "ann", "why": "review"}
        ]
        assert "label image 1: gyeongbokgung -> namsan by ann" in text
    assert "+ class seoul-national-university" in text
    # The other way round is the mirror image.
    with any_runtime.factory() as session:
        back = diff_versions(session, v2, v1).as_dict()
    assert back["removed"] == [41, 42, 43, 44, 45] and back["added"] == [2]


def test_dataset_commands_snapshot_list_show_diff(runtime, monkeypatch) -> None:
    monkeypatch.setenv("CURATION_DATA_DIR", str(runtime.settings.data_dir))
    monkeypatch.setenv("CURATION_DATABASE_URL", runtime.settings.database_url)
    with runtime.factory() as session, session.begin():
        a = _landmark(session, "gyeongbokgung")
        for n in range(1, 31):
            _labelled(session, n, a)
    invoke = CliRunner().invoke
    first = invoke(cli, ["dataset", "snapshot", "-m", "first", "--ratios", "80/10/10", "--json"])
    assert first.exit_code == 0, first.output
    payload = json.loads(first.output)
    assert payload["version"] == "v1" and payload["items"] == 30
    assert payload["settings"]["ratios"] == {"train": 0.8, "validation": 0.1, "test": 0.1}
    with runtime.factory() as session, session.begin():
        for n in range(31, 36):
            _labelled(session, n, a)
    second = invoke(cli, ["dataset", "snapshot", "-m", "five more"])
    assert second.exit_code == 0, second.output
    assert second.output.startswith("v2: 35 images")
    listing = json.loads(invoke(cli, ["dataset", "list", "--json"]).output)
    assert [v["version"] for v in listing] == ["v1", "v2"]
    shown = json.loads(invoke(cli, ["dataset", "show", "v2", "--json"]).output)
    images = shown["classes"][0]["images"]
    assert sum(images.values()) == 35
    diff = json.loads(invoke(cli, ["dataset", "diff", "v1", "v2", "--json"]).output)
    assert diff["counts"]["added"] == 5
    bad = invoke(cli, ["dataset", "diff", "v1", "v7"])
    assert bad.exit_code == 2 and "v7 does not exist" in bad.output
    bad = invoke(cli, ["dataset", "snapshot", "-m", "x", "--ratios", "50/50"])
    assert bad.exit_code == 2 and "three split ratios" in bad.output
    with runtime.factory() as session:
        assert find_version(session, "latest").number == 2
