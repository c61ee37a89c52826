"""Batch ingestion through IngestRunner on a real (per-test) SQLite database."""

from __future__ import annotations

import io
import os
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage
from PIL import PngImagePlugin
from sqlalchemy import func, select

from curation.exceptions import RejectedInput
from curation.hashing import perceptual_hash, to_unsigned64
from curation.ingest.folders import crawl_items
from curation.ingest.prepare import prepare_image
from curation.ingest.records import IngestItem, IngestSummary, SourceSpec
from curation.ingest.runner import IngestRunner, read_untrusted_file
from curation.models import AuditEntry, Image, ImageSource, NearDuplicateGroup, SourceKind
from curation.runtime import Runtime, build_runtime
from curation.settings import Settings
from curation.store import LocalImageStore
from tests.curation.helpers import (
    animated_gif,
    audit_actions,
    bmp,
    counts,
    gif_declaring,
    open_bytes,
    png_bomb,
    png_declaring,
    reasons,
    run_items,
    stored_files,
    tiff,
    truncated_jpeg,
    write_tree,
)
from tests.factories import encode, image_row, jpeg, near_copy, pattern, png, with_exif

MAX_BYTES = 1024 * 1024


def _crawl(runtime: Runtime, root: Path, **kwargs: object) -> IngestSummary:
    summary = IngestSummary()
    items = crawl_items(root, crawler="test-crawler", manifest=None, summary=summary)
    return run_items(runtime, items, summary, **kwargs)  # type: ignore[arg-type]


def _images(runtime: Runtime) -> list[Image]:
    with runtime.factory() as session:
        return list(session.scalars(select(Image).order_by(Image.id)))


def _image_by_sha(runtime: Runtime, data: bytes) -> Image:
    sha = prepare_image(data, max_bytes=1 << 30, max_pixels=10**9).sha256
    with runtime.factory() as session:
        image = session.scalars(select(Image).where(Image.sha256 == sha)).one()
        session.expunge(image)
        return image


@pytest.fixture
def small_limit_runtime(settings: Settings) -> Runtime:
    runtime = build_runtime(replace(settings, max_image_bytes=MAX_BYTES))
    yield runtime  # type: ignore[misc]
    runtime.dispose()


# --- the bad-input battery -----------------------------------------------------


def test_bad_files_are_rejected_with_their_reason_and_leave_nothing(
    small_limit_runtime: Runtime, tmp_path: Path
) -> None:
    runtime = small_limit_runtime
    root = write_tree(
        tmp_path / "crawl",
        {
            "a_good.jpg": jpeg(1),
            "b_truncated.jpg": truncated_jpeg(2),
            "c_text.jpg": b"<html><body>404 not found</body></html>\n",
            "d_empty.jpg": b"",
            "e_bomb.png": png_bomb(30_000),
            "f_huge.gif": gif_declaring(65535, 65535),
            "g_huge.png": png_declaring(100_000, 100_000),
            "h_over_our_limit.png": png_declaring(9000, 9000),
            "i_bitmap.bmp": bmp(3),
            "j_scan.tif": tiff(4),
            "k_big.jpg": jpeg(5) + b"\x00" * MAX_BYTES,
            "m/nested_good.png": png(6),
            "z_good.webp": encode(pattern(7), "WEBP"),
            ".hidden.jpg": jpeg(8),
        },
    )
    outside = tmp_path / "outside.jpg"
    outside.write_bytes(jpeg(9))
    os.symlink(outside, root / "l_link_out.jpg")
    os.symlink(root / "a_good.jpg", root / "l_link_in.jpg")
    os.symlink(tmp_path / "missing.jpg", root / "l_dangling.jpg")
    linked_dir = write_tree(tmp_path / "elsewhere", {"x.jpg": jpeg(10)})
    os.symlink(linked_dir, root / "n_linked_dir")

    summary = _crawl(runtime, root)

    got = reasons(summary)
    assert got["b_truncated.jpg"].startswith("corrupt or truncated jpeg image")
    assert got["c_text.jpg"] == "not an image: the file holds text"
    assert got["d_empty.jpg"] == "empty file"
    assert got["e_bomb.png"].startswith("too many pixels")
    assert got["f_huge.gif"].startswith("too many pixels")
    assert got["g_huge.png"].startswith("too many pixels")
    assert got["h_over_our_limit.png"] == "too many pixels: 9000x9000 (limit 60000000 pixels)"
    assert got["i_bitmap.bmp"].startswith("unsupported format: bmp")
    assert got["j_scan.tif"].startswith("unsupported format: tiff")
    assert got["k_big.jpg"].startswith("file too large:")
    assert got["k_big.jpg"].endswith(f"(limit {MAX_BYTES})")
    for link in ("l_link_out.jpg", "l_link_in.jpg", "l_dangling.jpg"):
        assert got[link] == "symbolic links are not followed"
    assert len(got) == 13  # hidden files and linked folders are not walked at all

    # The good ones around them went in.
    assert summary.files == 16
    assert summary.ingested == 3
    assert (summary.exact_duplicates, summary.already_present) == (0, 0)
    assert counts(runtime.factory) == {
        "images": 3,
        "sources": 3,
        "labels": 0,
        "groups": 3,
        "classes": 0,
        "aliases": 0,
    }
    with runtime.factory() as session:
        paths = sorted(session.scalars(select(ImageSource.original_path)))
    assert paths == ["a_good.jpg", "m/nested_good.png", "z_good.webp"]
    assert len(stored_files(runtime.store)) == 3
    assert sorted(stored_files(runtime.store)) == sorted(i.storage_key for i in _images(runtime))


def test_items_given_as_bytes_and_refused_up_front(runtime: Runtime) -> None:
    # Items can carry bytes instead of a path (reports, uploads), or arrive
    # already refused (a missing annotation): neither stops the batch.
    items = [
        IngestItem(
            name="one",
            source=SourceSpec(kind=SourceKind.CRAWL, crawler="c", original_path="one"),
            data=jpeg(1),
        ),
        IngestItem(
            name="bad",
            source=SourceSpec(kind=SourceKind.CRAWL, crawler="c", original_path="bad"),
            data=b"\x89PNG\r\n\x1a\n" + b"\x00" * 64,
        ),
        IngestItem(
            name="refused",
            source=SourceSpec(kind=SourceKind.CRAWL, crawler="c"),
            rejected_reason="refused up front",
        ),
        IngestItem(
            name="two",
            source=SourceSpec(kind=SourceKind.CRAWL, crawler="c", original_path="two"),
            data=jpeg(2),
        ),
    ]
    summary = run_items(runtime, items, IngestSummary())
    assert summary.ingested == 2
    assert reasons(summary) == {
        "bad": "content is not a valid png image",
        "refused": "refused up front",
    }
    assert summary.files == 4
    assert counts(runtime.factory)["images"] == 2


def test_read_untrusted_file(tmp_path: Path) -> None:
    target = tmp_path / "a.jpg"
    target.write_bytes(b"x" * 100)
    assert read_untrusted_file(target, max_bytes=100) == b"x" * 100
    with pytest.raises(RejectedInput, match=r"^file too large: 100 bytes \(limit 99\)$"):
        read_untrusted_file(target, max_bytes=99)
    link = tmp_path / "link.jpg"
    os.symlink(target, link)
    with pytest.raises(RejectedInput, match=r"^symbolic links are not followed$"):
        read_untrusted_file(link, max_bytes=100)
    with pytest.raises(RejectedInput, match=r"^cannot read file: "):
        read_untrusted_file(tmp_path / "missing.jpg", max_bytes=100)


# --- formats and stored copies -------------------------------------------------


def test_format_is_sniffed_from_content_not_extension(runtime: Runtime, tmp_path: Path) -> None:
    root = write_tree(
        tmp_path / "crawl",
        {
            "really_png.jpg": png(1),
            "really_jpeg.png": jpeg(2),
            "really_webp.gif": encode(pattern(3), "WEBP"),
            "no_extension": encode(pattern(4), "AVIF"),
        },
    )
    summary = _crawl(runtime, root)
    assert summary.rejected == []
    assert _image_by_sha(runtime, png(1)).format == "png"
    assert _image_by_sha(runtime, jpeg(2)).format == "jpeg"
    assert _image_by_sha(runtime, encode(pattern(3), "WEBP")).format == "webp"
    assert _image_by_sha(runtime, encode(pattern(4), "AVIF")).format == "avif"
    for image in _images(runtime):
        stored = open_bytes(runtime.store.get(image.storage_key))
        assert stored.format == "JPEG" and image.stored_format == "jpeg"
        assert image.storage_key.endswith(".jpg")
        assert (image.width, image.height) == stored.size == (320, 240)


def test_gif_first_frame_webp_and_avif_are_stored(runtime: Runtime, tmp_path: Path) -> None:
    files = {
        "anim.gif": animated_gif(11, 12),
        "photo.webp": encode(pattern(13), "WEBP", quality=90),
        "photo.avif": encode(pattern(14), "AVIF", quality=90),
    }
    summary = _crawl(runtime, write_tree(tmp_path / "crawl", files))
    assert (summary.ingested, summary.rejected) == (3, [])
    for name, seed in (("anim.gif", 11), ("photo.webp", 13), ("photo.avif", 14)):
        image = _image_by_sha(runtime, files[name])
        assert image.format == name.rsplit(".", 1)[1]
        stored = np.asarray(
            open_bytes(runtime.store.get(image.storage_key)).convert("RGB"), np.int16
        )
        assert np.abs(stored - np.asarray(pattern(seed), np.int16)).mean() < 12
    gif = _image_by_sha(runtime, files["anim.gif"])
    stored = np.asarray(open_bytes(runtime.store.get(gif.storage_key)).convert("RGB"), np.int16)
    assert np.abs(stored - np.asarray(pattern(12), np.int16)).mean() > 30  # not the second frame


def test_stored_copy_drops_exif_and_gps_and_applies_orientation(
    runtime: Runtime, tmp_path: Path
) -> None:
    original = with_exif(21, orientation=6, gps=True)
    assert open_bytes(original).getexif().get(0x8825)  # the input does carry GPS
    summary = _crawl(runtime, write_tree(tmp_path / "crawl", {"phone.jpg": original}))
    assert summary.ingested == 1
    image = _image_by_sha(runtime, original)
    stored_bytes = runtime.store.get(image.storage_key)
    stored = open_bytes(stored_bytes)
    assert dict(stored.getexif()) == {}
    assert "exif" not in stored.info
    assert b"TestCam" not in stored_bytes
    assert stored.size == (240, 320)
    assert (image.width, image.height) == (240, 320)
    # Rotated 90 degrees clockwise: the stored top row is the original's left column.
    expected = PILImage.open(io.BytesIO(original)).rotate(-90, expand=True)
    diff = np.abs(np.asarray(stored, np.int16) - np.asarray(expected, np.int16)).mean()
    assert diff < 6


def test_stored_copy_drops_text_chunks_and_appended_bytes(runtime: Runtime, tmp_path: Path) -> None:
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "secret-location-37.5N")
    with_text = io.BytesIO()
    pattern(22).convert("RGBA").save(with_text, format="PNG", pnginfo=info)
    polyglot = jpeg(23) + b"<script>alert(1)</script>"
    files = {"text.png": with_text.getvalue(), "polyglot.jpg": polyglot}
    summary = _crawl(runtime, write_tree(tmp_path / "crawl", files))
    assert summary.ingested == 2
    transparent = _image_by_sha(runtime, files["text.png"])
    assert transparent.stored_format == "png" and transparent.storage_key.endswith(".png")
    stored_png = runtime.store.get(transparent.storage_key)
    assert b"secret-location" not in stored_png
    assert open_bytes(stored_png).mode == "RGBA"
    stored_jpeg = runtime.store.get(_image_by_sha(runtime, polyglot).storage_key)
    assert b"<script>" not in stored_jpeg


def test_sixteen_bit_grayscale_png_keeps_its_picture(runtime: Runtime, tmp_path: Path) -> None:
    gray = np.asarray(pattern(24).convert("L"), dtype=np.uint16)
    data = encode(PILImage.fromarray(gray * 257), "PNG")
    assert open_bytes(data).mode.startswith("I")
    summary = _crawl(runtime, write_tree(tmp_path / "crawl", {"deep.png": data}))
    assert summary.ingested == 1
    image = _image_by_sha(runtime, data)
    stored = np.asarray(open_bytes(runtime.store.get(image.storage_key)).convert("L"), np.int16)
    assert np.abs(stored - gray.astype(np.int16)).mean() < 3
    # And its perceptual hash is that of the picture, not of a blank image.
    assert bin(to_unsigned64(image.phash) ^ perceptual_hash(pattern(24))).count("1") <= 4


# --- exact duplicates and idempotency ------------------------------------------


def test_same_bytes_under_two_paths_is_one_image_with_two_sources(
    runtime: Runtime, tmp_path: Path
) -> None:
    root = write_tree(
        tmp_path / "crawl", {"a/one.jpg": jpeg(1), "b/copy.jpg": jpeg(1), "c.jpg": jpeg(2)}
    )
    summary = _crawl(runtime, root)
    assert (summary.files, summary.ingested, summary.exact_duplicates) == (3, 2, 1)
    assert summary.already_present == 0
    assert counts(runtime.factory)["images"] == 2
    with runtime.factory() as session:
        image = session.scalars(
            select(Image).where(Image.sha256 == _image_by_sha(runtime, jpeg(1)).sha256)
        ).one()
        assert sorted(s.original_path for s in image.sources) == ["a/one.jpg", "b/copy.jpg"]
        assert {s.kind for s in image.sources} == {"crawl"}
        assert {s.crawler for s in image.sources} == {"test-crawler"}
    assert len(stored_files(runtime.store)) == 2


def test_ingesting_again_adds_nothing(runtime: Runtime, tmp_path: Path) -> None:
    root = write_tree(
        tmp_path / "crawl",
        {
            "a.jpg": jpeg(1),
            "b.jpg": jpeg(1),
            "c.png": png(2),
            "d.jpg": near_copy(2),
            "bad.jpg": b"",
        },
    )
    first = _crawl(runtime, root)
    assert (first.ingested, first.exact_duplicates, first.near_duplicates) == (3, 1, 1)
    before, files_before = counts(runtime.factory), stored_files(runtime.store)

    second = _crawl(runtime, root)
    assert second.files == 5
    assert second.already_present == 4  # every stored file; the bad one is rejected again
    assert (second.ingested, second.exact_duplicates, second.near_duplicates) == (0, 0, 0)
    assert reasons(second) == {"bad.jpg": "empty file"}
    assert counts(runtime.factory) == before
    assert stored_files(runtime.store) == files_before
    assert audit_actions(runtime.factory) == ["ingest.test", "ingest.test"]


def test_audit_entry_summarises_the_run(runtime: Runtime, tmp_path: Path) -> None:
    _crawl(runtime, write_tree(tmp_path / "crawl", {"a.jpg": jpeg(1), "bad.jpg": b"oops"}))
    with runtime.factory() as session:
        entry = session.scalars(select(AuditEntry)).one()
    assert (entry.actor, entry.action, entry.entity_type) == ("test", "ingest.test", "ingest")
    assert entry.details["files"] == 2
    assert entry.details["ingested"] == 1
    assert entry.details["rejected_count"] == 1
    assert "rejected" not in entry.details


# --- near duplicates -----------------------------------------------------------


def test_near_copy_joins_the_group_of_its_original(runtime: Runtime, tmp_path: Path) -> None:
    root = write_tree(
        tmp_path / "crawl", {"a.jpg": jpeg(3), "b.jpg": near_copy(3), "c.jpg": jpeg(4)}
    )
    summary = _crawl(runtime, root)
    assert (summary.ingested, summary.near_duplicates) == (3, 1)
    original = _image_by_sha(runtime, jpeg(3))
    copy = _image_by_sha(runtime, near_copy(3))
    other = _image_by_sha(runtime, jpeg(4))
    assert copy.group_id == original.group_id
    assert other.group_id != original.group_id
    assert counts(runtime.factory)["groups"] == 2


def test_near_copy_in_a_later_run_joins_the_committed_group(
    runtime: Runtime, tmp_path: Path
) -> None:
    _crawl(runtime, write_tree(tmp_path / "one", {"a.jpg": jpeg(3)}))
    summary = _crawl(runtime, write_tree(tmp_path / "two", {"b.jpg": near_copy(3)}))
    assert summary.near_duplicates == 1
    assert _image_by_sha(runtime, near_copy(3)).group_id == _image_by_sha(runtime, jpeg(3)).group_id


def test_near_copies_across_chunks_of_one_run(settings: Settings, tmp_path: Path) -> None:
    runtime = build_runtime(replace(settings, ingest_commit_every=2))
    try:
        files = {f"{seed:02d}.jpg": jpeg(seed) for seed in range(1, 6)}
        files |= {f"{seed:02d}_copy.jpg": near_copy(seed) for seed in range(1, 6)}
        summary = _crawl(runtime, write_tree(tmp_path / "crawl", files))
        assert (summary.ingested, summary.near_duplicates) == (10, 5)
        with runtime.factory() as session:
            sizes = (
                session.execute(select(func.count()).select_from(Image).group_by(Image.group_id))
                .scalars()
                .all()
            )
        assert sorted(sizes) == [2] * 5
    finally:
        runtime.dispose()


def _plant_image(runtime: Runtime, n: int, phash_unsigned: int) -> tuple[int, int]:
    with runtime.factory() as session, session.begin():
        image = image_row(session, n, phash_unsigned=phash_unsigned)
        return image.id, image.group_id


def test_an_image_bridging_two_groups_merges_them(runtime: Runtime, tmp_path: Path) -> None:
    bridge = jpeg(31)
    phash = to_unsigned64(prepare_image(bridge, max_bytes=1 << 30, max_pixels=10**9).phash_signed)
    # Two images each `threshold` bits from the bridge, on different bits: twice
    # the threshold from each other, so they started in two groups.
    threshold = runtime.settings.near_duplicate_max_distance
    assert 1 <= threshold <= 30
    left = phash ^ ((1 << threshold) - 1)
    right = phash ^ (((1 << threshold) - 1) << 32)
    assert bin(left ^ right).count("1") == 2 * threshold
    left_id, left_group = _plant_image(runtime, 1, left)
    right_id, right_group = _plant_image(runtime, 2, right)
    assert left_group != right_group

    summary = _crawl(runtime, write_tree(tmp_path / "crawl", {"bridge.jpg": bridge}))

    assert (summary.ingested, summary.near_duplicates) == (1, 1)
    with runtime.factory() as session:
        groups = dict(session.execute(select(Image.id, Image.group_id)).tuples().all())
        remaining = list(session.scalars(select(NearDuplicateGroup.id)))
    bridge_id = next(i for i in groups if i not in (left_id, right_id))
    kept = min(left_group, right_group)
    assert groups == {left_id: kept, right_id: kept, bridge_id: kept}
    assert remaining == [kept]  # the other group's row is gone


# --- failure in the middle of a chunk ------------------------------------------


class DiskFullStore(LocalImageStore):
    """A real local store whose disk fills after ``room`` files."""

    def __init__(self, root: Path, room: int) -> None:
        super().__init__(root)
        self.room = room

    def put(self, key: str, data: bytes) -> bool:
        if self.room == 0:
            raise OSError(28, "No space left on device")
        self.room -= 1
        return super().put(key, data)


def test_a_failure_mid_chunk_rolls_back_the_whole_chunk(runtime: Runtime, tmp_path: Path) -> None:
    root = write_tree(tmp_path / "crawl", {f"{seed}.jpg": jpeg(seed) for seed in range(1, 6)})
    store = DiskFullStore(tmp_path / "images", room=2)
    runner = IngestRunner(runtime.factory, store, runtime.settings)
    summary = IngestSummary()
    with pytest.raises(OSError, match="No space left"):
        runner.run(
            crawl_items(root, crawler="c", manifest=None, summary=summary),
            actor="test",
            action="t",
            summary=summary,
            parallel=False,
        )
    # The chunk is one transaction: no row of it survives, and the files it
    # wrote are deleted, so no row points at a missing file.
    assert counts(runtime.factory) == {
        "images": 0,
        "sources": 0,
        "labels": 0,
        "groups": 0,
        "classes": 0,
        "aliases": 0,
    }
    assert stored_files(store) == []

    # Ingesting again (disk freed) repairs it, with the same runner.
    store.room = 100
    again = runner.run(
        crawl_items(root, crawler="c", manifest=None, summary=IngestSummary()),
        actor="test",
        action="t",
        parallel=False,
    )
    assert again.ingested == 5
    assert counts(runtime.factory)["images"] == 5
    assert len(stored_files(store)) == 5


def test_process_pool_gives_the_same_result(settings: Settings, tmp_path: Path) -> None:
    runtime = build_runtime(replace(settings, ingest_workers=2, ingest_commit_every=3))
    try:
        files = {f"{seed}.jpg": jpeg(seed) for seed in range(1, 8)}
        files |= {"copy.jpg": jpeg(1), "near.jpg": near_copy(2), "bad.jpg": b"nope"}
        summary = _crawl(runtime, write_tree(tmp_path / "crawl", files), parallel=True)
        assert (summary.files, summary.ingested, summary.exact_duplicates) == (10, 8, 1)
        assert summary.near_duplicates == 1
        assert reasons(summary) == {"bad.jpg": "not an image: the file holds text"}
        assert counts(runtime.factory)["images"] == 8
    finally:
        runtime.dispose()


def _finishes_within(seconds: float, fn: Callable[[], object], fifo: Path) -> object:
    """Run ``fn`` in a thread; if it blocks on ``fifo``, unblock it and fail."""
    outcome: dict[str, object] = {}

    def target() -> None:
        try:
            outcome["value"] = fn()
        except BaseException as error:  # handed back to the test thread
            outcome["error"] = error

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)  # a writer appears: open() returns
        os.close(fd)
        thread.join(5)
        pytest.fail(f"blocked for more than {seconds} s on a named pipe")
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["value"]


def test_named_pipe_is_rejected_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    with pytest.raises(RejectedInput, match=r"^not a regular file$"):
        _finishes_within(3, lambda: read_untrusted_file(fifo, max_bytes=100), fifo)


def test_named_pipe_in_a_crawl_folder_does_not_stop_the_batch(
    runtime: Runtime, tmp_path: Path
) -> None:
    root = write_tree(tmp_path / "crawl", {"a.jpg": jpeg(1), "z.jpg": jpeg(2)})
    fifo = root / "m_pipe.jpg"
    os.mkfifo(fifo)
    summary = _finishes_within(10, lambda: _crawl(runtime, root), fifo)
    assert isinstance(summary, IngestSummary)
    assert reasons(summary) == {"m_pipe.jpg": "not a regular file"}
    assert summary.ingested == 2
