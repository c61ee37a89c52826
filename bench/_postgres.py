"""A throwaway PostgreSQL database for a benchmark, and fast loading into it."""

from __future__ import annotations

import io
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import text

from curation.db import make_engine

ADMIN_URL = os.environ.get(
    "CURATION_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
IMAGE_COLUMNS = (
    "id, sha256, phash, width, height, format, byte_size, storage_key, stored_format,"
    " group_id, created_at"
)


def _admin(statement: str) -> None:
    engine = make_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(text(statement))
    engine.dispose()


@contextmanager
def fresh_database() -> Iterator[str]:
    """The URL of a new, empty database, dropped afterwards whatever happens."""
    name = f"curation_bench_{uuid.uuid4().hex[:8]}"
    _admin(f'CREATE DATABASE "{name}"')
    try:
        yield ADMIN_URL.rpartition("/")[0] + f"/{name}"
    finally:
        _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def copy_text(connection: Any, table: str, columns: str, rows: io.StringIO) -> None:
    """COPY tab-separated ``rows`` into ``table`` on a SQLAlchemy connection."""
    raw = connection.connection.driver_connection
    with raw.cursor() as cursor, cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
        rows.seek(0)
        while chunk := rows.read(1 << 20):
            copy.write(chunk)


def image_rows(n: int, *, group_id: int = 1) -> io.StringIO:
    """Tab-separated rows of images 1..n (distinct hashes, one group), for ``copy_text``."""
    buffer = io.StringIO()
    for i in range(1, n + 1):
        sha = f"{i:064x}"
        buffer.write(
            f"{i}\t{sha}\t{i}\t640\t480\tjpeg\t1000\t{sha[:2]}/{sha[2:4]}/{sha}.jpg\tjpeg"
            f"\t{group_id}\t2026-01-01\n"
        )
    return buffer
