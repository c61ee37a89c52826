"""Single user reports ("the app said X, this is really Y")."""

from __future__ import annotations

import fnmatch

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from curation.exceptions import RejectedInput
from curation.hashing import to_unsigned64
from curation.ingest.core import IngestContext
from curation.ingest.records import Outcome
from curation.ingest.reports import MAX_NOTE, MAX_REPORTER_ID, ingest_report
from curation.models import AuditEntry, ClassAlias, Image, ImageSource
from curation.store import LocalImageStore
from curation.taxonomy import find_or_create_class, search_key
from tests.curation.helpers import count_rows, open_bytes, png_bomb, stored_files, truncated_jpeg
from tests.factories import jpeg, near_copy, with_exif

LIMITS = {"max_bytes": 40 * 1024 * 1024, "max_pixels": 60_000_000}
NOTHING = {"images": 0, "sources": 0, "labels": 0, "groups": 0, "classes": 0, "aliases": 0}


def _report(session: Session, context: IngestContext, **overrides: object):  # type: ignore[no-untyped-def]
    arguments: dict[str, object] = (
        {
            "image_bytes": jpeg(1),
            "claimed_class_name": "경복궁",
            "predicted_class_name": "Namsan Tower",
            "reporter_id": "user-42",
            "note": "taken from the main gate",
            "filename": "IMG_0001.jpg",
        }
        | LIMITS
        | overrides
    )
    return ingest_report(session, context, **arguments)  # type: ignore[arg-type]


def test_report_records_names_and_links_known_classes(
    db_session: Session, ingest_context: IngestContext, store: LocalImageStore
) -> None:
    palace, _ = find_or_create_class(db_session, "Gyeongbokgung Palace")
    palace.aliases.append(ClassAlias(language="ko", name="경복궁", search_key=search_key("경복궁")))
    db_session.flush()

    result = _report(db_session, ingest_context, claimed_class_name="  경복 궁 ")

    assert result.outcome is Outcome.NEW
    source = db_session.get(ImageSource, result.source_id)
    assert source is not None
    assert source.kind == "report"
    assert source.image_id == result.image_id
    assert source.claimed_class_name == "경복 궁"
    assert source.claimed_class_id == palace.id  # matched through the Korean alias
    assert source.predicted_class_name == "Namsan Tower"
    assert source.predicted_class_id is None  # not a known class: the name is kept
    assert source.reporter_id == "user-42"
    assert source.note == "taken from the main gate"
    assert source.original_filename == "IMG_0001.jpg"
    audit = db_session.scalars(
        select(AuditEntry).where(AuditEntry.action == "report.received")
    ).one()
    assert (audit.actor, audit.entity_type, audit.entity_id) == (
        "reporter:user-42",
        "image_source",
        result.source_id,
    )
    assert audit.details == {"claimed": "경복 궁", "predicted": "Namsan Tower", "outcome": "new"}
    image = db_session.get(Image, result.image_id)
    assert image is not None
    assert stored_files(store) == [image.storage_key]
    # The index learns the new image at once, for the next report.
    assert ingest_context.index.matching_image_ids(to_unsigned64(image.phash), max_distance=0) == [
        image.id
    ]


def test_report_links_predicted_class_too(
    db_session: Session, ingest_context: IngestContext
) -> None:
    namsan, _ = find_or_create_class(db_session, "Namsan Tower")
    result = _report(db_session, ingest_context, predicted_class_name="namsan-tower")
    source = db_session.get(ImageSource, result.source_id)
    assert source is not None and source.predicted_class_id == namsan.id
    assert source.claimed_class_id is None


def test_anonymous_report_without_optional_fields(
    db_session: Session, ingest_context: IngestContext
) -> None:
    result = _report(
        db_session,
        ingest_context,
        predicted_class_name=None,
        reporter_id="  ",
        note="",
        filename=None,
    )
    source = db_session.get(ImageSource, result.source_id)
    assert source is not None
    assert (
        source.reporter_id,
        source.note,
        source.predicted_class_name,
        source.original_filename,
    ) == (
        None,
        None,
        None,
        None,
    )
    audit = db_session.scalars(select(AuditEntry)).one()
    assert audit.actor == "reporter:anonymous"


def test_the_same_report_twice_is_already_present(
    db_session: Session, ingest_context: IngestContext, store: LocalImageStore
) -> None:
    first = _report(db_session, ingest_context)
    again = _report(db_session, ingest_context)
    assert again.outcome is Outcome.ALREADY_PRESENT
    assert (again.image_id, again.source_id) == (first.image_id, first.source_id)
    other = _report(db_session, ingest_context, reporter_id="user-7")
    assert other.outcome is Outcome.EXACT_DUPLICATE
    assert other.image_id == first.image_id and other.source_id != first.source_id
    rows = count_rows(db_session)
    assert (rows["images"], rows["sources"]) == (1, 2)
    assert len(stored_files(store)) == 1


def test_a_near_copy_report_joins_the_group(
    db_session: Session, ingest_context: IngestContext
) -> None:
    first = _report(db_session, ingest_context, image_bytes=jpeg(5))
    second = _report(db_session, ingest_context, image_bytes=near_copy(5))
    assert second.outcome is Outcome.NEW
    a, b = db_session.get(Image, first.image_id), db_session.get(Image, second.image_id)
    assert a is not None and b is not None
    assert a.group_id == b.group_id


def test_report_stores_a_clean_oriented_copy(
    db_session: Session, ingest_context: IngestContext, store: LocalImageStore
) -> None:
    result = _report(db_session, ingest_context, image_bytes=with_exif(9, orientation=6))
    image = db_session.get(Image, result.image_id)
    assert image is not None
    stored = open_bytes(store.get(image.storage_key))
    assert dict(stored.getexif()) == {}
    assert stored.size == (240, 320) == (image.width, image.height)


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        (
            {"filename": "../../etc/passwd"},
            "file name must not contain a path ('/', '\\\\' or '..')",
        ),
        ({"filename": "../photo.jpg"}, "file name must not contain a path ('/', '\\\\' or '..')"),
        ({"filename": "photo\x00.jpg"}, "file name contains a NUL byte"),
        ({"filename": "p" * 300}, "file name longer than 255 characters (300)"),
        ({"filename": ""}, "file name is empty"),
        ({"claimed_class_name": ""}, "class name is empty"),
        ({"claimed_class_name": "   "}, "class name is empty"),
        ({"claimed_class_name": "?!"}, "class name '?!' has no letters or digits"),
        ({"predicted_class_name": "x" * 201}, "class name longer than 200 characters"),
        ({"note": "n" * (MAX_NOTE + 1)}, f"note longer than {MAX_NOTE} characters"),
        ({"note": "a\x00b"}, "note contains a NUL byte"),
        (
            {"reporter_id": "r" * (MAX_REPORTER_ID + 1)},
            f"reporter id longer than {MAX_REPORTER_ID} characters",
        ),
        ({"image_bytes": b""}, "empty file"),
        ({"image_bytes": b"GIF89a is what I say I am"}, "content is not a valid gif image"),
        ({"image_bytes": truncated_jpeg(3)}, "corrupt or truncated jpeg image (*"),
        ({"image_bytes": png_bomb(30_000)}, "too many pixels*"),
        ({"image_bytes": jpeg(1), "max_bytes": 100}, "file too large: * bytes (limit 100)"),
    ],
)
def test_bad_reports_are_refused_with_nothing_written(
    db_session: Session,
    ingest_context: IngestContext,
    store: LocalImageStore,
    overrides: dict[str, object],
    reason: str,
) -> None:
    with pytest.raises(RejectedInput) as caught:
        _report(db_session, ingest_context, **overrides)
    # "*" stands for a detail that depends on the decoder or the file's size.
    assert fnmatch.fnmatchcase(caught.value.reason, reason.replace("[", "[[]"))
    assert count_rows(db_session) == NOTHING
    assert db_session.scalars(select(AuditEntry)).all() == []
    assert stored_files(store) == []
    assert len(ingest_context.index) == 0
