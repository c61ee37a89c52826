"""Snapshot and diff time, and memory, for dataset versions of 10k, 100k and 1M items.

Synthetic rows in a fresh PostgreSQL database for each size (COPY-loaded:
images in near-duplicate groups of 1 to 4, one label each over 300 classes,
a third with boxes). Timed, each in the same process:

* ``first_snapshot_s``: v1 from nothing (every entry written: a checkpoint);
* ``second_snapshot_s``: v2 after 1% of the labels changed and 1% new images
  arrived (only the changes written);
* ``diff_s``: v1 against v2, both read whole and compared;
* ``peak_rss_mb``: the process's peak resident memory over the whole run
  (each size runs in its own process, so sizes do not share a peak).

    .venv/bin/python bench/datasets.py --sizes 10000 100000 1000000
"""

from __future__ import annotations

import _path  # noqa: F401 (first: keeps bench/queue.py from shadowing the stdlib)

# isort: split

import argparse
import io
import json
import multiprocessing
import resource
import time
from typing import Any

import numpy as np
from _postgres import IMAGE_COLUMNS, copy_text, fresh_database
from _report import source_info
from sqlalchemy import text

from curation import migrate
from curation.db import make_engine, make_session_factory
from datasets.diff import diff_versions
from datasets.versions import find_version, snapshot

N_CLASSES = 300
LABEL_COLUMNS = (
    "id, image_id, verdict, class_id, box_x_min, box_y_min, box_x_max, box_y_max,"
    " author_id, origin, supersedes_id, created_at"
)


def _load(connection: Any, n: int, rng: np.random.Generator) -> None:
    connection.execute(
        text(
            "INSERT INTO landmark_classes (id, slug, display_name, status, created_at)"
            " SELECT g, 'class-' || g, 'Class ' || g, 'active', now()"
            f" FROM generate_series(1, {N_CLASSES}) g"
        )
    )
    sizes = rng.integers(1, 5, size=n)
    group_of = np.repeat(np.arange(1, n + 1), sizes)[:n]
    n_groups = int(group_of.max())
    connection.execute(
        text(
            "INSERT INTO near_duplicate_groups (id, created_at)"
            f" SELECT g, now() FROM generate_series(1, {n_groups}) g"
        )
    )
    images = io.StringIO()
    for i, group in enumerate(group_of.tolist(), start=1):
        sha = f"{i:064x}"
        images.write(
            f"{i}\t{sha}\t{i}\t640\t480\tjpeg\t1000\t{sha[:2]}/{sha[2:4]}/{sha}.jpg\tjpeg"
            f"\t{group}\t2026-01-01\n"
        )
    copy_text(connection, "images", IMAGE_COLUMNS, images)
    classes = rng.integers(1, N_CLASSES + 1, size=n_groups + 1)[group_of]
    _copy_labels(connection, np.arange(1, n + 1), classes, rng, first_id=1)


def _copy_labels(
    connection: Any,
    image_ids: np.ndarray,
    classes: np.ndarray,
    rng: np.random.Generator,
    *,
    first_id: int,
    supersedes: np.ndarray | None = None,
) -> None:
    boxed = rng.random(len(image_ids)) < 0.33
    rows = io.StringIO()
    for k, (image_id, class_id) in enumerate(
        zip(image_ids.tolist(), classes.tolist(), strict=True)
    ):
        box = "10\t20\t300\t400" if boxed[k] else "\\N\t\\N\t\\N\t\\N"
        previous = "\\N" if supersedes is None else str(int(supersedes[k]))
        rows.write(
            f"{first_id + k}\t{image_id}\tlandmark\t{class_id}\t{box}\t\\N\tbench"
            f"\t{previous}\t2026-01-01\n"
        )
    copy_text(connection, "labels", LABEL_COLUMNS, rows)


def _change(connection: Any, n: int, rng: np.random.Generator) -> None:
    """Relabel 1% of the images and add 1% new ones (each in a new group)."""
    k = max(1, n // 100)
    head = int(connection.execute(text("SELECT max(id) FROM labels")).scalar_one())
    relabel = np.sort(rng.choice(np.arange(1, n + 1), size=k, replace=False))
    # Image i's only label is label i (loaded in order).
    _copy_labels(
        connection,
        relabel,
        rng.integers(1, N_CLASSES + 1, size=k),
        rng,
        first_id=head + 1,
        supersedes=relabel,
    )
    groups = int(connection.execute(text("SELECT max(id) FROM near_duplicate_groups")).scalar_one())
    connection.execute(
        text(
            "INSERT INTO near_duplicate_groups (id, created_at)"
            f" SELECT g, now() FROM generate_series({groups + 1}, {groups + k}) g"
        )
    )
    images = io.StringIO()
    for j in range(k):
        i, group = n + 1 + j, groups + 1 + j
        sha = f"{i:064x}"
        images.write(
            f"{i}\t{sha}\t{i}\t640\t480\tjpeg\t1000\t{sha[:2]}/{sha[2:4]}/{sha}.jpg\tjpeg"
            f"\t{group}\t2026-01-01\n"
        )
    copy_text(connection, "images", IMAGE_COLUMNS, images)
    _copy_labels(
        connection,
        np.arange(n + 1, n + k + 1),
        rng.integers(1, N_CLASSES + 1, size=k),
        rng,
        first_id=head + k + 1,
    )


def _one_size(n: int, results: Any) -> None:
    rng = np.random.default_rng(n)
    out: dict[str, Any] = {"items": n}
    with fresh_database() as url:
        migrate.upgrade(url)
        engine = make_engine(url)
        factory = make_session_factory(engine)
        started = time.perf_counter()
        with engine.begin() as connection:
            _load(connection, n, rng)
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(text("VACUUM ANALYZE"))
        out["setup_s"] = round(time.perf_counter() - started, 1)

        started = time.perf_counter()
        with factory() as session, session.begin():
            first = snapshot(session, author="bench", message="first")
        out["first_snapshot_s"] = round(time.perf_counter() - started, 2)
        out["first_snapshot_phases_s"] = first.timings

        with engine.begin() as connection:
            _change(connection, n, rng)
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(text("VACUUM ANALYZE"))
        started = time.perf_counter()
        with factory() as session, session.begin():
            second = snapshot(session, author="bench", message="1% relabelled, 1% added")
        out["second_snapshot_s"] = round(time.perf_counter() - started, 2)
        out["second_snapshot_phases_s"] = second.timings
        out["second_snapshot"] = {
            "added": second.added,
            "changed": second.changed,
            "held_back": len(second.held_back),
            "stored_as": "checkpoint" if second.version.is_full else "changes",
        }
        with engine.connect() as connection:
            out["entry_rows"] = {
                f"v{number}": count
                for number, count in connection.execute(
                    text(
                        "SELECT v.number, count(e.image_id) FROM dataset_versions v"
                        " LEFT JOIN dataset_entries e ON e.version_id = v.id"
                        " GROUP BY v.number ORDER BY v.number"
                    )
                )
            }

        started = time.perf_counter()
        with factory() as session:
            difference = diff_versions(
                session, find_version(session, "v1"), find_version(session, "v2")
            )
        out["diff_s"] = round(time.perf_counter() - started, 2)
        out["diff_counts"] = difference.as_dict()["counts"]
        engine.dispose()
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    results.put(out)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    args = parser.parse_args()
    context = multiprocessing.get_context("spawn")
    runs = []
    for n in args.sizes:
        results = context.Queue()
        process = context.Process(target=_one_size, args=(n, results))
        process.start()
        runs.append(results.get())
        process.join()
    report = {
        "benchmark": "bench/datasets.py",
        "source": source_info(),
        "targets": {"snapshot_1m_s": 30, "diff_1m_s": 10},
        "runs": runs,
    }
    million = [r for r in runs if r["items"] == 1_000_000]
    if million:
        report["snapshot_1m_under_30s"] = (
            max(million[0]["first_snapshot_s"], million[0]["second_snapshot_s"]) < 30
        )
        report["diff_1m_under_10s"] = million[0]["diff_s"] < 10
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
