"""Benchmark: ingestion rate on real photos, and near-duplicate lookup time.

    .venv/bin/python bench/ingest.py [--data DIR] [--repeat 3] [--probes 200] [--seed 0]

Prints one JSON object on stdout (progress goes to stderr):

* ``ingest``: images per second ingesting ``wonders7`` (a labelled tree) and
  ``crawl13`` (a crawl) from the shared data folder into a fresh, migrated
  SQLite database, with one decode process per core (``ingest_workers=0``)
  and with one process (``ingest_workers=1``). A folder that is absent is
  skipped with a note. The photos are only read from where they lie.
* ``neardup``: milliseconds per :meth:`NearDuplicateIndex.matching_image_ids`
  call (``max_distance=6``) against 10k, 100k and 1M random stored hashes,
  with planted near matches checked for correctness.
* ``machine``: CPU count, Python and library versions.

A plot of lookup time against the number of stored hashes goes to
``bench/out/ingest_neardup.png`` when matplotlib is importable (it is not a
project dependency; without it the plot is skipped with a note).
"""

from __future__ import annotations

import _path  # noqa: F401 (first: keeps bench/queue.py from shadowing the stdlib)

# isort: split

import argparse
import itertools
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from _report import cpu_model, source_info
from numpy.typing import NDArray

from curation import migrate
from curation.ingest.folders import crawl_items, labelled_tree_items
from curation.ingest.records import IngestItem, IngestSummary
from curation.ingest.runner import IngestRunner
from curation.neardup import NearDuplicateIndex
from curation.runtime import build_runtime
from curation.settings import Settings

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = Path(os.environ.get("CURATION_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
PLOT_PATH = REPO_ROOT / "bench" / "out" / "ingest_neardup.png"
SIZES = (10_000, 100_000, 1_000_000)
MAX_DISTANCE = 6
TARGET_MS_AT_1M = 5.0
PLANTED = 20  # stored hashes with 3 bits flipped (must be found) and 7 (must not)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- ingestion ----------------------------------------------------------------


def bench_settings(data_dir: Path, database_url: str, **overrides: Any) -> Settings:
    """Like tests/conftest.py ``make_settings``: test environment, in-memory broker."""
    data_dir.mkdir(parents=True, exist_ok=True)
    settings = Settings(
        environment="test",
        data_dir=data_dir,
        database_url=database_url,
        broker_url="memory://",
        result_backend="cache+memory://",
        secret_key="bench-secret",
        ingest_workers=0,
        ingest_commit_every=64,
    )
    return replace(settings, **overrides)


ItemsFactory = Callable[[Path, IngestSummary], Iterator[IngestItem]]

DATASETS: dict[str, tuple[str, ItemsFactory]] = {
    "wonders7": (
        "labelled tree",
        lambda root, summary: labelled_tree_items(root, dataset_name=root.name, summary=summary),
    ),
    "crawl13": (
        "crawl",
        lambda root, summary: crawl_items(root, crawler="bench", manifest=None, summary=summary),
    ),
}


def warm_page_cache(root: Path) -> int:
    """Read every file once, so that each timed run reads from memory, not the disk."""
    total = 0
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            total += len(path.read_bytes())
    return total


def ingest_once(
    root: Path, items: ItemsFactory, *, workers: int, limit: int | None = None
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="curation-bench-") as tmp:
        database = Path(tmp) / "curation.db"
        url = f"sqlite:///{database}"
        migrate.upgrade(url)
        settings = bench_settings(Path(tmp) / "var", url, ingest_workers=workers)
        runtime = build_runtime(settings)
        try:
            runner = IngestRunner(runtime.factory, runtime.store, settings)
            summary = IngestSummary()
            started = time.perf_counter()
            source = itertools.islice(items(root, summary), limit)
            runner.run(source, actor="bench", action="bench.ingest", summary=summary)
            wall = time.perf_counter() - started
        finally:
            runtime.dispose()
    effective = workers or os.cpu_count() or 1
    return {
        "ingest_workers": workers,
        "decode_processes": effective,
        "files": summary.files,
        "seconds": round(wall, 3),
        "images_per_s": round(summary.files / wall, 1) if wall > 0 else None,
        "ingested": summary.ingested,
        "exact_duplicates": summary.exact_duplicates,
        "near_duplicates": summary.near_duplicates,
        "rejected": len(summary.rejected),
    }


def ingest_timed(root: Path, items: ItemsFactory, *, workers: int, repeat: int) -> dict[str, Any]:
    """The median of ``repeat`` runs, each into its own fresh database."""
    runs = []
    for attempt in range(repeat):
        runs.append(ingest_once(root, items, workers=workers))
        log(f"  run {attempt + 1}/{repeat}: {runs[-1]['files']} files in {runs[-1]['seconds']} s")
    seconds = sorted(run["seconds"] for run in runs)
    median = runs[[run["seconds"] for run in runs].index(seconds[len(seconds) // 2])]
    return median | {"runs_s": [run["seconds"] for run in runs]}


def bench_ingest(data: Path, repeat: int) -> dict[str, Any]:
    results: dict[str, Any] = {
        "data_dir": str(data),
        "database": "SQLite (fresh file, migrated to head, per run)",
        "commit_every": 64,
        "near_duplicate_max_distance": Settings.near_duplicate_max_distance,
        "repeat": repeat,
        "note": (
            "files read once before timing (warm page cache) and one untimed warm-up ingest "
            "of 64 files first; figures are the median run; images_per_s counts every file "
            "(rejected ones included); seconds = IngestRunner.run wall time, process-pool "
            "start-up and the final audit commit included"
        ),
    }
    warmed = False
    for name, (kind, items) in DATASETS.items():
        root = data / name
        if not root.is_dir():
            results[name] = {"skipped": f"{root} is absent"}
            log(f"ingest: {root} absent, skipped")
            continue
        size = warm_page_cache(root)
        if not warmed:  # imports, SQLAlchemy statement caches, first fork
            ingest_once(root, items, workers=0, limit=64)
            warmed = True
        entry: dict[str, Any] = {"kind": kind, "bytes": size}
        for label, workers in (("all_cores", 0), ("one_worker", 1)):
            log(f"ingest: {name} with ingest_workers={workers} ...")
            entry[label] = ingest_timed(root, items, workers=workers, repeat=repeat)
        one = entry["one_worker"]["images_per_s"]
        entry["speedup_all_cores_vs_one"] = (
            round(entry["all_cores"]["images_per_s"] / one, 2) if one else None
        )
        results[name] = entry
    return results


# --- near-duplicate lookup ----------------------------------------------------


def random_hashes(rng: np.random.Generator, count: int) -> NDArray[np.uint64]:
    return rng.integers(0, np.iinfo(np.uint64).max, size=count, dtype=np.uint64, endpoint=True)


def flip_bits(rng: np.random.Generator, value: int, bits: int) -> int:
    for bit in rng.choice(64, size=bits, replace=False):
        value ^= 1 << int(bit)
    return value


def summarise_ms(samples_ns: list[int]) -> dict[str, float]:
    ms = np.array(samples_ns, dtype=np.float64) / 1e6
    return {
        "mean_ms": round(float(ms.mean()), 4),
        "p50_ms": round(float(np.percentile(ms, 50)), 4),
        "p99_ms": round(float(np.percentile(ms, 99)), 4),
        "min_ms": round(float(ms.min()), 4),
        "max_ms": round(float(ms.max()), 4),
    }


def brute_force(stored: list[int], probe: int) -> list[int]:
    """Pure-Python reference: 1-based ids of stored hashes within MAX_DISTANCE bits."""
    return [i + 1 for i, value in enumerate(stored) if (value ^ probe).bit_count() <= MAX_DISTANCE]


def bench_size(rng: np.random.Generator, size: int, probes: int) -> dict[str, Any]:
    hashes = random_hashes(rng, size)
    ids = np.arange(1, size + 1, dtype=np.int64)
    started = time.perf_counter()
    index = NearDuplicateIndex.from_arrays(hashes, ids)
    build_s = time.perf_counter() - started

    random_probes = [int(v) for v in random_hashes(rng, probes)]
    planted_at = rng.choice(size, size=PLANTED, replace=False)
    near = [(int(i) + 1, flip_bits(rng, int(hashes[i]), 3)) for i in planted_at]
    far = [(int(i) + 1, flip_bits(rng, int(hashes[i]), MAX_DISTANCE + 1)) for i in planted_at]

    for probe in random_probes[:10]:  # warm-up: first-touch page faults, caches
        index.matching_image_ids(probe, max_distance=MAX_DISTANCE)

    samples: list[int] = []
    random_results: list[list[int]] = []
    for probe in random_probes:
        t0 = time.perf_counter_ns()
        found = index.matching_image_ids(probe, max_distance=MAX_DISTANCE)
        samples.append(time.perf_counter_ns() - t0)
        random_results.append(found)

    near_found = sum(
        image_id in index.matching_image_ids(p, max_distance=MAX_DISTANCE) for image_id, p in near
    )
    far_found = sum(
        image_id in index.matching_image_ids(p, max_distance=MAX_DISTANCE) for image_id, p in far
    )
    checks: dict[str, Any] = {
        "planted_3_bits_found": f"{near_found}/{len(near)}",
        "planted_7_bits_wrongly_found": f"{far_found}/{len(far)}",
        "random_probe_matches": sum(len(r) for r in random_results),
    }
    ok = near_found == len(near) and far_found == 0
    if size <= 10_000:  # cross-check every random probe against pure Python
        stored = [int(v) for v in hashes]
        agree = sum(
            sorted(found) == brute_force(stored, probe)
            for found, probe in zip(random_results, random_probes, strict=True)
        )
        checks["agrees_with_pure_python"] = f"{agree}/{len(random_probes)}"
        ok = ok and agree == len(random_probes)
    return {
        "stored_hashes": size,
        "probes": len(samples),
        "build_s": round(build_s, 4),
        "stored_mib": round(hashes.nbytes / 2**20, 2),
        **summarise_ms(samples),
        "checks": checks,
        "correct": bool(ok),
    }


def bench_neardup(probes: int, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    by_size = []
    for size in SIZES:
        log(f"neardup: {size:,} stored hashes, {probes} probes ...")
        by_size.append(bench_size(rng, size, probes))
        log(f"  mean {by_size[-1]['mean_ms']} ms, p99 {by_size[-1]['p99_ms']} ms")
    at_1m = next(r for r in by_size if r["stored_hashes"] == 1_000_000)
    met = at_1m["mean_ms"] < TARGET_MS_AT_1M and at_1m["p99_ms"] < TARGET_MS_AT_1M
    return {
        "max_distance": MAX_DISTANCE,
        "method": "NearDuplicateIndex.matching_image_ids, one probe a call, random uint64",
        "seed": seed,
        "note": (
            "each lookup scans every stored hash (XOR + popcount), so its cost does not "
            "depend on max_distance; planted: 20 stored hashes with 3 bits flipped (must "
            "match) and with 7 bits flipped (must not)"
        ),
        "results": by_size,
        "target": {
            "stored_hashes": 1_000_000,
            "max_ms_per_lookup": TARGET_MS_AT_1M,
            "measured_mean_ms": at_1m["mean_ms"],
            "measured_p99_ms": at_1m["p99_ms"],
            "met": met,
        },
    }


# --- report -------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    import PIL
    import sqlalchemy

    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "cpu_count": os.cpu_count(),
        "cpus_usable": affinity,
        "cpu_model": cpu_model(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "pillow": PIL.__version__,
        "sqlalchemy": sqlalchemy.__version__,
    }


def plot(neardup: dict[str, Any]) -> dict[str, Any]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return {"skipped": "matplotlib is not importable (pip install matplotlib to get the plot)"}
    rows = neardup["results"]
    sizes = [r["stored_hashes"] for r in rows]
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    ax.plot(sizes, [r["mean_ms"] for r in rows], "o-", label="mean")
    ax.plot(sizes, [r["p50_ms"] for r in rows], "s--", label="p50")
    ax.plot(sizes, [r["p99_ms"] for r in rows], "^:", label="p99")
    ax.axhline(TARGET_MS_AT_1M, color="grey", linewidth=0.8, label=f"target {TARGET_MS_AT_1M:g} ms")
    ax.set_xscale("log")
    ax.set_xlabel("stored hashes")
    ax.set_ylabel("ms per lookup")
    ax.set_title(f"Near-duplicate lookup (Hamming <= {MAX_DISTANCE}, {os.cpu_count()} CPUs)")
    ax.grid(True, which="both", linewidth=0.3)
    ax.legend()
    fig.tight_layout()
    PLOT_PATH.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(PLOT_PATH)
    plt.close(fig)
    return {"path": str(PLOT_PATH)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the shared data folder")
    parser.add_argument("--probes", type=int, default=200, help="random probes per index size")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=3, help="timed ingest runs per setting")
    parser.add_argument("--skip-ingest", action="store_true", help="only the lookup benchmark")
    args = parser.parse_args(argv)

    report: dict[str, Any] = {
        "benchmark": "bench/ingest.py",
        "source": source_info(),
        "machine": machine_info(),
    }
    if args.skip_ingest:
        report["ingest"] = {"skipped": "--skip-ingest"}
    elif not args.data.is_dir():
        report["ingest"] = {"skipped": f"{args.data} is absent: no real photos to ingest"}
    else:
        report["ingest"] = bench_ingest(args.data, max(1, args.repeat))
    report["neardup"] = bench_neardup(args.probes, args.seed)
    report["plot"] = plot(report["neardup"])
    print(json.dumps(report, indent=2))
    correct = all(r["correct"] for r in report["neardup"]["results"])
    return 0 if correct else 1


if __name__ == "__main__":
    sys.exit(main())
