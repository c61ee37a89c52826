"""Batch ingestion: decode in a process pool, record in short transactions.

Each file is recorded inside its own savepoint, so a bad file never aborts its
batch and never leaves a partial row; each chunk commits on its own, so a
crash loses at most one chunk, which ingesting again repairs (idempotent).
Files written for rows that did not commit are deleted at once; a crash
between writing and committing leaves an orphan that ``curation store gc``
(and the worker's periodic sweep) removes.
"""

from __future__ import annotations

import os
import stat
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from curation.exceptions import RejectedInput
from curation.ingest.core import IngestContext, record_prepared
from curation.ingest.prepare import PreparedImage, prepare_image
from curation.ingest.records import IngestItem, IngestSummary, ItemResult, Outcome
from curation.models import AuditEntry, ClassStatus, Image
from curation.neardup import NearDuplicateIndex
from curation.settings import Settings
from curation.store.base import ImageStore, storage_key

Prepared = PreparedImage | RejectedInput


@dataclass(frozen=True)
class Limits:
    max_bytes: int
    max_pixels: int


def read_untrusted_file(path: Path, *, max_bytes: int) -> bytes:
    """Read a file without following a symbolic link and without reading past the limit."""
    try:
        # O_NONBLOCK: opening a FIFO (named pipe) would otherwise wait for a writer forever.
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as error:
        if path.is_symlink():
            raise RejectedInput("symbolic links are not followed") from None
        raise RejectedInput(f"cannot read file: {error.strerror or error}") from None
    with os.fdopen(fd, "rb") as handle:
        status = os.fstat(handle.fileno())
        if not stat.S_ISREG(status.st_mode):
            raise RejectedInput("not a regular file")
        size = status.st_size
        if size > max_bytes:
            raise RejectedInput(f"file too large: {size} bytes (limit {max_bytes})")
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise RejectedInput(f"file too large: more than {max_bytes} bytes")
    return data


def prepare_item(path: Path | None, data: bytes | None, limits: Limits) -> Prepared:
    """Runs in a worker process: the CPU-heavy part of one item."""
    try:
        if data is None:
            assert path is not None
            data = read_untrusted_file(path, max_bytes=limits.max_bytes)
        return prepare_image(data, max_bytes=limits.max_bytes, max_pixels=limits.max_pixels)
    except RejectedInput as rejected:
        return rejected
    except Exception as error:  # an unexpected decoder failure rejects the file, not the batch
        return RejectedInput(f"could not decode image ({type(error).__name__}: {error})"[:300])


class _InlineExecutor(Executor):
    """Runs work in the calling process (small batches, or when pools are off)."""

    def submit(  # type: ignore[override]
        self, fn: Callable[..., Prepared], /, *args: object, **kwargs: object
    ) -> Future[Prepared]:
        future: Future[Prepared] = Future()
        future.set_result(fn(*args, **kwargs))
        return future


class IngestRunner:
    def __init__(
        self,
        factory: sessionmaker[Session],
        store: ImageStore,
        settings: Settings,
        *,
        new_class_status: ClassStatus = ClassStatus.ACTIVE,
    ) -> None:
        self.factory = factory
        self.store = store
        self.settings = settings
        self.limits = Limits(settings.max_image_bytes, settings.max_image_pixels)
        self.index = NearDuplicateIndex()
        self.new_class_status = new_class_status

    def run(
        self,
        items: Iterable[IngestItem],
        *,
        actor: str,
        action: str,
        on_progress: Callable[[int], object] | None = None,
        summary: IngestSummary | None = None,
        parallel: bool = True,
    ) -> IngestSummary:
        started = time.perf_counter()
        summary = summary or IngestSummary()
        workers = self.settings.ingest_workers or os.cpu_count() or 1
        executor: Executor = (
            ProcessPoolExecutor(max_workers=workers)
            if parallel and workers > 1
            else _InlineExecutor()
        )
        with executor:
            chunk: list[tuple[IngestItem, Prepared]] = []
            for item, prepared in self._prepared_in_order(executor, items, ahead=workers * 8):
                chunk.append((item, prepared))
                if len(chunk) >= self.settings.ingest_commit_every:
                    self._record_chunk(chunk, summary)
                    if on_progress:
                        on_progress(len(chunk))
                    chunk = []
            if chunk:
                self._record_chunk(chunk, summary)
                if on_progress:
                    on_progress(len(chunk))
        summary.seconds = time.perf_counter() - started
        with self.factory() as session, session.begin():
            session.add(
                AuditEntry(
                    actor=actor,
                    action=action,
                    entity_type="ingest",
                    details={k: v for k, v in summary.as_dict().items() if k != "rejected"}
                    | {"rejected_count": len(summary.rejected)},
                )
            )
        return summary

    def _prepared_in_order(
        self, executor: Executor, items: Iterable[IngestItem], *, ahead: int
    ) -> Iterator[tuple[IngestItem, Prepared]]:
        """Keep at most ``ahead`` decodes in flight, so memory stays flat on huge folders."""
        pending: deque[tuple[IngestItem, Future[Prepared] | None]] = deque()
        for item in items:
            future = (
                None
                if item.rejected_reason is not None
                else executor.submit(prepare_item, item.path, item.data, self.limits)
            )
            pending.append((item, future))
            if len(pending) >= ahead:
                yield self._resolve(*pending.popleft())
        while pending:
            yield self._resolve(*pending.popleft())

    @staticmethod
    def _resolve(item: IngestItem, future: Future[Prepared] | None) -> tuple[IngestItem, Prepared]:
        if future is None:
            return item, RejectedInput(item.rejected_reason or "rejected")
        return item, future.result()

    def _record_chunk(
        self, chunk: list[tuple[IngestItem, Prepared]], summary: IngestSummary
    ) -> None:
        written: list[str] = []
        committed_new: list[PreparedImage] = []
        try:
            with self.factory() as session, session.begin():
                self.index.refresh(session)
                context = IngestContext(
                    store=self.store,
                    index=self.index,
                    max_distance=self.settings.near_duplicate_max_distance,
                    new_class_status=self.new_class_status,
                )
                for item, prepared in chunk:
                    summary.files += 1
                    if isinstance(prepared, RejectedInput):
                        summary.reject(item.name, prepared.reason)
                        continue
                    result = self._record_one(session, context, item, prepared, written)
                    if isinstance(result, RejectedInput):
                        summary.reject(item.name, result.reason)
                    else:
                        summary.record(item, result)
                        if result.outcome is Outcome.NEW:
                            committed_new.append(prepared)
        except BaseException:
            self._discard(written)
            self.index = NearDuplicateIndex()  # rebuilt from committed rows on next refresh
            raise
        # A writer that lost a race and cleaned up may have removed a file our
        # rows now name; the rows are committed, so put it back.
        for prepared in committed_new:
            key = storage_key(prepared.sha256, prepared.stored_extension)
            if not self.store.exists(key):
                self.store.put(key, prepared.stored_bytes)

    def _record_one(
        self,
        session: Session,
        context: IngestContext,
        item: IngestItem,
        prepared: PreparedImage,
        written: list[str],
    ) -> ItemResult | RejectedInput:
        for attempt in range(2):
            item_written: list[str] = []
            try:
                with session.begin_nested():
                    result = record_prepared(
                        session, context, prepared, item.source, item.label, item_written
                    )
            except RejectedInput as rejected:
                self._discard(item_written)
                return rejected
            except IntegrityError:
                # Another process stored the same content between our read and
                # our insert: the second attempt finds its row. The file is
                # not deleted: that process's row names the same key.
                if attempt == 1:
                    return RejectedInput("conflicting concurrent write; ingest it again")
                continue
            except BaseException:
                self._discard(item_written)
                raise
            written.extend(item_written)
            if result.outcome is Outcome.NEW:
                context.index.add(prepared.phash_signed % (1 << 64), result.image_id)
            return result
        raise AssertionError("unreachable")

    def _discard(self, keys: list[str]) -> None:
        """Delete files written for rows that did not commit, unless a row names them.

        Another writer may have committed the same content meanwhile; a file
        that is still orphaned after a lost race is left to ``store gc``.
        """
        if not keys:
            return
        with self.factory() as session:
            referenced = set(
                session.scalars(select(Image.storage_key).where(Image.storage_key.in_(keys))).all()
            )
        for key in keys:
            if key not in referenced:
                self.store.delete(key)
