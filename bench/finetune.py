"""Fine-tuning against the head on cached embeddings, end to end on a labelled folder.

    .venv/bin/python bench/finetune.py [--data ../shared/data/porto5] [--blocks 2]
        [--epochs 10] [--augment] [--backbone mobilenet_0.25]
        [--weights ../shared/weights/mobilenet_2_5_224_tf_no_top.h5]

Prints one JSON object on stdout (progress goes to stderr). In a fresh
SQLite platform in a temporary folder, the way an operator would:

1. ingest the folder as a labelled tree (``<class>/<images>``);
2. embed every image with the configured backbone (``embed_s``);
3. snapshot v1 (leak-free splits by near-duplicate group);
4. train the default head on v1's cached embeddings and promote it;
5. fine-tune the top ``--blocks`` blocks (``datasets.finetune``), which
   re-embeds every image into the fine-tuned backbone's own space;
6. judge the fine-tuned model against the head with the promotion gate, on
   the same frozen test split, each model in its own embedding space.

Reported: both models' test accuracy (the fine-tuned one from its cached
embeddings, as the gate sees it, and from the pixels through the training
input pipeline), the gate's verdict, and the seconds of each phase of the
fine-tuning run (from its progress messages), with the re-embedding rate.
"""

from __future__ import annotations

import _path  # noqa: F401 (first: keeps bench/queue.py from shadowing the stdlib)

# isort: split

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from _report import cpu_model, source_info
from ingest import bench_settings
from sqlalchemy import select

from curation import migrate, registry
from curation.ingest.folders import labelled_tree_items
from curation.ingest.records import IngestSummary
from curation.ingest.runner import IngestRunner
from curation.learning.backbones import load_backbone
from curation.learning.scoring import LearningPaths, embed_missing
from curation.models import Image
from curation.runtime import build_runtime

SHARED = Path(__file__).resolve().parents[2] / "shared"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class PhaseClock:
    """Seconds per phase of a run, from its progress messages ("phase 1: ...")."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.current: str | None = None
        self.since = self.started
        self.seconds: dict[str, float] = {}

    def __call__(self, share: float, message: str) -> None:
        phase = message.split(":", 1)[0].split(",", 1)[0]
        if phase != self.current:
            self.close()
            self.current, self.since = phase, time.perf_counter()
            log(f"  {message}")

    def close(self) -> None:
        if self.current is not None:
            now = time.perf_counter()
            self.seconds[self.current] = round(
                self.seconds.get(self.current, 0.0) + now - self.since, 1
            )


def run(args: argparse.Namespace) -> dict[str, Any]:
    from datasets.finetune import fine_tune_on_version
    from datasets.training import train_on_version
    from datasets.versions import load_manifest, snapshot

    with tempfile.TemporaryDirectory(prefix="curation-bench-finetune-") as tmp:
        url = f"sqlite:///{Path(tmp) / 'curation.db'}"
        migrate.upgrade(url)
        settings = bench_settings(
            Path(tmp) / "var", url, ingest_workers=2, backbone=args.backbone,
            backbone_weights=str(args.weights),
        )  # fmt: skip
        runtime = build_runtime(settings)
        paths = LearningPaths.under(settings.data_dir)
        try:
            log(f"ingesting {args.data}")
            summary = IngestSummary()
            IngestRunner(runtime.factory, runtime.store, settings).run(
                labelled_tree_items(args.data, dataset_name=args.data.name, summary=summary),
                actor="bench", action="bench.finetune", summary=summary,
            )  # fmt: skip
            with runtime.factory() as session:
                ids = list(session.scalars(select(Image.id).order_by(Image.id)))
            log(f"embedding {len(ids)} images with {args.backbone}")
            base = load_backbone(args.backbone, str(args.weights))
            started = time.perf_counter()
            embed_missing(runtime.factory, runtime.store, paths, base, ids)
            embed_s = time.perf_counter() - started
            with runtime.factory() as session, session.begin():
                snapshot(session, author="bench", message="v1", seed=args.seed)
                splits = load_manifest(session, "v1").split_counts()
            log(f"v1: {splits}; training the head")
            started = time.perf_counter()
            head = train_on_version(
                runtime.factory, paths, version_ref="v1", space_key=base.space_key, seed=args.seed
            )
            head_s = time.perf_counter() - started
            with runtime.factory() as session, session.begin():
                registry.promote(
                    session, head.model_version_id, actor="bench", reason="baseline",
                    now=_now(),
                )  # fmt: skip
            log(f"head accuracy {head.test_metrics['accuracy']:.3f}; fine-tuning")
            clock = PhaseClock()
            tuned = fine_tune_on_version(
                runtime.factory, paths, runtime.store, version_ref="v1", backbone=args.backbone,
                weights=str(args.weights), blocks=args.blocks, epochs=args.epochs,
                patience=args.patience, augment=args.augment, seed=args.seed, on_progress=clock,
            )  # fmt: skip
            clock.close()
            with runtime.factory() as session, session.begin():
                gate = registry.evaluate_gate(
                    session, paths, tuned.model_version_id,
                    max_class_drop=settings.gate_max_class_drop,
                    min_new_class_recall=settings.gate_min_new_class_recall,
                )  # fmt: skip
                version = registry.get_version(session, tuned.model_version_id)
                pixels = version.metrics["test_from_pixels"]
            reembed_s = clock.seconds.get("phase 3")
            return {
                "data": str(args.data),
                "images": len(ids),
                "rejected": len(summary.rejected),
                "splits": splits,
                "backbone": args.backbone,
                "weights": str(args.weights),
                "blocks": args.blocks,
                "unfrozen_blocks": tuned.unfrozen_blocks,
                "epochs_max": args.epochs,
                "augment": args.augment,
                "seed": args.seed,
                "head": {
                    "test_accuracy": head.test_metrics["accuracy"],
                    "top5_accuracy": head.test_metrics["top5_accuracy"],
                    "expected_calibration_error": head.test_metrics["expected_calibration_error"],
                    "train_s": round(head_s, 1),
                },
                "fine_tuned": {
                    "test_accuracy_cached": tuned.test_metrics["accuracy"],
                    "test_accuracy_pixels": pixels["accuracy"],
                    "expected_calibration_error": tuned.test_metrics["expected_calibration_error"],
                    "epochs_run": version.metrics["epochs_run"],
                    "head_epochs_run": version.metrics["head_epochs_run"],
                    "reembedded": version.metrics["images"]["reembedded"],
                    "seconds_by_phase": clock.seconds,
                    "reembed_images_per_s": (round(len(ids) / reembed_s, 1) if reembed_s else None),
                    "total_s": tuned.seconds,
                },
                "gate": gate.as_dict(),
                "embed_s": round(embed_s, 1),
                "embed_images_per_s": round(len(ids) / embed_s, 1),
                "cpu": cpu_model(),
                "cpu_count": os.cpu_count(),
                "source": source_info(),
            }
        finally:
            runtime.dispose()


def _now() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--data", type=Path, default=SHARED / "data" / "porto5")
    parser.add_argument("--backbone", default="mobilenet_0.25")
    parser.add_argument(
        "--weights", type=Path, default=SHARED / "weights" / "mobilenet_2_5_224_tf_no_top.h5"
    )
    parser.add_argument("--blocks", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--patience", type=int, default=3)
    parser.add_argument("--augment", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not args.data.is_dir():
        parser.error(f"--data {args.data} is not a folder (the shared data is absent?)")
    if not args.weights.is_file():
        parser.error(f"--weights {args.weights} is not a file")
    print(json.dumps(run(args), indent=2))


if __name__ == "__main__":
    main()
