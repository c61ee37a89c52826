"""The embedding cache: each (image, space, crop) is embedded once and kept.

Vectors live in one append-only float16 file per embedding space
(``<data>/embeddings/<space id>.f16``, rows of ``dim`` values), read through
``np.memmap``: rescoring a million items reads them from the page cache
without decoding a pixel or parsing a database row per vector. The database
row (``image_embeddings``) says which row of the file belongs to which image,
and its unique key makes a redelivered task harmless: a second append only
wastes a row of the file, never creates a second mapping.

Why not float16 bytes in the database: 1M EfficientNet vectors are 2.5 GB;
streaming them out of PostgreSQL row by row takes minutes, a memmap seconds.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import exists, select, tuple_
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from curation.geometry import Box
from curation.models import EmbeddingSpace, ImageEmbedding

FULL = "full"


def crop_key(box: Box | None) -> str:
    """``full``, or the box rounded to whole pixels (what the crop really used)."""
    if box is None:
        return FULL
    return "box:" + ",".join(str(round(v)) for v in box)


class EmbeddingFile:
    """An append-only (rows, dim) float16 matrix on disk."""

    def __init__(self, path: Path, dim: int) -> None:
        self.path = path
        self.dim = dim
        self.row_bytes = dim * 2

    def rows(self) -> int:
        try:
            return self.path.stat().st_size // self.row_bytes
        except FileNotFoundError:
            return 0

    def append(self, vectors: NDArray[np.floating]) -> int:
        """Append (n, dim) vectors durably; return the row index of the first one.

        Several worker processes append to one file: an exclusive lock makes
        each append whole and its row numbers exact.
        """
        data = np.ascontiguousarray(vectors, dtype=np.float16)
        if data.ndim != 2 or data.shape[1] != self.dim:
            raise ValueError(f"expected (n, {self.dim}) vectors, got {data.shape}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("ab") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                size = handle.seek(0, os.SEEK_END)
                # A crash mid-append leaves a partial row; pad it out so the
                # rows after it stay aligned (the partial row is never mapped).
                remainder = size % self.row_bytes
                if remainder:
                    handle.write(b"\0" * (self.row_bytes - remainder))
                    size += self.row_bytes - remainder
                handle.write(data.tobytes())
                handle.flush()
                os.fsync(handle.fileno())
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
        return size // self.row_bytes

    def matrix(self) -> NDArray[np.float16]:
        """All rows, memory-mapped read-only (no copy)."""
        count = self.rows()
        if count == 0:
            return np.zeros((0, self.dim), dtype=np.float16)
        return np.memmap(self.path, dtype=np.float16, mode="r", shape=(count, self.dim))


def space_file(root: Path, space: EmbeddingSpace) -> EmbeddingFile:
    return EmbeddingFile(root / f"{space.id}.f16", space.dim)


def get_or_create_space(
    session: Session, *, key: str, backbone: str, weights_id: str, dim: int
) -> EmbeddingSpace:
    space = session.scalars(select(EmbeddingSpace).where(EmbeddingSpace.key == key)).first()
    if space is None:
        space = EmbeddingSpace(key=key, backbone=backbone, weights_id=weights_id, dim=dim)
        session.add(space)
        session.flush()
    elif space.dim != dim:
        raise ValueError(f"space {key} has dim {space.dim}, not {dim}")
    return space


def space_id_of(session: Session, key: str) -> int:
    """The id of the space keyed ``key``; ``NotFound`` when nothing was embedded in it."""
    from curation.exceptions import NotFound

    found = session.scalar(select(EmbeddingSpace.id).where(EmbeddingSpace.key == key))
    if found is None:
        raise NotFound(f"no embeddings in space {key}")
    return int(found)


def image_ids_in(session: Session, key: str) -> list[int]:
    """Ids of the images embedded whole in the space keyed ``key`` (none if it does not exist)."""
    query = (
        select(ImageEmbedding.image_id)
        .join(EmbeddingSpace, EmbeddingSpace.id == ImageEmbedding.space_id)
        .where(EmbeddingSpace.key == key, ImageEmbedding.crop_key == FULL)
        .order_by(ImageEmbedding.image_id)
    )
    return [int(i) for i in session.scalars(query)]


def missing(
    session: Session, space: EmbeddingSpace, wanted: Sequence[tuple[int, str]]
) -> list[tuple[int, str]]:
    """The (image id, crop key) pairs of ``wanted`` that have no embedding yet."""
    if not wanted:
        return []
    have: set[tuple[int, str]] = set()
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        rows = session.execute(
            select(ImageEmbedding.image_id, ImageEmbedding.crop_key).where(
                ImageEmbedding.space_id == space.id,
                tuple_(ImageEmbedding.image_id, ImageEmbedding.crop_key).in_(chunk),
            )
        ).tuples()
        have.update(rows)
    return [pair for pair in wanted if pair not in have]


def record(
    session: Session,
    root: Path,
    space: EmbeddingSpace,
    keys: Sequence[tuple[int, str]],
    vectors: NDArray[np.floating],
) -> None:
    """Append ``vectors`` (n, dim) for ``keys`` and map them; already-mapped keys are kept.

    Call with a short transaction of its own, after the embedding was computed.
    """
    if len(keys) != len(vectors):
        raise ValueError("one vector per key")
    if not keys:
        return
    first = space_file(root, space).append(vectors)
    values = [
        {"space_id": space.id, "image_id": image_id, "crop_key": crop, "row": first + i}
        for i, (image_id, crop) in enumerate(keys)
    ]
    dialect = session.get_bind().dialect.name
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    statement = insert(ImageEmbedding).values(values)
    session.execute(
        statement.on_conflict_do_nothing(index_elements=["space_id", "image_id", "crop_key"])
    )


def load(
    session: Session,
    root: Path,
    space: EmbeddingSpace,
    *,
    image_ids: Sequence[int] | None = None,
    crop: str = FULL,
) -> tuple[NDArray[np.int64], NDArray[np.float16]]:
    """(image ids (n,), vectors (n, dim) float16) of the cached embeddings, by image id."""
    query = (
        select(ImageEmbedding.image_id, ImageEmbedding.row)
        .where(ImageEmbedding.space_id == space.id, ImageEmbedding.crop_key == crop)
        .order_by(ImageEmbedding.image_id)
    )
    if image_ids is None:
        if session.get_bind().dialect.name == "postgresql":
            return _load_all_postgres(session, root, space, crop)
        pairs = list(session.execute(query).tuples())
    else:
        wanted = list(image_ids)
        pairs = []
        for start in range(0, len(wanted), 10000):
            chunk = wanted[start : start + 10000]
            pairs.extend(session.execute(query.where(ImageEmbedding.image_id.in_(chunk))).tuples())
        pairs.sort()
    ids = np.fromiter((p[0] for p in pairs), dtype=np.int64, count=len(pairs))
    rows = np.fromiter((p[1] for p in pairs), dtype=np.int64, count=len(pairs))
    if len(rows) == 0:
        return ids, np.zeros((0, space.dim), np.float16)
    return ids, np.asarray(space_file(root, space).matrix()[rows])


def _load_all_postgres(
    session: Session, root: Path, space: EmbeddingSpace, crop: str
) -> tuple[NDArray[np.int64], NDArray[np.float16]]:
    """A whole space's mapping by binary COPY: a million (id, row) pairs in well under a second."""
    from curation import pgcopy

    raw = session.connection().connection.driver_connection
    assert raw is not None
    quoted = crop.replace("'", "''")
    with raw.cursor() as cursor:
        pairs = pgcopy.copy_out_ints(
            cursor,
            "SELECT image_id::int8, row::int8 FROM image_embeddings"  # noqa: S608 (quoted)
            f" WHERE space_id = {int(space.id)} AND crop_key = '{quoted}' ORDER BY image_id",
            2,
        )
    if len(pairs) == 0:
        return pairs[:, 0], np.zeros((0, space.dim), np.float16)
    return pairs[:, 0].copy(), np.asarray(space_file(root, space).matrix()[pairs[:, 1]])


def sample(
    session: Session, root: Path, space: EmbeddingSpace, *, crop: str = FULL
) -> tuple[NDArray[np.float16], int]:
    """(about 4,096 vectors evenly spread over the space's images, how many images it holds).

    For reading one batch against the whole space without loading it: the
    rows are chosen in SQL (``row % step``), so box crops and rows a
    redelivered batch appended twice are never part of the sample.
    """
    _, vectors, count = sample_images(session, root, space, crop=crop)
    return vectors, count


def sample_images(
    session: Session, root: Path, space: EmbeddingSpace, *, crop: str = FULL
) -> tuple[NDArray[np.int64], NDArray[np.float16], int]:
    """:func:`sample` with the image id of each sampled vector: (ids, vectors, count)."""
    from sqlalchemy import func

    from curation.learning.scores import DENSITY_REFERENCE_ROWS

    of_space = (ImageEmbedding.space_id == space.id, ImageEmbedding.crop_key == crop)
    count = int(
        session.scalar(select(func.count()).select_from(ImageEmbedding).where(*of_space)) or 0
    )
    if count == 0:
        return np.zeros(0, np.int64), np.zeros((0, space.dim), np.float16), 0
    step = max(1, count // DENSITY_REFERENCE_ROWS)
    pairs = session.execute(
        select(ImageEmbedding.image_id, ImageEmbedding.row)
        .where(*of_space, ImageEmbedding.row % step == 0)
        .order_by(ImageEmbedding.row)
        .limit(2 * DENSITY_REFERENCE_ROWS)
    ).all()
    ids = np.asarray([image_id for image_id, _ in pairs], dtype=np.int64)
    rows = np.asarray([row for _, row in pairs], dtype=np.int64)
    return ids, np.asarray(space_file(root, space).matrix()[rows]), count


def lookup(
    session: Session,
    root: Path,
    space: EmbeddingSpace,
    image_ids: Sequence[int],
    crop_keys: Sequence[str] | None = None,
) -> tuple[NDArray[np.float16], NDArray[np.bool_]]:
    """((n, dim) vectors, (n,) found) for each image, in the order given.

    Row ``i`` is the embedding of ``crop_keys[i]`` where the space has it,
    else of the full image (the fallback that training uses when a box's
    crop was never embedded); ``found[i]`` is False, and the row zeros,
    where the space has neither.
    """
    rows, _ = rows_for(session, space, image_ids, crop_keys)
    found = rows >= 0
    vectors = np.zeros((len(rows), space.dim), np.float16)
    if found.any():
        vectors[found] = space_file(root, space).matrix()[rows[found]]
    return vectors, found


def rows_for(
    session: Session,
    space: EmbeddingSpace,
    image_ids: Sequence[int],
    crop_keys: Sequence[str] | None = None,
) -> tuple[NDArray[np.int64], NDArray[np.bool_]]:
    """((n,) file rows, -1 where the space has no embedding; (n,) whole-image fallbacks).

    Row ``i`` is that of ``crop_keys[i]`` (the whole image when None) where
    the space has it, else that of the whole image; the second array marks
    the images that asked for a crop and got their whole image instead.
    """
    ids = [int(i) for i in image_ids]
    crops = list(crop_keys) if crop_keys is not None else [FULL] * len(ids)
    if len(crops) != len(ids):
        raise ValueError("one crop key per image")
    mapped: dict[tuple[int, str], int] = {}
    for start in range(0, len(ids), 10000):
        chunk = ids[start : start + 10000]
        query = select(ImageEmbedding.image_id, ImageEmbedding.crop_key, ImageEmbedding.row).where(
            ImageEmbedding.space_id == space.id, ImageEmbedding.image_id.in_(chunk)
        )
        mapped.update(((i, c), r) for i, c, r in session.execute(query).tuples())
    rows = np.full(len(ids), -1, dtype=np.int64)
    fell_back = np.zeros(len(ids), dtype=np.bool_)
    for n, (image_id, crop) in enumerate(zip(ids, crops, strict=True)):
        row = mapped.get((image_id, crop))
        if row is None:
            row = mapped.get((image_id, FULL))
            fell_back[n] = row is not None and crop != FULL
        rows[n] = -1 if row is None else row
    return rows, fell_back


def images_missing_from(session: Session, space: EmbeddingSpace) -> list[int]:
    """Images the workers have processed that ``space`` lacks, by id.

    What a newly promoted champion in its own space (a fine-tuned backbone's)
    still has to embed before it can score them: images whose scoring job is
    done, or dead although some space holds them whole (they decode: they
    died of a champion whose classifier could not be loaded). One anti-join
    of the scoring jobs (one row per image) against the space's whole-image
    rows; pending jobs are on their way anyway.
    """
    from sqlalchemy import or_
    from sqlalchemy.orm import aliased

    from curation.models import JobStatus, ScoringJob

    mine, anywhere = aliased(ImageEmbedding), aliased(ImageEmbedding)
    # NOT EXISTS, not NOT IN: PostgreSQL plans it as a hash anti-join, where a
    # NOT IN over a million ids that outgrow work_mem runs a subplan per row.
    in_space = exists().where(
        mine.space_id == space.id,
        mine.crop_key == FULL,
        mine.image_id == ScoringJob.image_id,
    )
    decodes = exists().where(anywhere.crop_key == FULL, anywhere.image_id == ScoringJob.image_id)
    query = (
        select(ScoringJob.image_id)
        .where(
            or_(
                ScoringJob.status == JobStatus.DONE.value,
                (ScoringJob.status == JobStatus.DEAD.value) & decodes,
            ),
            ~in_space,
        )
        .order_by(ScoringJob.image_id)
    )
    return [int(i) for i in session.scalars(query)]


def newest_shared_space(session: Session, *, with_rows: bool = False) -> EmbeddingSpace | None:
    """The newest space that is not a fine-tuned backbone's (those belong to one model,
    and a cancelled run leaves one half filled): the fallback when there is no champion."""
    from curation.learning.tuned import TUNED_PREFIX

    query = select(EmbeddingSpace).where(~EmbeddingSpace.weights_id.startswith(TUNED_PREFIX))
    if with_rows:
        query = query.where(exists().where(ImageEmbedding.space_id == EmbeddingSpace.id))
    return session.scalars(query.order_by(EmbeddingSpace.id.desc()).limit(1)).first()


def drop_space(session: Session, root: Path, key: str) -> bool:
    """Delete the space keyed ``key``, its mappings and its file; False if there is none.

    Only for a space no model uses (a fine-tuning run that stopped before it
    recorded its model): the caller makes sure of that.
    """
    from sqlalchemy import delete

    space = session.scalars(select(EmbeddingSpace).where(EmbeddingSpace.key == key)).first()
    if space is None:
        return False
    path = space_file(root, space).path
    session.execute(delete(ImageEmbedding).where(ImageEmbedding.space_id == space.id))
    session.delete(space)
    session.flush()
    path.unlink(missing_ok=True)
    return True
