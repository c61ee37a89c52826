"""The Label Studio sync without a server: config, boxes, signatures, push and pull logic."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

import pytest
from sqlalchemy import func, select

from curation.exceptions import RejectedInput
from curation.labelstudio import signing
from curation.labelstudio.config import NOT_A_LANDMARK, label_config
from curation.labelstudio.convert import percent_box_to_pixels, read_answer
from curation.labelstudio.sync import IMAGE_KEY, pull, push
from curation.learning.pipeline import queue_for_cold_start
from curation.learning.scoring import LearningPaths
from curation.models import ClassStatus, Label, LandmarkClass, QueueItem, QueueStatus
from curation.runtime import Runtime
from curation.taxonomy import find_or_create_class
from tests.factories import jpeg


def test_config_lists_classes_as_choices_and_box_labels() -> None:
    root = ET.fromstring(label_config(["Gyeongbokgung", "N Seoul Tower"]))
    choices = [c.get("value") for c in root.iter("Choice")]
    boxes = [c.get("value") for c in root.iter("Label")]
    assert choices == ["Gyeongbokgung", "N Seoul Tower", NOT_A_LANDMARK]
    assert boxes == ["Gyeongbokgung", "N Seoul Tower"]
    assert root.find("Image").get("value") == "$image"  # type: ignore[union-attr]


def test_percent_box_becomes_pixels_clipped() -> None:
    value = {"x": 10, "y": 20, "width": 50, "height": 100, "rotation": 0}
    assert percent_box_to_pixels(value, width=200, height=100) == (20.0, 20.0, 120.0, 100.0)
    with pytest.raises(RejectedInput):
        percent_box_to_pixels({**value, "rotation": 30}, width=200, height=100)
    with pytest.raises(RejectedInput):
        percent_box_to_pixels({**value, "width": 0}, width=200, height=100)


def _choice(name: str) -> dict[str, Any]:
    return {"from_name": "class", "to_name": "image", "value": {"choices": [name]}}


def test_read_answer() -> None:
    box = {
        "from_name": "box",
        "value": {"x": 0, "y": 0, "width": 50, "height": 50, "rectanglelabels": ["A"]},
    }
    assert read_answer([_choice("A"), box], width=100, height=80).box == (0.0, 0.0, 50.0, 40.0)
    assert read_answer([box], width=100, height=80).class_name == "A"
    assert read_answer([_choice(NOT_A_LANDMARK)], width=10, height=10).class_name is None
    with pytest.raises(RejectedInput):
        read_answer([_choice("B"), box], width=100, height=80)
    with pytest.raises(RejectedInput):
        read_answer([], width=100, height=80)


def test_signed_url_refuses_expired_and_tampered() -> None:
    now = 1_000_000.0
    expires = int(now) + 60
    sig = signing.signature("key", 7, expires)
    assert signing.verify("key", 7, str(expires), sig, now=now)
    assert not signing.verify("key", 7, str(expires), sig, now=now + 61)  # expired
    assert not signing.verify("key", 8, str(expires), sig, now=now)  # another image
    assert not signing.verify("key", 7, str(expires + 999), sig, now=now)  # longer life
    assert not signing.verify("other", 7, str(expires), sig, now=now)
    assert not signing.verify("key", 7, None, sig, now=now)
    assert "images/7?expires=" in signing.signed_image_path("key", 7, expires)
    assert signing.verify_secret("s3cret", "s3cret")
    assert not signing.verify_secret("s3cret", "s3cre")
    assert not signing.verify_secret(None, "")


class FakeApi:
    """An in-memory Label Studio: projects, tasks, and annotations the test adds."""

    def __init__(self) -> None:
        self.configs: dict[int, str] = {}
        self.titles: dict[str, int] = {}
        self.task_list: dict[int, list[dict[str, Any]]] = {}
        self.next_id = 100

    def find_project(self, title: str) -> int | None:
        return self.titles.get(title)

    def create_project(self, title: str, label_config: str) -> int:
        self.titles[title] = len(self.titles) + 1
        self.configs[self.titles[title]] = label_config
        self.task_list[self.titles[title]] = []
        return self.titles[title]

    def get_label_config(self, project_id: int) -> str:
        return self.configs[project_id]

    def set_label_config(self, project_id: int, label_config: str) -> None:
        self.configs[project_id] = label_config

    def import_tasks(self, project_id: int, tasks: Sequence[dict[str, Any]]) -> None:
        for task in tasks:
            self.next_id += 1
            self.task_list[project_id].append(
                {**task, "id": self.next_id, "project": project_id, "annotations": []}
            )

    def tasks(self, project_id: int) -> Iterator[dict[str, Any]]:
        yield from self.task_list[project_id]

    def task(self, task_id: int) -> dict[str, Any]:
        return next(t for ts in self.task_list.values() for t in ts if t["id"] == task_id)

    def user_names(self) -> dict[int, str]:
        return {2: "annotator@example.com"}

    def ensure_webhook(self, project_id: int, url: str, headers: dict[str, str]) -> None:
        pass


@pytest.fixture
def seeded(runtime: Runtime, tmp_path: Path) -> list[int]:
    from curation.ingest.folders import crawl_items
    from curation.ingest.records import IngestSummary
    from curation.ingest.runner import IngestRunner
    from curation.models import Image

    with runtime.factory() as session, session.begin():
        find_or_create_class(session, "Gyeongbokgung")
    folder = tmp_path / "photos"
    folder.mkdir()
    for n in range(4):
        (folder / f"p{n}.jpg").write_bytes(jpeg(300 + n, 80, 40))
    summary = IngestSummary()
    IngestRunner(runtime.factory, runtime.store, runtime.settings).run(
        crawl_items(folder, crawler="t", manifest=None, summary=summary),
        actor="test",
        action="test.seed",
        summary=summary,
        parallel=False,
    )
    with runtime.factory() as session:
        ids = list(session.scalars(select(Image.id).order_by(Image.id)))
    queue_for_cold_start(runtime, ids)
    return ids


def _statuses(runtime: Runtime) -> dict[int, str]:
    with runtime.factory() as session:
        return dict(session.execute(select(QueueItem.image_id, QueueItem.status)).tuples().all())


def test_push_holds_pull_labels_once_and_proposes_unknown_classes(
    runtime: Runtime, seeded: list[int]
) -> None:
    api = FakeApi()
    paths = LearningPaths.under(runtime.settings.data_dir)
    result = push(
        runtime.factory, api, settings=runtime.settings, paths=paths, project="p", limit=3
    )
    assert result.sent == 3
    statuses = _statuses(runtime)
    assert sorted(s for s in statuses.values()) == ["held", "held", "held", "pending"]
    tasks = api.task_list[result.project_id]
    assert all(task["data"]["image"].startswith(runtime.settings.public_url) for task in tasks)
    assert "Gyeongbokgung" in api.configs[result.project_id]

    annotations = [
        [_choice("Gyeongbokgung")],
        [_choice("Brand New Place")],
        [_choice(NOT_A_LANDMARK)],
    ]
    for n, (task, answer) in enumerate(zip(tasks, annotations, strict=True)):
        task["annotations"].append({"id": 900 + n, "completed_by": 2, "result": answer})
    first = pull(runtime.factory, api, project="p")
    assert first.labels == 3
    assert len(first.proposed_classes) == 1
    second = pull(runtime.factory, api, project="p")
    assert second.labels == 0 and second.already_pulled == 3
    with runtime.factory() as session:
        assert session.scalar(select(func.count()).select_from(Label)) == 3
        new = session.scalars(
            select(LandmarkClass).where(LandmarkClass.display_name == "Brand New Place")
        ).one()
        assert new.status == ClassStatus.PROPOSED.value
    held_images = {task["data"][IMAGE_KEY] for task in tasks}
    assert all(
        status == (QueueStatus.DONE.value if image in held_images else "pending")
        for image, status in _statuses(runtime).items()
    )


def test_hold_times_out_back_into_line(runtime: Runtime, seeded: list[int]) -> None:
    api = FakeApi()
    paths = LearningPaths.under(runtime.settings.data_dir)
    push(runtime.factory, api, settings=runtime.settings, paths=paths, project="p", limit=2)
    assert list(_statuses(runtime).values()).count("held") == 2
    later = datetime.now(UTC) + timedelta(seconds=runtime.settings.labelstudio_hold_seconds + 1)
    result = pull(runtime.factory, api, now=later)
    assert result.released == 2
    assert set(_statuses(runtime).values()) == {"pending"}
