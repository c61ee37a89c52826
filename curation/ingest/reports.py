"""A single user report: "the app said X, this photo is really Y"."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from curation.exceptions import RejectedInput
from curation.ingest.core import IngestContext, record_prepared
from curation.ingest.prepare import prepare_image
from curation.ingest.records import Outcome, SourceSpec
from curation.models import AuditEntry, ImageSource, SourceKind
from curation.taxonomy import clean_class_name
from curation.validation import validate_filename

MAX_REPORTER_ID = 128
MAX_NOTE = 2000


@dataclass(frozen=True)
class ReportResult:
    image_id: int
    source_id: int
    outcome: Outcome


def _clean_text(value: str | None, *, field: str, limit: int) -> str | None:
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    if "\x00" in value:
        raise RejectedInput(f"{field} contains a NUL byte")
    if len(value) > limit:
        raise RejectedInput(f"{field} longer than {limit} characters")
    return value


def ingest_report(
    session: Session,
    context: IngestContext,
    *,
    image_bytes: bytes,
    claimed_class_name: str,
    predicted_class_name: str | None,
    reporter_id: str | None,
    note: str | None = None,
    filename: str | None = None,
    max_bytes: int,
    max_pixels: int,
) -> ReportResult:
    """Validate and record one report. Never commits; raises ``RejectedInput``.

    Everything is checked before anything is written, and the rows go in under
    a savepoint whose failure also removes the stored file.
    """
    claimed = clean_class_name(claimed_class_name)
    predicted = clean_class_name(predicted_class_name) if predicted_class_name else None
    reporter = _clean_text(reporter_id, field="reporter id", limit=MAX_REPORTER_ID)
    cleaned_note = _clean_text(note, field="note", limit=MAX_NOTE)
    cleaned_filename = validate_filename(filename) if filename is not None else None
    prepared = prepare_image(image_bytes, max_bytes=max_bytes, max_pixels=max_pixels)
    spec = SourceSpec(
        kind=SourceKind.REPORT,
        reporter_id=reporter,
        claimed_class_name=claimed,
        predicted_class_name=predicted,
        note=cleaned_note,
        original_filename=cleaned_filename,
    )
    written: list[str] = []
    try:
        with session.begin_nested():
            result = record_prepared(session, context, prepared, spec, None, written)
            source_id = session.scalar(
                select(ImageSource.id).where(
                    ImageSource.image_id == result.image_id,
                    ImageSource.identity_key == spec.identity_key(),
                )
            )
            assert source_id is not None
            session.add(
                AuditEntry(
                    actor=f"reporter:{reporter or 'anonymous'}",
                    action="report.received",
                    entity_type="image_source",
                    entity_id=source_id,
                    details={
                        "claimed": claimed,
                        "predicted": predicted,
                        "outcome": result.outcome.value,
                    },
                )
            )
    except BaseException:
        for key in written:
            context.store.delete(key)
        raise
    if result.outcome is Outcome.NEW:
        context.index.add(prepared.phash_signed % (1 << 64), result.image_id)
    return ReportResult(image_id=result.image_id, source_id=source_id, outcome=result.outcome)


def ingest_app_photo(
    session: Session,
    context: IngestContext,
    *,
    image_bytes: bytes,
    app: str,
    max_bytes: int,
    max_pixels: int,
) -> int:
    """Keep a photo an app sent for prediction and asked to be stored; returns its image id.

    It is recorded as an unlabelled crawl of the app (crawler ``app:<app>``),
    so it is deduplicated, grouped and queued for review like any crawled
    image. Never commits; raises ``RejectedInput`` for a bad image.
    """
    prepared = prepare_image(image_bytes, max_bytes=max_bytes, max_pixels=max_pixels)
    spec = SourceSpec(kind=SourceKind.CRAWL, crawler=f"app:{app}"[:100])
    written: list[str] = []
    try:
        with session.begin_nested():
            result = record_prepared(session, context, prepared, spec, None, written)
    except BaseException:
        for key in written:
            context.store.delete(key)
        raise
    return int(result.image_id)
