"""PostgreSQL's binary COPY format, built and parsed with numpy.

Scoring writes a million rows at a time. Formatting them as text costs
seconds of Python per million; in the binary format every row with the same
null pattern and the same text values has the same layout, so each such
group is one numpy structured array turned into bytes at once (a handful of
groups per write, whatever the row count).

Format: https://www.postgresql.org/docs/current/sql-copy.html (Binary Format).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
from numpy.typing import NDArray

SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
HEADER = SIGNATURE + struct.pack(">ii", 0, 0)
TRAILER = struct.pack(">h", -1)
_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)

# Scalar types: numpy big-endian dtype on the wire.
_SCALARS = {
    "int2": ">i2",
    "int4": ">i4",
    "int8": ">i8",
    "float4": ">f4",
    "float8": ">f8",
    "timestamptz": ">i8",
}
# Element type oids of the array types we write.
_ARRAYS = {"int4[]": ("int4", 23), "float4[]": ("float4", 700), "float8[]": ("float8", 701)}


@dataclass(frozen=True)
class Column:
    """One column of the rows to write.

    ``values``: an (n,) array, an (n, k) array for an array type, a sequence
    of n strings for ``text``, or one value for every row. ``null``: an (n,)
    boolean mask of the rows where the column is NULL.
    """

    name: str
    pg_type: str
    values: Any
    null: NDArray[np.bool_] | None = None


def microseconds(moment: datetime) -> int:
    """A timezone-aware time as PostgreSQL's binary timestamptz."""
    if moment.tzinfo is None:
        raise ValueError("timestamptz needs a timezone-aware datetime")
    delta = moment - _EPOCH
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


def _column_values(column: Column, n: int) -> Any:
    values = column.values
    if column.pg_type == "timestamptz" and isinstance(values, datetime):
        return np.full(n, microseconds(values), dtype=np.int64)
    if column.pg_type == "text":
        if isinstance(values, str):
            return np.full(n, values)
        if len(values) != n:
            raise ValueError(f"column {column.name}: {len(values)} values for {n} rows")
        return np.asarray(values, dtype=np.str_)
    array = np.asarray(values)
    if array.ndim == 0 or (column.pg_type in _ARRAYS and array.ndim == 1):
        array = np.broadcast_to(array, (n, *array.shape))
    if len(array) != n:
        raise ValueError(f"column {column.name}: {len(array)} values for {n} rows")
    return array


def _group_keys(columns: Sequence[Column], values: list[Any], n: int) -> tuple[Any, list[Any]]:
    """One integer key per row: rows with the same key share a byte layout."""
    key = np.zeros(n, dtype=np.int64)
    codebooks: list[Any] = []
    for column, column_values in zip(columns, values, strict=True):
        if column.null is not None:
            key = key * 2 + np.asarray(column.null, dtype=np.int64)
        if column.pg_type == "text":
            book, codes = np.unique(column_values, return_inverse=True)
            key = key * len(book) + codes.reshape(-1)
            codebooks.append((book, codes.reshape(-1)))
        else:
            codebooks.append(None)
    return key, codebooks


def _group_bytes(
    columns: Sequence[Column], values: list[Any], codebooks: list[Any], rows: NDArray[np.intp]
) -> bytes:
    first = int(rows[0])
    fields: list[Any] = [("count", ">i2")]
    fill: list[tuple[str, Any]] = [("count", len(columns))]
    for j, (column, column_values, book) in enumerate(zip(columns, values, codebooks, strict=True)):
        length = f"l{j}"
        if column.null is not None and bool(column.null[first]):
            fields.append((length, ">i4"))
            fill.append((length, -1))
        elif column.pg_type == "text":
            text = str(book[0][book[1][first]]).encode()
            fields.append((length, ">i4"))
            fill.append((length, len(text)))
            if text:
                fields.append((f"v{j}", f"S{len(text)}"))
                fill.append((f"v{j}", text))
        elif column.pg_type in _SCALARS:
            dtype = _SCALARS[column.pg_type]
            fields += [(length, ">i4"), (f"v{j}", dtype)]
            fill += [(length, np.dtype(dtype).itemsize), (f"v{j}", column_values[rows])]
        elif column.pg_type in _ARRAYS:
            element, oid = _ARRAYS[column.pg_type]
            element_dtype = np.dtype(_SCALARS[element])
            k = column_values.shape[1]
            pair = np.dtype([("l", ">i4"), ("v", element_dtype)])
            fields += [(length, ">i4"), (f"h{j}", ">i4", (5,)), (f"v{j}", pair, (k,))]
            fill += [
                (length, 20 + k * pair.itemsize),
                (f"h{j}", np.asarray([1, 0, oid, k, 1], dtype=np.int32)),
                (f"v{j}.l", element_dtype.itemsize),
                (f"v{j}.v", column_values[rows]),
            ]
        else:
            raise ValueError(f"column {column.name}: unsupported type {column.pg_type}")
    records = np.zeros(len(rows), dtype=np.dtype(fields))
    for name, value in fill:
        if "." in name:
            outer, inner = name.split(".")
            records[outer][inner] = value
        else:
            records[name] = value
    return records.tobytes()


def encode(columns: Sequence[Column], n: int) -> Iterator[bytes]:
    """The binary COPY stream of ``n`` rows: header, row groups, trailer."""
    yield HEADER
    if n:
        values = [_column_values(column, n) for column in columns]
        key, codebooks = _group_keys(columns, values, n)
        order = np.argsort(key, kind="stable")
        boundaries = np.flatnonzero(np.diff(key[order])) + 1
        for rows in np.split(order, boundaries):
            yield _group_bytes(columns, values, codebooks, rows)
    yield TRAILER


def copy_in(cursor: Any, table: str, columns: Sequence[Column], n: int) -> None:
    """``COPY table (columns) FROM STDIN (FORMAT binary)`` on a psycopg cursor."""
    names = ", ".join(column.name for column in columns)
    with cursor.copy(f"COPY {table} ({names}) FROM STDIN (FORMAT binary)") as copy:
        for chunk in encode(columns, n):
            copy.write(chunk)


def copy_out_ints(cursor: Any, query: str, n_columns: int) -> NDArray[np.int64]:
    """The rows of ``query``, whose columns are all non-null int8, as an (n, n_columns) array."""
    chunks = []
    with cursor.copy(f"COPY ({query}) TO STDOUT (FORMAT binary)") as copy:
        for chunk in copy:
            chunks.append(bytes(chunk))
    data = b"".join(chunks)
    if not data.startswith(SIGNATURE):
        raise ValueError("not a binary COPY stream")
    (extension,) = struct.unpack(">i", data[15:19])
    body = data[19 + extension : -len(TRAILER)]
    record = np.dtype(
        [("count", ">i2")] + [(f"c{j}", [("l", ">i4"), ("v", ">i8")]) for j in range(n_columns)]
    )
    rows = np.frombuffer(body, dtype=record)
    out = np.empty((len(rows), n_columns), dtype=np.int64)
    for j in range(n_columns):
        if len(rows) and not np.all(rows[f"c{j}"]["l"] == 8):
            raise ValueError(f"column {j} is not a non-null int8")
        out[:, j] = rows[f"c{j}"]["v"]
    return out
