"""Append-only labels: the current label heads a chain of superseded ones."""

from __future__ import annotations

import pytest
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from curation.labels import append_label, current_label, same_box
from curation.models import Image, NearDuplicateGroup
from curation.taxonomy import find_or_create_class


def _image(session: Session) -> Image:
    group = NearDuplicateGroup()
    session.add(group)
    session.flush()
    image = Image(
        sha256="ab" * 32,
        phash=0,
        width=100,
        height=50,
        format="jpeg",
        byte_size=1,
        storage_key="ab/ab/" + "ab" * 32 + ".jpg",
        stored_format="jpeg",
        group_id=group.id,
    )
    session.add(image)
    session.flush()
    return image


def test_same_box() -> None:
    assert same_box(None, None)
    assert not same_box(None, (0, 0, 1, 1))
    assert not same_box((0, 0, 1, 1), None)
    assert same_box((0, 0, 10, 10), (0.4, -0.5, 10.5, 9.6))
    assert not same_box((0, 0, 10, 10), (0, 0, 10, 10.6))


def test_current_label_follows_the_chain(db_session: Session) -> None:
    image = _image(db_session)
    petra, _ = find_or_create_class(db_session, "Petra")
    taj, _ = find_or_create_class(db_session, "Taj Mahal")
    assert current_label(db_session, image.id) is None

    first = append_label(
        db_session, image_id=image.id, class_id=petra.id, box=(1, 2, 30, 40), origin="import:a"
    )
    assert first.verdict == "landmark"
    assert first.box == (1, 2, 30, 40)
    assert current_label(db_session, image.id) == first

    second = append_label(
        db_session, image_id=image.id, class_id=None, box=None, origin="review", supersedes=first
    )
    assert second.verdict == "not_a_landmark"
    assert second.box is None
    assert current_label(db_session, image.id) == second

    third = append_label(
        db_session, image_id=image.id, class_id=taj.id, box=None, origin="review", supersedes=second
    )
    assert current_label(db_session, image.id) == third
    assert (first.supersedes_id, second.supersedes_id, third.supersedes_id) == (
        None,
        first.id,
        second.id,
    )


def test_a_label_is_superseded_at_most_once(db_session: Session) -> None:
    image = _image(db_session)
    petra, _ = find_or_create_class(db_session, "Petra")
    first = append_label(db_session, image_id=image.id, class_id=petra.id, box=None, origin="a")
    append_label(
        db_session, image_id=image.id, class_id=petra.id, box=None, origin="b", supersedes=first
    )
    with pytest.raises(IntegrityError), db_session.begin_nested():
        append_label(
            db_session, image_id=image.id, class_id=None, box=None, origin="c", supersedes=first
        )


def test_database_refuses_an_inverted_box(db_session: Session) -> None:
    image = _image(db_session)
    petra, _ = find_or_create_class(db_session, "Petra")
    with pytest.raises(IntegrityError), db_session.begin_nested():
        append_label(
            db_session, image_id=image.id, class_id=petra.id, box=(10, 0, 5, 5), origin="a"
        )
