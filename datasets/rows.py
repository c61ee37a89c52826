"""Reading many rows as arrays: binary COPY on PostgreSQL, a plain fetch elsewhere.

Boxes travel as integers in 1/100 px (-1 for none) so every column is a
non-null int8 and a million rows decode with one ``numpy.frombuffer``.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import text
from sqlalchemy.orm import Session

from curation.pgcopy import copy_out_ints

BOX_SCALE = 100.0
NO_BOX = -1


def box_columns(prefix: str) -> str:
    """SQL selecting a box's corners as int8 centi-pixels, -1 where there is no box."""
    return ", ".join(
        f"CAST(COALESCE(ROUND({prefix}box_{corner} * 100), -1) AS BIGINT)"
        for corner in ("x_min", "y_min", "x_max", "y_max")
    )


def int_rows(session: Session, query: str, n_columns: int) -> NDArray[np.int64]:
    """The rows of ``query`` (all columns integer, non-null) as an (n, n_columns) array."""
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        raw = connection.connection.driver_connection
        with raw.cursor() as cursor:  # type: ignore[union-attr]
            return copy_out_ints(cursor, query, n_columns)
    rows = connection.execute(text(query)).all()
    if not rows:
        return np.zeros((0, n_columns), dtype=np.int64)
    return np.asarray(rows, dtype=np.int64).reshape(len(rows), n_columns)


def boxes_from_ints(columns: NDArray[np.int64]) -> NDArray[np.float64]:
    """(n, 4) centi-pixel ints -> (n, 4) pixels, NaN rows where there was no box."""
    boxes = columns.astype(np.float64) / BOX_SCALE
    boxes[columns[:, 0] == NO_BOX] = np.nan
    return boxes


def boxes_to_ints(boxes: NDArray[np.float64]) -> NDArray[np.int64]:
    ints = np.where(np.isnan(boxes), NO_BOX, np.round(boxes * BOX_SCALE))
    return ints.astype(np.int64)
