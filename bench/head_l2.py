"""Test accuracy of the platform's Keras head under several kernel L2 penalties.

    .venv/bin/python bench/head_l2.py [--data ../shared/data/porto5 ../shared/data/wonders7]
        [--l2 1e-3 1e-2 3e-2] [--splits 8] [--budgets 30 100]

For each labelled folder (embedded once with the backbone, cached), each
split seed holds out a quarter of the images by whole near-duplicate groups
(as ``curation bench al`` does); the head (``train_head``: Adam, class
weights, early stopping) is trained on a random ``--budgets`` sample of the
rest and on all of it, standardised by the whole pool (as the platform's head is
by its space), and measured on the held-out images. Prints one JSON
object: mean test accuracy per folder, L2 and budget ("all" for the whole
pool). The product's ``HEAD_L2`` was chosen from these figures.
"""

from __future__ import annotations

import _path  # noqa: F401 (first: keeps bench/queue.py from shadowing the stdlib)

# isort: split

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
from _report import cpu_model, source_info

from curation.evaluation.folder import group_split, load_under_settings
from curation.learning.head import HEAD_L2, train_head

SHARED = Path(__file__).resolve().parents[2] / "shared"


def measure(
    folder: Path,
    *,
    backbone: str,
    weights: str,
    cache: Path,
    penalties: list[float],
    splits: int,
    budgets: list[int],
) -> dict[str, dict[str, float]]:
    data = load_under_settings(folder, backbone=backbone, weights=weights, cache_dir=cache)
    x, y = data.embeddings, data.labels
    n_classes = int(y.max()) + 1
    result: dict[str, dict[str, float]] = {}
    for l2 in penalties:
        scores: dict[str, list[float]] = {}
        for seed in range(splits):
            test = group_split(data.group_ids, y, test_share=0.25, seed=seed)
            pool = np.flatnonzero(~test)
            sample = np.random.default_rng(seed)
            for budget in [*budgets, None]:
                rows = pool if budget is None else sample.choice(pool, size=budget, replace=False)
                head, _ = train_head(
                    x[rows], y[rows], n_classes=n_classes, reference=x[pool], seed=seed, l2=l2
                )
                correct = head.predict_proba(x[test]).argmax(axis=1) == y[test]
                scores.setdefault(str(budget or "all"), []).append(float(correct.mean()))
        result[f"{l2:g}"] = {key: round(float(np.mean(v)), 4) for key, v in scores.items()}
        print(f"{folder.name} L2 {l2:g}: {result[f'{l2:g}']}", file=sys.stderr, flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data",
        type=Path,
        nargs="+",
        default=[SHARED / "data" / "porto5", SHARED / "data" / "wonders7"],
    )
    parser.add_argument("--l2", type=float, nargs="+", default=[1e-3, 1e-2, 3e-2])
    parser.add_argument("--splits", type=int, default=8)
    parser.add_argument("--budgets", type=int, nargs="*", default=[30, 100])
    parser.add_argument("--backbone", default="mobilenet_0.25")
    parser.add_argument(
        "--weights", default=str(SHARED / "weights" / "mobilenet_2_5_224_tf_no_top.h5")
    )
    parser.add_argument("--cache-dir", type=Path, default=Path("var/cache/evaluation"))
    args = parser.parse_args()
    missing = [str(folder) for folder in args.data if not folder.is_dir()]
    if missing:
        parser.error(f"no such folder: {', '.join(missing)}")
    started = time.monotonic()
    report: dict[str, Any] = {
        "benchmark": "head_l2",
        "product_l2": HEAD_L2,
        "splits": args.splits,
        "backbone": args.backbone,
        "accuracy": {
            folder.name: measure(
                folder,
                backbone=args.backbone,
                weights=args.weights,
                cache=args.cache_dir,
                penalties=args.l2,
                splits=args.splits,
                budgets=args.budgets,
            )
            for folder in args.data
        },
        "seconds": round(time.monotonic() - started, 1),
        "cpu": cpu_model(),
        **source_info(),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
