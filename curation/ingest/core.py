"""Record one prepared image: the image row, its group, its source, its label.

Never commits; the caller runs it inside a savepoint so a failure leaves no
half-written rows, and deletes any file it wrote (``written_keys``).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from curation.exceptions import RejectedInput
from curation.geometry import Box, to_corners
from curation.hashing import to_unsigned64
from curation.ingest.prepare import PreparedImage
from curation.ingest.records import (
    ItemResult,
    LabelOutcome,
    LabelSpec,
    Outcome,
    SourceSpec,
)
from curation.labels import append_label, current_label, same_box
from curation.models import (
    ClassStatus,
    Image,
    ImageSource,
    JobStatus,
    NearDuplicateGroup,
    ScoringJob,
    SourceKind,
)
from curation.neardup import NearDuplicateIndex
from curation.store.base import ImageStore, storage_key
from curation.taxonomy import clean_class_name, find_class, find_or_create_class


@dataclass(frozen=True)
class IngestContext:
    store: ImageStore
    index: NearDuplicateIndex
    max_distance: int
    new_class_status: ClassStatus = ClassStatus.ACTIVE


def record_prepared(
    session: Session,
    context: IngestContext,
    prepared: PreparedImage,
    source: SourceSpec,
    label: LabelSpec | None,
    written_keys: list[str],
) -> ItemResult:
    # Everything that can refuse the input is checked before a file is written.
    if label is not None:
        clean_class_name(label.class_name)
    label_box = _label_box(prepared, label) if label is not None else None
    _check_lengths(source)
    image = session.scalars(select(Image).where(Image.sha256 == prepared.sha256)).first()
    near_duplicate = False
    if image is None:
        image, near_duplicate = _insert_image(session, context, prepared, written_keys)
        outcome = Outcome.NEW
    else:
        outcome = Outcome.EXACT_DUPLICATE

    identity = source.identity_key()
    known = session.scalar(
        select(ImageSource.id).where(
            ImageSource.image_id == image.id, ImageSource.identity_key == identity
        )
    )
    if known is None:
        session.add(_source_row(session, image.id, identity, source))
    elif outcome is Outcome.EXACT_DUPLICATE:
        outcome = Outcome.ALREADY_PRESENT

    label_outcome, created_class = None, None
    if label is not None:
        label_outcome, created_class = _apply_label(session, context, image, label_box, label)
    session.flush()
    return ItemResult(
        outcome=outcome,
        image_id=image.id,
        near_duplicate=near_duplicate,
        label=label_outcome,
        created_class=created_class,
    )


def _check_lengths(source: SourceSpec) -> None:
    """Refuse a provenance field longer than its column, naming it, rather than
    letting the database abort the whole chunk."""
    columns = ImageSource.__table__.columns
    for name, value in vars(source).items():
        if isinstance(value, str) and name in columns:
            limit = getattr(columns[name].type, "length", None)
            if limit is not None and len(value) > limit:
                label = name.replace("_", " ")
                raise RejectedInput(f"{label} longer than {limit} characters")


def _insert_image(
    session: Session, context: IngestContext, prepared: PreparedImage, written_keys: list[str]
) -> tuple[Image, bool]:
    phash = to_unsigned64(prepared.phash_signed)
    matches = context.index.matching_image_ids(phash, max_distance=context.max_distance)
    groups = (
        sorted(set(session.scalars(select(Image.group_id).where(Image.id.in_(matches))).all()))
        if matches
        else []
    )
    if groups:
        group_id = groups[0]
        if len(groups) > 1:
            # The new image bridges groups: they become one, so a split can
            # never put two of its members on different sides.
            session.execute(
                update(Image).where(Image.group_id.in_(groups[1:])).values(group_id=group_id)
            )
            session.execute(delete(NearDuplicateGroup).where(NearDuplicateGroup.id.in_(groups[1:])))
    else:
        group = NearDuplicateGroup()
        session.add(group)
        session.flush()
        group_id = group.id

    key = storage_key(prepared.sha256, prepared.stored_extension)
    if context.store.put(key, prepared.stored_bytes):
        written_keys.append(key)
    image = Image(
        sha256=prepared.sha256,
        phash=prepared.phash_signed,
        width=prepared.width,
        height=prepared.height,
        format=prepared.format,
        byte_size=prepared.byte_size,
        storage_key=key,
        stored_format=prepared.stored_format,
        group_id=group_id,
    )
    session.add(image)
    session.flush()
    # The outbox row commits with the image: a worker (or the sweeper, if the
    # task is lost) embeds and scores it once the transaction is visible.
    session.add(ScoringJob(image_id=image.id, status=JobStatus.PENDING.value))
    return image, bool(groups)


def _source_row(session: Session, image_id: int, identity: str, spec: SourceSpec) -> ImageSource:
    claimed = find_class(session, spec.claimed_class_name) if spec.claimed_class_name else None
    predicted = (
        find_class(session, spec.predicted_class_name) if spec.predicted_class_name else None
    )
    return ImageSource(
        image_id=image_id,
        kind=spec.kind.value,
        identity_key=identity,
        original_filename=spec.original_filename,
        reporter_id=spec.reporter_id,
        claimed_class_name=spec.claimed_class_name,
        claimed_class_id=claimed.id if claimed else None,
        predicted_class_name=spec.predicted_class_name,
        predicted_class_id=predicted.id if predicted else None,
        note=spec.note,
        crawler=spec.crawler if spec.kind is SourceKind.CRAWL else None,
        source_url=spec.source_url,
        dataset_name=spec.dataset_name,
        original_path=spec.original_path,
        original_split=spec.original_split,
        original_class_name=spec.original_class_name,
    )


def _label_box(prepared: PreparedImage, spec: LabelSpec) -> Box | None:
    """The label's box in pixels of the stored (oriented) copy; raises ``RejectedInput``."""
    if spec.box is None:
        return None
    corners = to_corners(
        spec.box,
        box_format=spec.box_format,
        units=spec.box_units,
        width=prepared.original_width,
        height=prepared.original_height,
    )
    return prepared.box_on_stored(corners)


def _apply_label(
    session: Session,
    context: IngestContext,
    image: Image,
    box: Box | None,
    spec: LabelSpec,
) -> tuple[LabelOutcome, str | None]:
    landmark, created = find_or_create_class(
        session, spec.class_name, status=context.new_class_status
    )
    current = current_label(session, image.id)
    created_slug = landmark.slug if created else None
    if current is None:
        append_label(session, image_id=image.id, class_id=landmark.id, box=box, origin=spec.origin)
        return LabelOutcome.ADDED, created_slug
    if current.class_id == landmark.id and same_box(current.box, box):
        return LabelOutcome.UNCHANGED, created_slug
    if current.origin == spec.origin:
        # One labelled set giving one image two answers (the same bytes in two
        # class folders) is a conflict for a reviewer, not a silent overwrite.
        return LabelOutcome.CONFLICT, created_slug
    append_label(
        session,
        image_id=image.id,
        class_id=landmark.id,
        box=box,
        origin=spec.origin,
        supersedes=current,
    )
    return LabelOutcome.CHANGED, created_slug
