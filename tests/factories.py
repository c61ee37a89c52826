"""Test data made on the fly: images with distinct structure, in any format."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def pattern(seed: int, width: int = 320, height: int = 240) -> Image.Image:
    """An RGB image whose coarse structure (and so its perceptual hash) depends on ``seed``."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)
    image = Image.fromarray(coarse, "RGB").resize((width, height), Image.Resampling.BICUBIC)
    return image


def encode(image: Image.Image, fmt: str = "JPEG", **options: object) -> bytes:
    out = io.BytesIO()
    if fmt == "JPEG" and image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    image.save(out, format=fmt, **options)
    return out.getvalue()


def jpeg(seed: int, width: int = 320, height: int = 240, **options: object) -> bytes:
    return encode(pattern(seed, width, height), "JPEG", quality=90, **options)


def png(seed: int, width: int = 320, height: int = 240) -> bytes:
    return encode(pattern(seed, width, height), "PNG")


def near_copy(seed: int, width: int = 320, height: int = 240) -> bytes:
    """The same picture as ``jpeg(seed)``, slightly brightened and re-encoded: a near-duplicate."""
    image = pattern(seed, width, height)
    array = np.asarray(image).astype(np.int16) + 6
    return encode(Image.fromarray(np.clip(array, 0, 255).astype(np.uint8)), "JPEG", quality=70)


def with_exif(seed: int, *, orientation: int, gps: bool = True) -> bytes:
    image = pattern(seed, 320, 240)
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "TestCam"  # Make
    if gps:
        exif[0x8825] = {1: "N", 2: (37.0, 34.0, 0.0), 3: "E", 4: (126.0, 58.0, 0.0)}
    return encode(image, "JPEG", quality=90, exif=exif.tobytes())


def image_row(session, n: int, *, phash_unsigned: int | None = None, group_id: int | None = None):
    """Insert a bare Image row (no file) numbered ``n``, in its own near-duplicate
    group unless ``group_id`` is given; flushes and returns it."""
    from curation.hashing import to_signed64
    from curation.models import Image, NearDuplicateGroup

    if group_id is None:
        group = NearDuplicateGroup()
        session.add(group)
        session.flush()
        group_id = group.id
    sha = f"{n:064x}"
    image = Image(
        sha256=sha,
        phash=to_signed64(n if phash_unsigned is None else phash_unsigned),
        width=320,
        height=240,
        format="jpeg",
        byte_size=1,
        storage_key=f"{sha[:2]}/{sha[2:4]}/{sha}.jpg",
        stored_format="jpeg",
        group_id=group_id,
    )
    session.add(image)
    session.flush()
    return image


def embedded_images(session, embeddings_root, vectors, *, key: str = "test:none"):
    """Bare Image rows (numbered from 1), one per row of ``vectors`` (N, D), with
    those vectors cached as their full-image embeddings in space ``key``.
    Returns (image ids, the space)."""
    import numpy as np

    from curation.learning import embedding_store

    ids = [image_row(session, n + 1).id for n in range(len(vectors))]
    space = embedding_store.get_or_create_space(
        session, key=key, backbone="test", weights_id="none", dim=int(vectors.shape[1])
    )
    embedding_store.record(
        session,
        embeddings_root,
        space,
        [(i, embedding_store.FULL) for i in ids],
        np.asarray(vectors, dtype=np.float16),
    )
    return ids, space
