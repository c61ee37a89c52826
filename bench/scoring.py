"""Benchmark: embedding throughput, the whole pipeline against the model alone.

    .venv/bin/python bench/scoring.py [--data DIR] [--count 256] [--repeat 3]
                                      [--batch-size 32] [--decode-threads 2] [--compare]

Prints one JSON object on stdout (progress goes to stderr).

About ``--count`` real photos are taken from ``crawl13`` and ``wonders7`` in
the shared data folder (read in place, never copied into the project) and
first turned into the platform's stored form by the ingestion code itself
(``prepare_image``: EXIF orientation applied, re-encoded as JPEG quality 92,
PNG where there is transparency) in a temporary folder, since the platform
embeds its stored copies. Then, for each backbone:

* (a) ``raw``: every image already decoded and resized in memory as one
  uint8 array; only the model runs (``LoadedBackbone.embed_batch``, the same
  compiled function the pipeline uses, preprocessing included), in batches of
  ``--batch-size``; images per second.
* (b) ``pipeline``: ``embed_images`` from the stored files, decoding and
  resizing included; images per second.
* ``ratio`` = (b) / (a): how much of the model's speed the pipeline keeps
  (1.0 means decoding is fully hidden). Target: at least 0.85 for
  EfficientNetB0 and MobileNetV2.

Each is warmed up once, then (a) and (b) are timed alternately ``--repeat``
times and the medians reported (alternating, so that load from other
processes on the machine hits both alike; ``load_average`` shows it).
``cores_used`` is process CPU time over wall time. ``--compare`` also times
the alternatives that were considered: a ``tf.data`` pipeline
(``numpy_function`` + ``prefetch``), other decode thread counts and other
batch sizes.
"""

from __future__ import annotations

import _path  # noqa: F401 (first: keeps bench/queue.py from shadowing the stdlib)

# isort: split

import argparse
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's banners off stderr

import numpy as np
from _report import cpu_model, source_info
from numpy.typing import NDArray

from curation.exceptions import RejectedInput
from curation.ingest.prepare import prepare_image
from curation.learning.backbones import LoadedBackbone, load_backbone
from curation.learning.decode import decode_for_model
from curation.learning.embed import EmbedInput, embed_images
from curation.settings import Settings

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = Path(os.environ.get("CURATION_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
DEFAULT_WEIGHTS = REPO_ROOT.parent / "shared" / "weights"
SMALL_MOBILENET_WEIGHTS = "mobilenet_2_5_224_tf_no_top.h5"
FOLDERS = ("crawl13", "wonders7")
TARGET_RATIO = 0.85
# (backbone, weights, whether the ratio target applies); None: the shared file.
BACKBONES: tuple[tuple[str, str | None, bool], ...] = (
    ("efficientnetb0", "none", True),
    ("mobilenetv2", "none", True),
    ("mobilenet_0.25", None, False),
)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- the images ----------------------------------------------------------------


def stored_copies(data: Path, count: int, seed: int, folder: Path) -> dict[str, Any]:
    """Write about ``count`` stored copies (half from each source folder) into ``folder``."""
    per_folder = {}
    for name in FOLDERS:
        files = sorted(p for p in (data / name).rglob("*") if p.is_file())
        random.Random(seed).shuffle(files)
        per_folder[name] = files
    wanted = {FOLDERS[0]: count - count // 2, FOLDERS[1]: count // 2}
    written: list[Path] = []
    taken = {name: 0 for name in FOLDERS}
    rejected = 0
    sizes: list[tuple[int, int]] = []
    started = time.perf_counter()
    for name in FOLDERS:
        for source in per_folder[name]:
            if taken[name] >= wanted[name]:
                break
            try:
                prepared = prepare_image(
                    source.read_bytes(),
                    max_bytes=Settings.max_image_bytes,
                    max_pixels=Settings.max_image_pixels,
                )
            except RejectedInput:
                rejected += 1
                continue
            path = folder / f"{len(written):04d}.{prepared.stored_extension}"
            path.write_bytes(prepared.stored_bytes)
            written.append(path)
            sizes.append((prepared.width, prepared.height))
            taken[name] += 1
    widths, heights = zip(*sizes, strict=True) if sizes else ((), ())
    return {
        "paths": written,
        "report": {
            "count": len(written),
            "from": taken,
            "rejected_by_ingestion": rejected,
            "stored_jpeg": sum(p.suffix == ".jpg" for p in written),
            "stored_png": sum(p.suffix == ".png" for p in written),
            "median_width": int(statistics.median(widths)) if widths else None,
            "median_height": int(statistics.median(heights)) if heights else None,
            "max_side": max(max(widths), max(heights)) if widths else None,
            "mean_file_kib": round(sum(p.stat().st_size for p in written) / len(written) / 1024, 1)
            if written
            else None,
            "prepare_s": round(time.perf_counter() - started, 2),
        },
    }


# --- timing ---------------------------------------------------------------------


def timed(run: Callable[[], object], images: int) -> tuple[float, float]:
    """(images per second, cores used) of one call of ``run``."""
    cpu, wall = time.process_time(), time.perf_counter()
    run()
    wall = time.perf_counter() - wall
    return images / wall, (time.process_time() - cpu) / wall


def summary(samples: list[tuple[float, float]]) -> dict[str, Any]:
    rates = [rate for rate, _ in samples]
    return {
        "median": round(statistics.median(rates), 2),
        "runs": [round(rate, 2) for rate in rates],
        "cores_used": round(statistics.median(cores for _, cores in samples), 2),
    }


def raw_runner(
    backbone: LoadedBackbone, pixels: NDArray[np.uint8], batch_size: int
) -> Callable[[], NDArray[np.float32]]:
    """The model alone on in-memory pixels, batch by batch (the last one padded, as embed does)."""

    def run() -> NDArray[np.float32]:
        outputs = []
        for start in range(0, len(pixels), batch_size):
            batch = pixels[start : start + batch_size]
            count = len(batch)
            if count < batch_size:
                padding = np.zeros((batch_size - count, *batch.shape[1:]), dtype=np.uint8)
                batch = np.concatenate([batch, padding])
            outputs.append(backbone.embed_batch(batch)[:count])
        return np.concatenate(outputs)

    return run


def tf_data_runner(
    backbone: LoadedBackbone, paths: list[Path], batch_size: int, threads: int
) -> Callable[[], NDArray[np.float32]]:
    """The alternative considered: tf.data, numpy_function decoding, prefetch."""
    import tensorflow as tf

    size = backbone.spec.input_size
    names = [str(p) for p in paths]

    def decode(index: Any) -> NDArray[np.uint8]:
        return decode_for_model(names[int(index)], size=size, box=None)

    def run() -> NDArray[np.float32]:
        dataset = (
            tf.data.Dataset.range(len(names))
            .map(
                lambda i: tf.ensure_shape(
                    tf.numpy_function(decode, [i], tf.uint8, stateful=False), (size, size, 3)
                ),
                num_parallel_calls=threads,
                deterministic=True,
            )
            .batch(batch_size)
            .prefetch(2)
        )
        return np.concatenate([backbone.embed_batch(batch.numpy()) for batch in dataset])

    return run


def bench_backbone(
    name: str,
    weights: str,
    paths: list[Path],
    *,
    batch_size: int,
    decode_threads: int,
    repeat: int,
    compare: bool,
    has_target: bool,
) -> dict[str, Any]:
    backbone = load_backbone(name, weights)
    size = backbone.spec.input_size
    count = len(paths)
    items = [EmbedInput(path) for path in paths]

    started = time.perf_counter()
    pixels = np.stack([decode_for_model(p, size=size, box=None) for p in paths])
    decode_ms = (time.perf_counter() - started) / count * 1000

    raw = raw_runner(backbone, pixels, batch_size)

    def pipeline() -> NDArray[np.float16]:
        return embed_images(items, backbone, batch_size=batch_size, decode_threads=decode_threads)

    log(f"{name}: warm-up ...")
    reference = raw()
    piped = pipeline()
    same = float(
        np.abs(piped.astype(np.float32) - reference.astype(np.float16).astype(np.float32)).max()
    )
    raw_samples, pipe_samples = [], []
    for run in range(repeat):
        raw_samples.append(timed(raw, count))
        pipe_samples.append(timed(pipeline, count))
        log(
            f"  run {run + 1}: raw {raw_samples[-1][0]:.1f}/s, pipeline {pipe_samples[-1][0]:.1f}/s"
        )
    raw_summary, pipe_summary = summary(raw_samples), summary(pipe_samples)
    ratio = round(pipe_summary["median"] / raw_summary["median"], 3)
    result: dict[str, Any] = {
        "backbone": backbone.spec.name,
        "weights": weights if weights in ("none", "imagenet") else Path(weights).name,
        "space_key": backbone.space_key,
        "dim": backbone.spec.dim,
        "bytes_per_embedding": backbone.spec.dim * np.dtype(np.float16).itemsize,
        "raw_images_per_s": raw_summary,
        "pipeline_images_per_s": pipe_summary,
        "ratio": ratio,
        "target": {"min_ratio": TARGET_RATIO, "met": ratio >= TARGET_RATIO}
        if has_target
        else "reported only",
        "decode_ms_per_image_one_thread": round(decode_ms, 3),
        "pipeline_equals_raw_max_abs_diff_float16": same,
    }
    if compare:
        result["alternatives"] = compare_alternatives(
            backbone, paths, pixels, batch_size=batch_size, decode_threads=decode_threads
        )
    return result


def compare_alternatives(
    backbone: LoadedBackbone,
    paths: list[Path],
    pixels: NDArray[np.uint8],
    *,
    batch_size: int,
    decode_threads: int,
) -> list[dict[str, Any]]:
    """Each alternative against the raw model, alternately, 2 runs after a warm-up."""
    count = len(paths)
    items = [EmbedInput(path) for path in paths]
    variants: list[tuple[str, int, Callable[[], object]]] = [
        (
            f"tf.data numpy_function, {decode_threads} parallel calls, prefetch 2",
            batch_size,
            tf_data_runner(backbone, paths, batch_size, decode_threads),
        )
    ]
    for threads in sorted({1, 3} - {decode_threads}):
        variants.append(
            (
                f"embed_images, {threads} decode thread(s)",
                batch_size,
                partial(
                    embed_images, items, backbone, batch_size=batch_size, decode_threads=threads
                ),
            )
        )
    for other in sorted({16, 64} - {batch_size}):
        variants.append(
            (
                f"embed_images, batch size {other}",
                other,
                partial(
                    embed_images, items, backbone, batch_size=other, decode_threads=decode_threads
                ),
            )
        )
    results = []
    for label, size, run in variants:
        log(f"  alternative: {label} ...")
        raw = raw_runner(backbone, pixels, size)
        raw()
        run()
        raw_samples, samples = [], []
        for _ in range(2):
            raw_samples.append(timed(raw, count))
            samples.append(timed(run, count))
        raw_rate = statistics.median(rate for rate, _ in raw_samples)
        rate = statistics.median(rate for rate, _ in samples)
        results.append(
            {
                "variant": label,
                "images_per_s": round(rate, 2),
                "raw_images_per_s_at_this_batch_size": round(raw_rate, 2),
                "ratio": round(rate / raw_rate, 3),
            }
        )
    return results


# --- report -----------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    import keras
    import PIL
    import PIL.features
    import tensorflow as tf

    return {
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": cpu_model(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "pillow": PIL.__version__,
        "libjpeg_turbo": PIL.features.check_feature("libjpeg_turbo"),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        # 0 means TensorFlow's default: one thread per core for each pool.
        "tf_intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
        "tf_inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the shared data folder")
    parser.add_argument("--weights-dir", type=Path, default=DEFAULT_WEIGHTS)
    parser.add_argument("--count", type=int, default=256, help="photos to embed")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs of (a) and (b)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--decode-threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0, help="which photos are taken")
    parser.add_argument("--compare", action="store_true", help="also time the alternatives")
    parser.add_argument("--only", action="append", help="run only this backbone (repeatable)")
    args = parser.parse_args(argv)

    report: dict[str, Any] = {
        "benchmark": "bench/scoring.py",
        "source": source_info(),
        "machine": machine_info(),
        "settings": {
            "count": args.count,
            "repeat": max(1, args.repeat),
            "batch_size": args.batch_size,
            "decode_threads": args.decode_threads,
            "statistic": "median of the timed runs, after one warm-up run",
        },
        "load_average_before": [round(v, 2) for v in os.getloadavg()],
    }
    missing = [name for name in FOLDERS if not (args.data / name).is_dir()]
    if missing:
        report["skipped"] = f"{', '.join(str(args.data / m) for m in missing)} absent: no photos"
        print(json.dumps(report, indent=2))
        return 0

    results: list[dict[str, Any]] = []
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench-scoring-") as tmp:
        log(f"preparing stored copies of {args.count} photos ...")
        prepared = stored_copies(args.data, args.count, args.seed, Path(tmp))
        report["images"] = prepared["report"]
        for name, weights, has_target in BACKBONES:
            if args.only and name not in args.only:
                continue
            if weights is None:
                file = args.weights_dir / SMALL_MOBILENET_WEIGHTS
                if not file.is_file():
                    notes.append(f"{name} skipped: {file} is absent")
                    continue
                weights = str(file)
            results.append(
                bench_backbone(
                    name,
                    weights,
                    prepared["paths"],
                    batch_size=args.batch_size,
                    decode_threads=args.decode_threads,
                    repeat=max(1, args.repeat),
                    compare=args.compare,
                    has_target=has_target,
                )
            )
    report["backbones"] = results
    report["ratios"] = {r["backbone"]: r["ratio"] for r in results}
    report["targets_met"] = all(
        r["target"]["met"] for r in results if isinstance(r["target"], dict)
    )
    report["load_average_after"] = [round(v, 2) for v in os.getloadavg()]
    if notes:
        report["notes"] = notes
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
