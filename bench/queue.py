"""Claim-and-decide latency and throughput with concurrent reviewers.

PostgreSQL: N pending items (COPY-loaded into a fresh database, one ranking),
16 reviewer threads each claiming the next item and deciding it ("not a
landmark") in a loop for --seconds; SQLite: the same with 4 threads. Every
item must be claimed exactly once. Prints JSON.

    .venv/bin/python bench/queue.py --n 1000000 --seconds 30
"""

from __future__ import annotations

import _path  # noqa: F401 (first: keeps bench/queue.py from shadowing the stdlib)

# isort: split

import argparse
import json
import tempfile
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from _postgres import IMAGE_COLUMNS, copy_text, fresh_database, image_rows
from sqlalchemy import text

from curation import migrate
from curation.accounts import create_user
from curation.db import make_engine, make_session_factory
from curation.learning import bulk_write
from curation.models import COLD_START_STRATEGY, User
from curation.review.claims import claim_next
from curation.review.decisions import DecisionRequest, decide

LEASE = timedelta(minutes=10)


def _load_images(session, n: int) -> None:
    connection = session.connection()
    connection.execute(
        text("INSERT INTO near_duplicate_groups (id, created_at) VALUES (1, '2026-01-01')")
    )
    if connection.dialect.name != "postgresql":
        connection.execute(
            text(
                "INSERT INTO images (id, sha256, phash, width, height, format, byte_size,"
                " storage_key, stored_format, group_id, created_at)"
                " VALUES (:i, :sha, :i, 640, 480, 'jpeg', 1000, :sha, 'jpeg', 1, '2026-01-01')"
            ),
            [{"i": i, "sha": f"{i:064x}"} for i in range(1, n + 1)],
        )
        return
    copy_text(connection, "images", IMAGE_COLUMNS, image_rows(n))


def _setup(url: str, n: int, reviewers: int) -> list[User]:
    migrate.upgrade(url)
    engine = make_engine(url)
    factory = make_session_factory(engine)
    with factory() as session, session.begin():
        _load_images(session, n)
        ids = np.arange(1, n + 1, dtype=np.int64)
        rng = np.random.default_rng(0)
        bulk_write.write_ranking(
            session,
            bulk_write.RankingRows(
                ranking=0,
                image_ids=ids,
                priority=rng.random(n),
                strategy=np.full(n, COLD_START_STRATEGY),
            ),
        )
        bulk_write.open_items(session, ids, datetime.now(UTC))
        users = [
            create_user(
                session,
                username=f"reviewer{k}",
                password="bench password",
                role="reviewer",
                actor="bench",
            )
            for k in range(reviewers)
        ]
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(text("VACUUM ANALYZE"))
    engine.dispose()
    return users


def _run(url: str, users: list[User], seconds: float) -> dict[str, object]:
    engine = make_engine(url, pool_size=len(users) + 2)
    factory = make_session_factory(engine)
    claim_ms: list[float] = []
    decide_ms: list[float] = []
    claimed: list[int] = []
    lock = threading.Lock()
    stop = time.perf_counter() + seconds
    request = DecisionRequest.parse({"action": "not_landmark"})

    def reviewer(user: User) -> None:
        mine_claim, mine_decide, mine_items = [], [], []
        while time.perf_counter() < stop:
            started = time.perf_counter()
            with factory() as session, session.begin():
                item = claim_next(session, user, lease=LEASE, now=datetime.now(UTC))
                item_id = item.id if item is not None else None
            claimed_at = time.perf_counter()
            if item_id is None:
                break
            with factory() as session, session.begin():
                decide(session, user, item_id, request, consensus="off", now=datetime.now(UTC))
            done = time.perf_counter()
            mine_claim.append((claimed_at - started) * 1000)
            mine_decide.append((done - claimed_at) * 1000)
            mine_items.append(item_id)
        with lock:
            claim_ms.extend(mine_claim)
            decide_ms.extend(mine_decide)
            claimed.extend(mine_items)

    threads = [threading.Thread(target=reviewer, args=(u,)) for u in users]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    with engine.connect() as connection:
        decided = Counter(
            row[0]
            for row in connection.execute(
                text("SELECT item_id FROM review_decisions WHERE undone_at IS NULL")
            )
        )
        done = connection.execute(
            text("SELECT count(*) FROM queue_items WHERE status = 'done'")
        ).scalar()
    engine.dispose()
    counts = Counter(claimed)
    both = np.asarray(claim_ms) + np.asarray(decide_ms)

    def pct(values: np.ndarray | list[float], q: float) -> float:
        return round(float(np.percentile(values, q)), 2) if len(values) else 0.0

    return {
        "claimers": len(users),
        "seconds": round(elapsed, 1),
        "decisions": len(claimed),
        "decisions_per_s": round(len(claimed) / elapsed, 1),
        "claim_ms": {f"p{q}": pct(claim_ms, q) for q in (50, 95, 99)},
        "decide_ms": {f"p{q}": pct(decide_ms, q) for q in (50, 95, 99)},
        "claim_and_decide_ms": {f"p{q}": pct(both, q) for q in (50, 95, 99)},
        "claimed_twice": sum(1 for c in counts.values() if c > 1),
        "decided_twice": sum(1 for c in decided.values() if c > 1),
        "done_items_match": done == len(claimed),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=1_000_000, help="pending items on PostgreSQL")
    parser.add_argument("--sqlite-n", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    results: dict[str, object] = {"benchmark": "bench/queue.py"}

    with fresh_database() as url:
        started = time.perf_counter()
        users = _setup(url, args.n, 16)
        postgres = {"items": args.n, "setup_s": round(time.perf_counter() - started, 1)}
        postgres |= _run(url, users, args.seconds)
        postgres["p99_claim_under_25ms"] = postgres["claim_ms"]["p99"] < 25  # type: ignore[index]
        results["postgresql"] = postgres

    folder = Path(tempfile.mkdtemp(prefix="queue-bench-"))
    sqlite_url = f"sqlite:///{folder / 'bench.db'}"
    users = _setup(sqlite_url, args.sqlite_n, 4)
    results["sqlite"] = {"items": args.sqlite_n} | _run(sqlite_url, users, args.seconds)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
