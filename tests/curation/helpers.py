"""Helpers shared by the domain-layer tests: hostile inputs, row counts, folders."""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Iterable
from pathlib import Path

from PIL import Image as PILImage
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from curation.ingest.records import IngestItem, IngestSummary
from curation.ingest.runner import IngestRunner
from curation.models import (
    AuditEntry,
    ClassAlias,
    Image,
    ImageSource,
    Label,
    LandmarkClass,
    NearDuplicateGroup,
)
from curation.runtime import Runtime
from curation.store import LocalImageStore
from tests.factories import encode, jpeg, pattern, png

COUNTED = {
    "images": Image,
    "sources": ImageSource,
    "labels": Label,
    "groups": NearDuplicateGroup,
    "classes": LandmarkClass,
    "aliases": ClassAlias,
}


def count_rows(session: Session) -> dict[str, int]:
    return {
        name: session.scalar(select(func.count()).select_from(model)) or 0
        for name, model in COUNTED.items()
    }


def counts(factory: sessionmaker[Session]) -> dict[str, int]:
    with factory() as session:
        return count_rows(session)


def audit_actions(factory: sessionmaker[Session]) -> list[str]:
    with factory() as session:
        return list(session.scalars(select(AuditEntry.action).order_by(AuditEntry.id)))


def stored_files(store: LocalImageStore) -> list[str]:
    """Every file under the store root (not only well-formed keys): nothing may hide."""
    return sorted(
        p.relative_to(store.root).as_posix() for p in store.root.rglob("*") if p.is_file()
    )


def write_tree(root: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def run_items(
    runtime: Runtime, items: Iterable[IngestItem], summary: IngestSummary, *, parallel: bool = False
) -> IngestSummary:
    runner = IngestRunner(runtime.factory, runtime.store, runtime.settings)
    return runner.run(items, actor="test", action="ingest.test", summary=summary, parallel=parallel)


def reasons(summary: IngestSummary) -> dict[str, str]:
    return {entry["path"]: entry["reason"] for entry in summary.rejected}


# --- hostile image bytes -------------------------------------------------------


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def png_bomb(side: int = 30_000) -> bytes:
    """A complete, valid 1-bit grayscale PNG of ``side`` x ``side`` zeros.

    About 110 MB of scanlines compress to about 0.5 MB (in a quarter of a
    second); decoded at 8 bits a pixel (as Pillow would) it would take
    ``side**2`` bytes (900 MB at 30000).
    """
    row = b"\x00" * (1 + (side + 7) // 8)
    compressor = zlib.compressobj(1)
    block = row * 1000
    parts = [compressor.compress(block) for _ in range(side // 1000)]
    parts.append(compressor.compress(row * (side % 1000)))
    parts.append(compressor.flush())
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", b"".join(parts))
        + _png_chunk(b"IEND", b"")
    )


def png_declaring(width: int, height: int, seed: int = 1) -> bytes:
    """A small real PNG whose IHDR is patched (with a valid CRC) to declare another size."""
    data = bytearray(png(seed))
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
    return bytes(data)


def gif_declaring(width: int, height: int, seed: int = 1) -> bytes:
    """A small real GIF whose logical screen descriptor is patched to declare another size."""
    data = bytearray(encode(pattern(seed), "GIF"))
    assert data[:6] == b"GIF89a" or data[:6] == b"GIF87a"
    data[6:10] = struct.pack("<HH", width, height)
    return bytes(data)


def truncated_jpeg(seed: int = 1) -> bytes:
    data = jpeg(seed)
    return data[: len(data) // 2]


def bmp(seed: int = 1) -> bytes:
    return encode(pattern(seed), "BMP")


def tiff(seed: int = 1) -> bytes:
    return encode(pattern(seed), "TIFF")


def animated_gif(first_seed: int, second_seed: int) -> bytes:
    out = io.BytesIO()
    first, second = pattern(first_seed), pattern(second_seed)
    first.save(out, format="GIF", save_all=True, append_images=[second], duration=100, loop=0)
    return out.getvalue()


def open_bytes(data: bytes) -> PILImage.Image:
    image = PILImage.open(io.BytesIO(data))
    image.load()
    return image
