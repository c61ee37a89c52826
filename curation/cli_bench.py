"""``curation bench``: offline evaluations on labelled folders.

``curation bench al`` simulates active learning on a labelled folder (one
sub-folder per class) with reviewers who answer with the true label, and
reports how many labels each selection strategy needs, as a ratio to random
sampling. Other evaluations add their command to the ``bench`` group.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from curation.cli_support import domain_errors, json_option
from curation.cli_support import emit as _emit
from curation.exceptions import CurationError


@click.group()
def bench() -> None:
    """Offline evaluations on labelled folders (no database needed)."""


def _embedding_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """--backbone, --weights and --cache-dir: how a folder is embedded (shared by both benches)."""
    for option in reversed(
        [
            click.option("--backbone", help="Backbone name (default: CURATION_BACKBONE)."),
            click.option(
                "--weights", help="Backbone weights (default: CURATION_BACKBONE_WEIGHTS)."
            ),
            click.option(
                "--cache-dir",
                type=click.Path(file_okay=False, path_type=Path),
                help="Embedding cache (default: <data dir>/cache/evaluation).",
            ),
        ]
    ):
        command = option(command)
    return command


@bench.command("al")
@click.option(
    "--data",
    "data_dir",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Labelled folder: <class>/<images>.",
)
@click.option(
    "--test",
    "test_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Separate labelled test folder (default: hold out whole near-duplicate groups).",
)
@click.option(
    "--seeds",
    default=20,
    show_default=True,
    type=click.IntRange(1),
    help="Runs per strategy, each with its own test split and start. With a test set of a few"
    " hundred images one image moves a 95% crossing by tens of labels: below about 20 seeds"
    " the ratios are mostly noise (the report prints their bootstrap interval).",
)
@click.option(
    "--first-seed",
    default=0,
    show_default=True,
    type=click.IntRange(0),
    help="Seeds run from here on. A strategy tuned on seeds 0-99 is judged fairly only on"
    " others: the best of many variants on the same seeds flatters itself.",
)
@click.option(
    "--jobs",
    default=lambda: len(os.sched_getaffinity(0)),
    show_default="the CPUs this process may use",
    type=click.IntRange(1),
    help="Seeds run side by side in this many processes (the result does not depend on it).",
)
@click.option("--start-per-class", default=2, show_default=True, type=click.IntRange(1))
@click.option("--batch", default=20, show_default=True, type=click.IntRange(1))
@click.option(
    "--strategies",
    default=None,
    help="Comma-separated strategies (default: all); random is always added.",
)
@click.option("--test-share", default=0.25, show_default=True, type=click.FloatRange(0.05, 0.9))
@click.option("--max-labels", type=click.IntRange(1), help="Stop each run at this many labels.")
@_embedding_options
@click.option(
    "--out",
    "out_dir",
    default=Path("bench-al"),
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
)
@json_option
@domain_errors
def active_learning(
    data_dir: Path,
    test_dir: Path | None,
    seeds: int,
    first_seed: int,
    jobs: int,
    start_per_class: int,
    batch: int,
    strategies: str | None,
    test_share: float,
    max_labels: int | None,
    backbone: str | None,
    weights: str | None,
    cache_dir: Path | None,
    out_dir: Path,
    as_json: bool,
) -> None:
    """Simulated active learning: labels each strategy needs to reach 95% and 99%.

    Writes al.json and al.png into --out and prints each strategy's labels
    needed as a ratio to random (mean labels over seeds over random's mean).
    """
    import numpy as np

    from curation.evaluation import active_learning as al
    from curation.evaluation.folder import load_under_settings
    from curation.learning.head import HEAD_L2
    from curation.settings import load_settings

    settings = load_settings()
    backbone = backbone or settings.backbone
    weights = weights or settings.backbone_weights
    cache = cache_dir or settings.data_dir / "cache" / "evaluation"
    names = list(al.STRATEGIES) if not strategies else _strategy_list(strategies)
    if "random" not in names:
        names.insert(0, "random")
    started = time.monotonic()
    data = load_under_settings(data_dir, backbone=backbone, weights=weights, cache_dir=cache)
    test_embeddings = test_labels = None
    if test_dir is not None:
        held = load_under_settings(test_dir, backbone=backbone, weights=weights, cache_dir=cache)
        index = {name: k for k, name in enumerate(data.class_names)}
        known = np.asarray([name in index for name in np.asarray(held.class_names)[held.labels]])
        if not known.any():
            raise CurationError(f"{test_dir} shares no class with {data_dir}")
        test_embeddings = held.embeddings[known]
        test_labels = np.asarray(
            [index[held.class_names[label]] for label in held.labels[known]], dtype=np.int64
        )
    embedded = time.monotonic()
    curves = al.run_benchmark(
        data.embeddings,
        data.labels,
        group_ids=data.group_ids,
        strategies=names,
        seeds=list(range(first_seed, first_seed + seeds)),
        start_per_class=start_per_class,
        batch=batch,
        test_share=test_share,
        test_embeddings=test_embeddings,
        test_labels=test_labels,
        max_labels=max_labels,
        jobs=jobs,
    )
    summary = al.summarise(curves)
    simple = [name for name in al.SIMPLE_STRATEGIES if name in names]
    gap = gap_error = None
    if al.DEFAULT_STRATEGY in names:
        gap = al.shortfall(curves, strategy=al.DEFAULT_STRATEGY, against=simple)
        gap_error = al.shortfall_standard_error(
            curves, strategy=al.DEFAULT_STRATEGY, against=simple
        )
    payload: dict[str, Any] = {
        "data": str(data_dir),
        "test": str(test_dir) if test_dir else None,
        "backbone": backbone,
        "weights": str(weights),
        "images": len(data),
        "rejected": [{"path": p, "reason": r} for p, r in data.rejected],
        "near_duplicate_groups": int(np.unique(data.group_ids).size),
        "class_names": data.class_names,
        "pool_size": curves.pool_size,
        "test_size": curves.test_size,
        "start_per_class": start_per_class,
        "batch": batch,
        "seeds": curves.seeds,
        "jobs": jobs,
        "model": "softmax regression on embeddings standardised by the pool, balanced class "
        f"weights, L2 {HEAD_L2:g}, self-trained on the pool rows its first fit is sure of "
        "(the platform's head objective, fitted by L-BFGS)",
        "strategies": {name: al.STRATEGIES[name].description for name in names},
        "budgets": curves.budgets.tolist(),
        "accuracy": {name: curves.accuracy[s].tolist() for s, name in enumerate(curves.strategies)},
        "full_accuracy": curves.full_accuracy.tolist(),
        **summary,
        "default_shortfall_vs_best_simple": {
            "against": simple,
            "max": float(gap.max()) if gap is not None else None,
            "at_labels": int(curves.budgets[int(np.argmax(gap))]) if gap is not None else None,
            "per_budget": gap.tolist() if gap is not None else None,
            # Paired over seeds; NaN (JSON null) with one seed.
            "standard_error": [None if math.isnan(e) else e for e in gap_error.tolist()]
            if gap_error is not None
            else None,
        },
        "seconds": {
            "embedding": round(embedded - started, 1),
            "simulation": round(time.monotonic() - embedded, 1),
        },
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "al.json").write_text(json.dumps(payload, indent=2), encoding="utf-8")
    al.plot_curves(
        curves,
        out_dir / "al.png",
        title=f"{data_dir.name}: start {start_per_class}/class, batch {batch}, "
        f"{len(curves.seeds)} seeds",
    )
    payload["files"] = [str(out_dir / "al.json"), str(out_dir / "al.png")]

    def human() -> None:
        click.echo(
            f"{len(data)} images, {curves.pool_size} in the pool, {curves.test_size} in test; "
            f"all-labels accuracy {np.mean(curves.full_accuracy):.3f} "
            f"(seeds: {', '.join(f'{a:.3f}' for a in curves.full_accuracy)})"
        )
        click.echo("labels needed as a ratio to random (mean over seeds / random's mean),")
        click.echo("with a 95% bootstrap interval over the seeds:")
        click.echo(
            f"  {'strategy':16s} {'95%':>6s} {'interval':>13s} {'99%':>6s} {'interval':>13s}"
            "   labels 95% / 99% (mean)"
        )
        nan = float("nan")
        for name in curves.strategies:
            ratio = summary["ratio_to_random"].get(name, {})
            interval = summary["ratio_interval"].get(name, {})
            needed = summary["labels_needed"][name]
            low95, high95 = interval.get("0.95", [nan, nan])
            low99, high99 = interval.get("0.99", [nan, nan])
            click.echo(
                f"  {name:16s} {ratio.get('0.95', nan):6.3f} [{low95:5.3f},{high95:6.3f}] "
                f"{ratio.get('0.99', nan):6.3f} [{low99:5.3f},{high99:6.3f}]   "
                f"{np.mean(needed['0.95']):6.1f} / {np.mean(needed['0.99']):6.1f}"
            )
        if gap is not None and gap_error is not None:
            worst = int(np.argmax(gap))
            click.echo(
                f"default vs best of {', '.join(simple)}: largest shortfall "
                f"{gap[worst]:+.4f} at {curves.budgets[worst]} labels "
                f"(standard error over seeds {gap_error[worst]:.4f})"
            )
        click.echo(f"wrote {out_dir / 'al.json'} and {out_dir / 'al.png'}")

    _emit(as_json, payload, human)


def _strategy_list(text: str) -> list[str]:
    from curation.evaluation.active_learning import STRATEGIES

    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in STRATEGIES]
    if unknown:
        raise click.BadParameter(
            f"unknown {', '.join(unknown)}; known: {', '.join(STRATEGIES)}",
            param_hint="--strategies",
        )
    return list(dict.fromkeys(names))


@bench.command("label-errors")
@click.option(
    "--data",
    "data_dir",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Labelled folder: <class>/<images>.",
)
@click.option("--noise", default=0.1, show_default=True, type=click.FloatRange(0.0, 0.9))
@click.option("--seeds", default=3, show_default=True, type=click.IntRange(1))
@_embedding_options
@click.option(
    "--out",
    "out_dir",
    default=Path("bench-label-errors"),
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
)
@json_option
@domain_errors
def label_errors(
    data_dir: Path,
    noise: float,
    seeds: int,
    backbone: str | None,
    weights: str | None,
    cache_dir: Path | None,
    out_dir: Path,
    as_json: bool,
) -> None:
    """Flip --noise of the labels; report how the label-issue scoring finds them.

    Writes label_errors.json and label_errors.png into --out and prints the
    share of the flips in the top 15% of the ranking and the precision, recall
    and F1 of the flagged set (mean and per seed), with folds by near-duplicate
    group and, for comparison, by row.
    """
    import numpy as np

    from curation.evaluation import label_errors as le
    from curation.evaluation.folder import load_under_settings
    from curation.settings import load_settings

    settings = load_settings()
    backbone = backbone or settings.backbone
    weights = weights or settings.backbone_weights
    cache = cache_dir or settings.data_dir / "cache" / "evaluation"
    started = time.monotonic()
    data = load_under_settings(data_dir, backbone=backbone, weights=weights, cache_dir=cache)
    if len(data.class_names) < 2:
        raise CurationError(f"{data_dir} needs at least 2 class folders")
    embedded = time.monotonic()
    seed_list = list(range(seeds))
    grouped = le.evaluate(
        data.embeddings, data.labels, group_ids=data.group_ids, noise=noise, seeds=seed_list
    )
    scored = time.monotonic()
    by_row = le.evaluate(data.embeddings, data.labels, group_ids=None, noise=noise, seeds=seed_list)
    summary = grouped.summary()
    payload: dict[str, Any] = {
        "data": str(data_dir),
        "backbone": backbone,
        "weights": str(weights),
        "images": len(data),
        "rejected": [{"path": p, "reason": r} for p, r in data.rejected],
        "near_duplicate_groups": int(np.unique(data.group_ids).size),
        "class_names": data.class_names,
        **summary,
        "row_wise_folds": by_row.summary(),
        "recall_curves": {
            str(r.seed): [round(float(v), 5) for v in r.recall_curve] for r in grouped.seeds
        },
        "flipped_paths": {
            str(r.seed): [data.relative_paths[i] for i in r.flipped] for r in grouped.seeds
        },
        "seconds": {
            "embedding": round(embedded - started, 1),
            "scoring_per_seed": round((scored - embedded) / seeds, 2),
        },
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "label_errors.json").write_text(json.dumps(payload, indent=2), encoding="utf-8")
    le.plot_recall(
        grouped,
        out_dir / "label_errors.png",
        title=f"{data_dir.name}: {noise:.0%} of {len(data)} labels flipped, {seeds} seeds",
    )
    payload["files"] = [str(out_dir / "label_errors.json"), str(out_dir / "label_errors.png")]

    def line(name: str, figures: dict[str, Any]) -> str:
        return (
            f"  {name:10s} top {grouped.top_share:.0%}: {figures['top_share_recall']:.3f}  "
            f"precision {figures['precision']:.3f}  recall {figures['recall']:.3f}  "
            f"F1 {figures['f1']:.3f}"
        )

    def human() -> None:
        click.echo(
            f"{len(data)} images, {len(data.class_names)} classes, "
            f"{payload['near_duplicate_groups']} near-duplicate groups; {noise:.0%} flipped"
        )
        click.echo("folds by near-duplicate group:")
        click.echo(line("mean", summary["mean"]))  # type: ignore[arg-type]
        for row in summary["per_seed"]:  # type: ignore[attr-defined]
            click.echo(line(f"seed {row['seed']}", row) + f"  ({row['flagged']} flagged)")
        click.echo("folds by row (near-duplicates may straddle folds):")
        click.echo(line("mean", by_row.summary()["mean"]))  # type: ignore[arg-type]
        click.echo(f"wrote {out_dir / 'label_errors.json'} and {out_dir / 'label_errors.png'}")

    _emit(as_json, payload, human)
