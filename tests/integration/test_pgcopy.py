"""The binary COPY encoder and decoder against a real PostgreSQL server."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import psycopg
import pytest

from curation import pgcopy

pytestmark = pytest.mark.postgres


def _connect(empty_pg_url: str) -> psycopg.Connection:
    return psycopg.connect(empty_pg_url.replace("postgresql+psycopg://", "postgresql://"))


def test_rows_written_in_binary_read_back_exactly(empty_pg_url: str) -> None:
    moment = datetime(2026, 11, 23, 9, 30, 15, 123456, tzinfo=UTC)
    with _connect(empty_pg_url) as connection, connection.cursor() as cursor:
        cursor.execute(
            "CREATE TABLE t (a int4, b int8, c float8, d float4, e text,"
            " f int4[], g float4[], h timestamptz)"
        )
        n = 7
        null_c = np.arange(n) % 3 == 0
        columns = [
            pgcopy.Column("a", "int4", np.int32(42)),
            pgcopy.Column("b", "int8", np.arange(n, dtype=np.int64) * 10**10),
            pgcopy.Column("c", "float8", np.linspace(0, 1, n), null=null_c),
            pgcopy.Column("d", "float4", np.full(n, 0.25, dtype=np.float32)),
            pgcopy.Column("e", "text", np.asarray(["x", "", "héllo", "x", "y", "", "x"])),
            pgcopy.Column("f", "int4[]", np.arange(n * 3).reshape(n, 3)),
            pgcopy.Column("g", "float4[]", np.full((n, 2), 1.5, dtype=np.float32)),
            pgcopy.Column("h", "timestamptz", moment),
        ]
        pgcopy.copy_in(cursor, "t", columns, n)
        rows = cursor.execute("SELECT * FROM t ORDER BY b").fetchall()
        ints = pgcopy.copy_out_ints(cursor, "SELECT b, a::int8 FROM t ORDER BY b", 2)
    assert len(rows) == n
    for i, (a, b, c, d, e, f, g, h) in enumerate(rows):
        assert a == 42 and b == i * 10**10
        assert c is None if i % 3 == 0 else c == pytest.approx(i / (n - 1))
        assert d == 0.25
        assert e == ["x", "", "héllo", "x", "y", "", "x"][i]
        assert f == [3 * i, 3 * i + 1, 3 * i + 2]
        assert g == [1.5, 1.5]
        assert h == moment
    np.testing.assert_array_equal(ints[:, 0], np.arange(n) * 10**10)
    np.testing.assert_array_equal(ints[:, 1], 42)


def test_wrong_shapes_and_types_are_refused() -> None:
    with pytest.raises(ValueError, match="3 values for 4 rows"):
        list(pgcopy.encode([pgcopy.Column("a", "int4", np.arange(3))], 4))
    with pytest.raises(ValueError, match="unsupported type"):
        list(pgcopy.encode([pgcopy.Column("a", "json", np.arange(3))], 3))
    with pytest.raises(ValueError, match="timezone-aware"):
        pgcopy.microseconds(datetime(2026, 1, 1))
