"""Embed stored images with a backbone, decoding while the model runs.

The pipeline keeps the model busy: a small thread pool decodes and resizes
the images of the next batches (Pillow releases the GIL while it decodes and
resizes) into preallocated uint8 buffers while the compiled model runs on the
current one. On 2 cores this kept more of the model's speed than a
``tf.data`` pipeline with ``numpy_function`` decoding and ``prefetch``, and
2 decode threads did as well as or better than 1 or 3 (``bench/scoring.py
--compare`` times them all).

Determinism: the model runs in inference mode inside one ``tf.function`` per
backbone, so the same pixels give the same embedding on every call with the
same ``batch_size``. Within a call every batch has the same shape,
``min(batch_size, len(items))`` rows (the last one is padded), so the
kernels that TensorFlow picks, and thus the floating-point sums, do not
depend on where an image falls; across batch shapes they differ by about
1e-6 relative, below float16's resolution (about 1e-3), so a cached
embedding rarely differs in its last bit from one computed alone.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
from numpy.typing import NDArray

from curation.geometry import Box
from curation.learning.backbones import LoadedBackbone
from curation.learning.decode import UndecodableImage, decode_for_model

FLOAT16_MAX: Final = float(np.finfo(np.float16).max)
PREFETCH_BATCHES: Final = 2  # batches being decoded ahead of the one the model runs on


@dataclass(frozen=True)
class EmbedInput:
    """One image to embed: the stored copy's path, and a box on it (pixels) or None."""

    path: Path
    box: Box | None = None


def embed_images(
    items: Sequence[EmbedInput],
    backbone: LoadedBackbone,
    *,
    batch_size: int = 32,
    decode_threads: int = 2,
    on_batch: Callable[[int], object] | None = None,
) -> NDArray[np.float16]:
    """Embed every item with ``backbone``; returns float16 ``(len(items), backbone.spec.dim)``.

    Row ``i`` is the embedding of ``items[i]`` (the average-pooled features of
    the image, or of its box, resized to the backbone's input size). Values
    are finite: features beyond the float16 range (about 65504) are clipped.
    ``on_batch`` is called after each batch with the number of items embedded
    so far. ``decode_threads`` decode ahead of the model (at least 1).

    Raises ``UndecodableImage`` naming the path of the first item that cannot
    be decoded (nothing is returned for the others: the caller sets the
    poison image aside and calls again).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if decode_threads < 1:
        raise ValueError(f"decode_threads must be positive, got {decode_threads}")
    spec = backbone.spec
    total = len(items)
    result = np.empty((total, spec.dim), dtype=np.float16)
    if total == 0:
        return result
    size = spec.input_size
    rows = min(batch_size, total)  # one image alone does not pay for a full batch
    starts = range(0, total, rows)
    # One buffer per batch in flight: the model's batch plus those being decoded.
    buffers = [
        np.zeros((rows, size, size, 3), dtype=np.uint8)
        for _ in range(min(len(starts), PREFETCH_BATCHES + 1))
    ]

    def decode_into(buffer: NDArray[np.uint8], row: int, item: EmbedInput) -> None:
        buffer[row] = decode_for_model(item.path, size=size, box=item.box)

    with ThreadPoolExecutor(decode_threads, thread_name_prefix="embed-decode") as pool:
        pending: list[list[Future[None]]] = []

        def submit(batch: int) -> None:
            start = starts[batch]
            buffer = buffers[batch % len(buffers)]
            batch_items = items[start : start + rows]
            pending.append(
                [
                    pool.submit(decode_into, buffer, row, item)
                    for row, item in enumerate(batch_items)
                ]
            )

        try:
            for batch in range(min(len(starts), PREFETCH_BATCHES + 1)):
                submit(batch)
            for batch, start in enumerate(starts):
                futures = pending[0]
                for offset, future in enumerate(futures):
                    _wait(future, items[start + offset].path)
                pending.pop(0)
                buffer = buffers[batch % len(buffers)]
                count = len(futures)
                # The tail of a short last batch keeps older pixels: its rows are
                # computed and dropped, so every batch of the call has one shape.
                features = backbone.embed_batch(buffer)[:count]
                np.clip(features, -FLOAT16_MAX, FLOAT16_MAX, out=features)
                result[start : start + count] = features
                if batch + PREFETCH_BATCHES + 1 < len(starts):
                    submit(batch + PREFETCH_BATCHES + 1)
                if on_batch is not None:
                    on_batch(start + count)
        finally:
            for futures in pending:
                for future in futures:
                    future.cancel()
    return result


def _wait(future: Future[None], path: Path) -> None:
    try:
        future.result()
    except UndecodableImage:
        raise
    except Exception as error:  # anything else a decoder thread raised
        raise UndecodableImage(os.fspath(path), f"{type(error).__name__}: {error}") from error
