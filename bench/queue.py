"""Claim-and-decide latency and throughput with concurrent reviewers.

PostgreSQL: N pending items (COPY-loaded into a fresh database, one ranking)
and 16 reviewers; SQLite: the same with 4. Each reviewer is its own process
with its own connection, as behind a pre-forking web server (threads in one
process would measure the GIL, not the database). A reviewer claims the next
item and decides it ("not a landmark") in a loop, in two runs of --seconds:

* saturated: no pause between items, for throughput. With more claimers than
  cores, latency there is mostly waiting for a CPU (Little's law).
* paced: each reviewer starts an item every --pause seconds on a fixed
  schedule (16 reviewers at the default 1 s is 16 items a second, several
  times what a team of 16 people labels), for the latency of a claim under
  concurrent load below saturation.

Every item must be claimed and decided exactly once. Prints JSON.

    .venv/bin/python bench/queue.py --n 1000000 --seconds 30
"""

from __future__ import annotations

import _path  # noqa: F401 (first: keeps bench/queue.py from shadowing the stdlib)

# isort: split

import argparse
import json
import multiprocessing
import os
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

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


def _setup(url: str, n: int, reviewers: int) -> list[int]:
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
    return [user.id for user in users]


def _claimer(
    url: str,
    user_id: int,
    start_at: float,
    stop_at: float,
    pause_s: float,
    phase_s: float,
    results: Any,
) -> None:
    """One reviewer in its own process (as behind gunicorn): claim, decide, repeat."""
    engine = make_engine(url, pool_size=1, max_overflow=0)
    factory = make_session_factory(engine)
    with factory() as session:
        user = session.get(User, user_id)
        assert user is not None
        session.expunge(user)
    request = DecisionRequest.parse({"action": "not_landmark"})
    # Open the connection before the clock starts, as a pooled server would have.
    with factory() as session:
        session.execute(text("SELECT 1"))
    claim_ms: list[float] = []
    decide_ms: list[float] = []
    claimed: list[int] = []
    # Reviewers are not in step: each starts at its own point of the period
    # (all claiming at the same instant would measure a burst, not a load).
    time.sleep(max(0.0, start_at + phase_s - time.time()))
    next_at = time.perf_counter()
    while time.time() < stop_at:
        if pause_s:
            # Paced: a fixed schedule per reviewer, so a slow claim is not hidden
            # by the pause that follows it (no coordinated omission).
            next_at += pause_s
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
        claim_ms.append((claimed_at - started) * 1000)
        decide_ms.append((done - claimed_at) * 1000)
        claimed.append(item_id)
        if pause_s:
            time.sleep(max(0.0, next_at - time.perf_counter()))
    engine.dispose()
    results.put((claim_ms, decide_ms, claimed))


def _done_count(url: str) -> int:
    engine = make_engine(url)
    with engine.connect() as connection:
        done = connection.execute(
            text("SELECT count(*) FROM queue_items WHERE status = 'done'")
        ).scalar_one()
    engine.dispose()
    return int(done)


def _run(url: str, users: list[int], seconds: float, pause_s: float) -> dict[str, object]:
    done_before = _done_count(url)
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    start_at = time.time() + 3.0  # every process connected and waiting
    stop_at = start_at + seconds
    processes = [
        context.Process(
            target=_claimer,
            args=(url, user, start_at, stop_at, pause_s, pause_s * k / len(users), results),
        )
        for k, user in enumerate(users)
    ]
    for process in processes:
        process.start()
    claim_ms: list[float] = []
    decide_ms: list[float] = []
    claimed: list[int] = []
    for _ in processes:
        mine_claim, mine_decide, mine_items = results.get()
        claim_ms += mine_claim
        decide_ms += mine_decide
        claimed += mine_items
    for process in processes:
        process.join()
    elapsed = seconds
    engine = make_engine(url)
    with engine.connect() as connection:
        decided = Counter(
            row[0]
            for row in connection.execute(
                text("SELECT item_id FROM review_decisions WHERE undone_at IS NULL")
            )
        )
    engine.dispose()
    done = _done_count(url) - done_before
    counts = Counter(claimed)
    both = np.asarray(claim_ms) + np.asarray(decide_ms)

    def pct(values: np.ndarray | list[float], q: float) -> float:
        return round(float(np.percentile(values, q)), 2) if len(values) else 0.0

    return {
        "claimers": len(users),
        "processes": len(users),
        "pause_between_claims_s": pause_s,
        "seconds": round(elapsed, 1),
        "decisions": len(claimed),
        "decisions_per_s": round(len(claimed) / elapsed, 1),
        "claim_ms": {f"p{q}": pct(claim_ms, q) for q in (50, 95, 99)} | {"max": pct(claim_ms, 100)},
        "decide_ms": {f"p{q}": pct(decide_ms, q) for q in (50, 95, 99)},
        "claim_and_decide_ms": {f"p{q}": pct(both, q) for q in (50, 95, 99)},
        "claimed_twice": sum(1 for c in counts.values() if c > 1),
        "decided_twice": sum(1 for c in decided.values() if c > 1),
        "done_items_match": done == len(claimed),
    }


def _measure(url: str, users: list[int], args: argparse.Namespace) -> dict[str, object]:
    """A saturated run (no pause: throughput), then a paced one (latency at a steady load)."""
    return {
        "saturated": _run(url, users, args.seconds, 0.0),
        "paced": _run(url, users, args.seconds, args.pause),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=1_000_000, help="pending items on PostgreSQL")
    parser.add_argument("--sqlite-n", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each run")
    parser.add_argument(
        "--pause",
        type=float,
        default=1.0,
        help="paced run: each claimer starts a claim every PAUSE seconds",
    )
    args = parser.parse_args()
    results: dict[str, object] = {"benchmark": "bench/queue.py", "cpus": os.cpu_count()}

    with fresh_database() as url:
        started = time.perf_counter()
        users = _setup(url, args.n, 16)
        postgres: dict[str, Any] = {
            "items": args.n,
            "setup_s": round(time.perf_counter() - started, 1),
        }
        postgres |= _measure(url, users, args)
        postgres["p99_claim_under_25ms"] = {
            run: postgres[run]["claim_ms"]["p99"] < 25 for run in ("saturated", "paced")
        }
        results["postgresql"] = postgres

    folder = Path(tempfile.mkdtemp(prefix="queue-bench-"))
    sqlite_url = f"sqlite:///{folder / 'bench.db'}"
    users = _setup(sqlite_url, args.sqlite_n, 4)
    results["sqlite"] = {"items": args.sqlite_n} | _measure(sqlite_url, users, args)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
