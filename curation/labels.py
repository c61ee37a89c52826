"""Labels are appended, never overwritten: the current label heads a chain."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import ColumnElement, exists, select
from sqlalchemy.orm import Session, aliased

from curation.geometry import Box
from curation.models import Label, LabelVerdict, ReviewDecision


def is_current() -> ColumnElement[bool]:
    """True for a label no newer label supersedes (the head of its chain)."""
    newer = aliased(Label)
    return ~exists().where(newer.supersedes_id == Label.id)


def current_label(session: Session, image_id: int) -> Label | None:
    return session.scalars(
        select(Label)
        .where(Label.image_id == image_id)
        .where(is_current())
        .order_by(Label.id.desc())
        .limit(1)
    ).first()


def current_labels(session: Session, image_ids: Sequence[int] | None = None) -> list[Label]:
    """The current label of each of ``image_ids`` that has one (of every image if None)."""
    query = select(Label).where(is_current())
    if image_ids is None:
        return list(session.scalars(query).all())
    ids = list(image_ids)
    labels: list[Label] = []
    for start in range(0, len(ids), 10000):
        labels.extend(session.scalars(query.where(Label.image_id.in_(ids[start : start + 10000]))))
    return labels


def judged_images(session: Session, image_ids: Sequence[int]) -> set[int]:
    """Those of ``image_ids`` a person has said anything about: a label of any
    verdict, or a review decision of any kind (a skip, a first answer awaiting
    its second review, a dispute), even one undone since."""
    ids = list(image_ids)
    judged: set[int] = set()
    for start in range(0, len(ids), 10000):
        chunk = ids[start : start + 10000]
        judged.update(session.scalars(select(Label.image_id).where(Label.image_id.in_(chunk))))
        judged.update(
            session.scalars(
                select(ReviewDecision.image_id).where(ReviewDecision.image_id.in_(chunk))
            )
        )
    return judged


def same_box(a: Box | None, b: Box | None, *, tolerance: float = 0.5) -> bool:
    if a is None or b is None:
        return a is b
    return all(abs(x - y) <= tolerance for x, y in zip(a, b, strict=True))


def append_label(
    session: Session,
    *,
    image_id: int,
    class_id: int | None,
    box: Box | None,
    origin: str,
    author_id: int | None = None,
    supersedes: Label | None = None,
) -> Label:
    verdict = LabelVerdict.LANDMARK if class_id is not None else LabelVerdict.NOT_A_LANDMARK
    label = Label(
        image_id=image_id,
        verdict=verdict.value,
        class_id=class_id,
        author_id=author_id,
        origin=origin,
        supersedes_id=supersedes.id if supersedes is not None else None,
    )
    if box is not None:
        label.box_x_min, label.box_y_min, label.box_x_max, label.box_y_max = box
    session.add(label)
    session.flush()
    return label
