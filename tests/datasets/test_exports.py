"""Exports of a version, each read back by an independent reader.

Folder: Keras' ``image_dataset_from_directory``. COCO: pycocotools. YOLO: a
parser written here. tf.data: the pipeline against the export's own order.
The images are tiny and generated here; the manifest is built by hand for
the format tests, and the command test goes from labels through a real
snapshot to the files.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image as PILImage
from PIL import JpegImagePlugin
from sqlalchemy.orm import Session

from curation.exceptions import Conflict, NotFound, RejectedInput
from curation.ingest.prepare import prepare_image
from curation.models import Image, NearDuplicateGroup, Split
from curation.runtime import Runtime
from curation.store import LocalImageStore
from curation.store.base import storage_key
from datasets.export import ExportPlan, class_index, export_plan, plan_export
from datasets.export.files import crop_bytes
from datasets.manifest import SPLIT_NAMES, ClassRecord, Manifest, empty_manifest
from tests.factories import encode, jpeg, pattern, png

NAN = (math.nan,) * 4

CLASSES = (
    ClassRecord(1, "namsan-tower", "N Seoul Tower", "active"),
    ClassRecord(2, "gyeongbokgung", "Gyeongbokgung Palace", "active"),
    ClassRecord(3, "불국사", "Bulguksa", "active"),
    ClassRecord(4, "old-gate", "Old Gate", "retired"),
    ClassRecord(5, "never-seen", "Never Seen", "active"),
)


def gray_jpeg(seed: int, width: int, height: int) -> bytes:
    return encode(pattern(seed, width, height).convert("L"), "JPEG", quality=90)


def rgba_png(seed: int, width: int, height: int) -> bytes:
    image = pattern(seed, width, height).convert("RGBA")
    alpha = np.full((height, width), 255, dtype=np.uint8)
    alpha[: height // 3] = 0  # the top third is transparent
    image.putalpha(PILImage.fromarray(alpha, "L"))
    return encode(image, "PNG")


# (bytes, class id, split, box or None)
ROWS: list[tuple[bytes, int, Split, tuple[float, float, float, float] | None]] = [
    (jpeg(1, 48, 36), 1, Split.TRAIN, (4.25, 3.5, 30.75, 20.0)),
    (jpeg(2, 40, 40), 1, Split.TRAIN, None),
    (png(3, 44, 32), 1, Split.VALIDATION, (0.0, 0.0, 44.0, 32.0)),
    (jpeg(4, 48, 36), 1, Split.TEST, (10.0, 5.0, 47.99, 35.0)),
    (jpeg(5, 36, 48), 2, Split.TRAIN, (2.0, 2.0, 20.5, 40.5)),
    (gray_jpeg(6, 48, 36), 2, Split.TRAIN, (1.0, 1.0, 60.0, 30.0)),  # wider than the image
    (rgba_png(7, 40, 30), 2, Split.TEST, (5.5, 6.5, 25.5, 26.5)),
    (jpeg(8, 48, 36), 2, Split.TEST, None),
    (jpeg(9, 32, 32), 3, Split.TRAIN, (3.0, 4.0, 28.0, 29.0)),
    (jpeg(10, 32, 32), 3, Split.VALIDATION, None),
    (jpeg(11, 32, 32), 3, Split.TEST, (60.0, 60.0, 70.0, 70.0)),  # outside the image
    (jpeg(12, 32, 32), 4, Split.TRAIN, (1.0, 1.0, 9.0, 9.0)),  # a retired class
]


def add_image(session: Session, store: LocalImageStore, data: bytes) -> Image:
    prepared = prepare_image(data, max_bytes=10**7, max_pixels=10**7)
    key = storage_key(prepared.sha256, prepared.stored_extension)
    store.put(key, prepared.stored_bytes)
    group = NearDuplicateGroup()
    session.add(group)
    session.flush()
    image = Image(
        sha256=prepared.sha256,
        phash=prepared.phash_signed,
        width=prepared.width,
        height=prepared.height,
        format=prepared.format,
        byte_size=prepared.byte_size,
        storage_key=key,
        stored_format=prepared.stored_format,
        group_id=group.id,
    )
    session.add(image)
    session.flush()
    return image


def build_manifest(image_ids: list[int], classes: tuple[ClassRecord, ...] = CLASSES) -> Manifest:
    order = np.argsort(image_ids)
    rows = [ROWS[i] for i in order]
    return Manifest(
        image_ids=np.asarray(image_ids, dtype=np.int64)[order],
        class_ids=np.asarray([r[1] for r in rows], dtype=np.int64),
        boxes=np.asarray([r[3] or NAN for r in rows], dtype=np.float64).reshape(-1, 4),
        splits=np.asarray([int(r[2]) for r in rows], dtype=np.int8),
        label_ids=np.arange(1, len(rows) + 1, dtype=np.int64),
        classes=classes,
    )


@pytest.fixture
def images(db_session: Session, store: LocalImageStore) -> list[Image]:
    return [add_image(db_session, store, row[0]) for row in ROWS]


@pytest.fixture
def manifest(images: list[Image]) -> Manifest:
    return build_manifest([image.id for image in images])


@pytest.fixture
def plan(db_session: Session, manifest: Manifest) -> ExportPlan:
    return plan_export(db_session, manifest, source={"version": "v1"})


def read_csv(root: Path) -> list[dict[str, str]]:
    with (root / "manifest.csv").open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def stored_box(images: list[Image], sha: str) -> tuple[float, ...] | None:
    """The box the test put on the image with hash ``sha``, clipped to the image."""
    for image, row in zip(images, ROWS, strict=True):
        if image.sha256 == sha:
            box = row[3]
            if box is None:
                return None
            x0, y0 = max(0.0, box[0]), max(0.0, box[1])
            x1, y1 = min(float(image.width), box[2]), min(float(image.height), box[3])
            return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None
    raise AssertionError(sha)


def all_files(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


# --- the plan --------------------------------------------------------------------------


def test_plan_orders_by_split_slug_hash_and_keeps_active_classes(
    plan: ExportPlan, images: list[Image]
) -> None:
    assert plan.class_slugs == ("gyeongbokgung", "namsan-tower", "불국사")  # never-seen: no rows
    assert plan.class_names == ("Gyeongbokgung Palace", "N Seoul Tower", "Bulguksa")
    assert dict(plan.dropped) == {"class_not_active": 1}
    keys = [
        (int(s), plan.class_slugs[int(c)], sha)
        for s, c, sha in zip(plan.splits, plan.class_indices, plan.sha256, strict=True)
    ]
    assert keys == sorted(keys)
    assert len(plan) == len(ROWS) - 1
    assert all(
        name == f"{sha[:16]}.{name[-3:]}" for name, sha in zip(plan.names, plan.sha256, strict=True)
    )
    assert len(set(plan.names)) == len(plan.names)
    # The box outside its image is reported and dropped; the row stays.
    assert [p["problem"] for p in plan.problems] == ["box_outside_image"]
    outside = plan.sha256.index(plan.problems[0]["sha256"])
    assert not plan.has_box[outside]


def test_class_index_is_slug_order_of_classes_with_rows(manifest: Manifest) -> None:
    assert class_index(manifest) == {
        "gyeongbokgung": 0,
        "namsan-tower": 1,
        "old-gate": 2,
        "불국사": 3,
    }


def test_plan_order_does_not_depend_on_row_order_or_ids(
    db_session: Session, store: LocalImageStore, images: list[Image], plan: ExportPlan
) -> None:
    # The same content under other database ids, read in another order.
    shuffled = build_manifest([image.id for image in images])
    permutation = np.random.default_rng(3).permutation(len(shuffled))
    permuted = Manifest(
        image_ids=shuffled.image_ids[permutation],
        class_ids=shuffled.class_ids[permutation],
        boxes=shuffled.boxes[permutation],
        splits=shuffled.splits[permutation],
        label_ids=shuffled.label_ids[permutation],
        classes=tuple(reversed(CLASSES)),
    )
    again = plan_export(db_session, permuted, source={"version": "v1"})
    assert again.sha256 == plan.sha256
    assert again.names == plan.names
    assert again.class_slugs == plan.class_slugs
    np.testing.assert_array_equal(again.class_indices, plan.class_indices)


def test_unsafe_slug_and_missing_image_are_refused(
    db_session: Session, images: list[Image]
) -> None:
    evil = tuple(replace(c, slug="../../etc") if c.class_id == 1 else c for c in CLASSES)
    with pytest.raises(RejectedInput, match="cannot be used"):
        plan_export(db_session, build_manifest([i.id for i in images], evil))
    hidden = tuple(replace(c, slug=".hidden") if c.class_id == 1 else c for c in CLASSES)
    with pytest.raises(RejectedInput):
        plan_export(db_session, build_manifest([i.id for i in images], hidden))
    with pytest.raises(NotFound):
        plan_export(db_session, build_manifest([i.id + 1000 for i in images]))


# --- folder per class, read back by Keras -------------------------------------------------


def test_folder_export_reads_back_with_keras(
    tmp_path: Path, plan: ExportPlan, store: LocalImageStore
) -> None:
    import keras

    root = tmp_path / "out"
    summary = export_plan(plan, store, root, fmt="folder")
    assert summary.images == len(plan) == len(read_csv(root))
    assert summary.splits == {"train": 5, "validation": 2, "test": 4}
    assert summary.bytes == sum(len(b) for n, b in all_files(root).items() if "/" in n)
    rows = read_csv(root)
    for split in SPLIT_NAMES:
        expected = [r for r in rows if r["split"] == split]
        dataset = keras.utils.image_dataset_from_directory(
            root / split, shuffle=False, batch_size=4, image_size=(16, 16), verbose=False
        )
        # Every split has a folder for every class, so indices agree across splits.
        assert dataset.class_names == list(plan.class_slugs)
        assert [Path(p).relative_to(root).as_posix() for p in dataset.file_paths] == [
            r["path"] for r in expected
        ]
        labels = np.concatenate([y.numpy() for _, y in dataset])
        assert labels.tolist() == [int(r["class_index"]) for r in expected]
        counts = {slug: c[split] for slug, c in summary.classes.items()}
        assert counts == {
            slug: sum(r["class_slug"] == slug for r in expected) for slug in plan.class_slugs
        }
    # Without --crop the files are the stored copies, byte for byte.
    for row in rows:
        key = plan.storage_keys[plan.sha256.index(row["sha256"])]
        assert (root / row["path"]).read_bytes() == store.get(key)
    metadata = json.loads((root / "export.json").read_text(encoding="utf-8"))
    assert metadata["source"] == {"version": "v1"}
    assert [c["slug"] for c in metadata["classes"]] == list(plan.class_slugs)
    assert not list(tmp_path.glob(".out.*"))  # no staging folder left behind


def test_csv_manifest_boxes_sizes_and_hashes(
    tmp_path: Path, plan: ExportPlan, store: LocalImageStore, images: list[Image]
) -> None:
    root = tmp_path / "csv"
    export_plan(plan, store, root, fmt="csv")
    rows = read_csv(root)
    assert list(rows[0]) == [
        "path",
        "split",
        "class_index",
        "class_slug",
        "class_display_name",
        "box_x_min",
        "box_y_min",
        "box_x_max",
        "box_y_max",
        "width",
        "height",
        "offset_x",
        "offset_y",
        "sha256",
    ]
    assert all(r["path"].startswith("images/") for r in rows)
    display = {r["class_slug"]: r["class_display_name"] for r in rows}
    assert display["불국사"] == "Bulguksa"
    for row in rows:
        with PILImage.open(root / row["path"]) as image:
            assert image.size == (int(row["width"]), int(row["height"]))
        box = stored_box(images, row["sha256"])
        if box is None:
            assert row["box_x_min"] == row["box_y_max"] == ""
        else:
            written = [float(row[f"box_{c}"]) for c in ("x_min", "y_min", "x_max", "y_max")]
            assert written == pytest.approx(box, abs=0.005)
        assert (row["offset_x"], row["offset_y"]) == ("0", "0")


# --- COCO, read back by pycocotools ---------------------------------------------------------


@pytest.mark.parametrize("crop", [False, True])
def test_coco_reads_back_with_pycocotools(
    tmp_path: Path, plan: ExportPlan, store: LocalImageStore, images: list[Image], crop: bool
) -> None:
    from pycocotools.coco import COCO

    root = tmp_path / "coco"
    export_plan(plan, store, root, fmt="coco", crop=crop)
    seen_ids: set[int] = set()
    for value, split in enumerate(SPLIT_NAMES):
        coco = COCO(str(root / "annotations" / f"{split}.json"))
        categories = coco.loadCats(coco.getCatIds())
        assert [c["name"] for c in categories] == list(plan.class_slugs)
        assert [c["id"] for c in categories] == [1, 2, 3]
        image_ids = coco.getImgIds()
        assert len(image_ids) == int((plan.splits == value).sum())
        seen_ids |= set(image_ids)
        for info in coco.loadImgs(sorted(image_ids)):
            path = root / "images" / split / info["file_name"]
            with PILImage.open(path) as image:
                assert image.size == (info["width"], info["height"])
            (annotation,) = coco.loadAnns(coco.getAnnIds(imgIds=[info["id"]]))
            row = info["id"] - 1  # ids are export positions counted from 1
            assert plan.names[row] == info["file_name"]
            assert annotation["category_id"] == int(plan.class_indices[row]) + 1
            x, y, w, h = annotation["bbox"]
            assert annotation["area"] == pytest.approx(w * h, abs=0.01)
            assert x >= 0 and y >= 0 and x + w <= info["width"] + 1e-6
            assert y + h <= info["height"] + 1e-6
            box = stored_box(images, info["sha256"])
            if box is None:
                assert annotation["box_source"] == "whole_image"
                assert [x, y, w, h] == [0, 0, info["width"], info["height"]]
            elif crop:
                # The image is the box rounded outwards; the box fills it to within 1 px.
                assert annotation["box_source"] == "label"
                assert x < 1 and y < 1
                assert info["width"] - 2 < w <= info["width"]
                assert info["height"] - 2 < h <= info["height"]
                assert (w, h) == pytest.approx((box[2] - box[0], box[3] - box[1]), abs=0.01)
            else:
                assert [x, y, x + w, y + h] == pytest.approx(box, abs=0.01)
    assert len(seen_ids) == len(plan)  # ids unique across the three files


# --- YOLO, read back by a parser of our own ---------------------------------------------------


def parse_yolo(
    root: Path,
) -> tuple[list[str], dict[str, list[tuple[int, float, float, float, float]]]]:
    names = (root / "classes.txt").read_text(encoding="utf-8").splitlines()
    labels: dict[str, list[tuple[int, float, float, float, float]]] = {}
    for path in sorted((root / "labels").rglob("*.txt")):
        entries = []
        for line in path.read_text(encoding="ascii").splitlines():
            fields = line.split()
            assert len(fields) == 5, line
            cls = int(fields[0])
            values = tuple(float(v) for v in fields[1:])
            assert 0 <= cls < len(names)
            assert all(0.0 <= v <= 1.0 for v in values), line
            entries.append((cls, *values))
        labels[path.relative_to(root / "labels").with_suffix("").as_posix()] = entries  # type: ignore[misc]
    return names, labels


@pytest.mark.parametrize("crop", [False, True])
def test_yolo_labels_round_trip_to_the_boxes(
    tmp_path: Path, plan: ExportPlan, store: LocalImageStore, images: list[Image], crop: bool
) -> None:
    root = tmp_path / "yolo"
    export_plan(plan, store, root, fmt="yolo", crop=crop)
    names, labels = parse_yolo(root)
    assert names == list(plan.class_slugs)
    yaml = (root / "data.yaml").read_text(encoding="utf-8")
    assert 'names: ["gyeongbokgung", "namsan-tower", "불국사"]' in yaml
    assert "train: images/train\nval: images/validation\ntest: images/test\nnc: 3\n" in yaml
    image_files = sorted(p for p in (root / "images").rglob("*") if p.is_file())
    assert len(image_files) == len(labels) == len(plan)
    windows = plan.crop_windows(crop=crop)
    for row, name in enumerate(plan.names):
        split = SPLIT_NAMES[int(plan.splits[row])]
        stem = name.rsplit(".", 1)[0]
        ((cls, xc, yc, w, h),) = labels[f"{split}/{stem}"]
        assert cls == int(plan.class_indices[row])
        with PILImage.open(root / "images" / split / name) as image:
            width, height = image.size
        corners = ((xc - w / 2) * width, (yc - h / 2) * height)
        corners += ((xc + w / 2) * width, (yc + h / 2) * height)
        box = stored_box(images, plan.sha256[row])
        if box is None:
            assert (xc, yc, w, h) == (0.5, 0.5, 1.0, 1.0)
            continue
        left, top = int(windows[row][0]), int(windows[row][1])
        on_original = (corners[0] + left, corners[1] + top, corners[2] + left, corners[3] + top)
        assert on_original == pytest.approx(box, abs=1.0)


# --- cropping ------------------------------------------------------------------------------------


def test_crop_cuts_each_boxed_image_to_its_box(
    tmp_path: Path, plan: ExportPlan, store: LocalImageStore, images: list[Image]
) -> None:
    root = tmp_path / "cropped"
    summary = export_plan(plan, store, root, fmt="folder", crop=True)
    assert summary.cropped == int(plan.has_box.sum()) == 7
    for row in read_csv(root):
        box = stored_box(images, row["sha256"])
        image_row = next(i for i in images if i.sha256 == row["sha256"])
        original = PILImage.open(io.BytesIO(store.get(image_row.storage_key)))
        with PILImage.open(root / row["path"]) as exported:
            size = exported.size
            pixels = np.asarray(exported.convert("RGB"), dtype=np.float64)
        if box is None:
            assert size == original.size
            continue
        # Rounded outwards: never smaller than the box, at most 1 px larger each side.
        assert box[2] - box[0] <= size[0] < box[2] - box[0] + 2
        assert box[3] - box[1] <= size[1] < box[3] - box[1] + 2
        assert (int(row["offset_x"]), int(row["offset_y"])) == (
            math.floor(box[0]),
            math.floor(box[1]),
        )
        left, top = int(row["offset_x"]), int(row["offset_y"])
        expected = original.convert("RGB").crop((left, top, left + size[0], top + size[1]))
        difference = np.abs(pixels - np.asarray(expected, dtype=np.float64)).mean()
        lossless = image_row.stored_format == "png"
        assert difference == 0 if lossless else difference < 3, difference


def test_crop_keeps_jpeg_quantisation_tables_without_subsampling_again(
    store: LocalImageStore, images: list[Image]
) -> None:
    source = store.get(images[0].storage_key)
    cropped = crop_bytes(source, "jpeg", (2, 2, 20, 20))
    with PILImage.open(io.BytesIO(source)) as a, PILImage.open(io.BytesIO(cropped)) as b:
        assert b.size == (18, 18)
        assert a.quantization == b.quantization  # type: ignore[attr-defined]
        assert JpegImagePlugin.get_sampling(b) == 0  # 4:4:4


# --- stability and atomic writes ----------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["csv", "coco", "yolo"])
def test_two_exports_are_byte_identical(
    tmp_path: Path, plan: ExportPlan, store: LocalImageStore, fmt: Any
) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    export_plan(plan, store, first, fmt=fmt, crop=True, workers=1)
    export_plan(plan, store, second, fmt=fmt, crop=True, workers=3)
    assert all_files(first) == all_files(second)


def test_a_non_empty_target_is_refused_unless_forced(
    tmp_path: Path, plan: ExportPlan, store: LocalImageStore
) -> None:
    tmp_path = tmp_path / "exports"
    target = tmp_path / "out"
    target.mkdir(parents=True)
    (target / "keep.txt").write_text("precious")
    with pytest.raises(Conflict, match="not empty"):
        export_plan(plan, store, target, fmt="folder")
    assert [p.name for p in target.iterdir()] == ["keep.txt"]
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(Conflict, match="not a folder"):
        export_plan(plan, store, tmp_path / "a-file", fmt="folder")
    # An empty folder is fine; --force replaces a full one.
    (tmp_path / "empty").mkdir()
    export_plan(plan, store, tmp_path / "empty", fmt="csv")
    export_plan(plan, store, target, fmt="csv", force=True)
    assert not (target / "keep.txt").exists()
    assert (target / "manifest.csv").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "empty", "out"]


def test_a_failed_export_leaves_nothing_behind(
    tmp_path: Path, plan: ExportPlan, store: LocalImageStore
) -> None:
    store.delete(plan.storage_keys[-1])
    tmp_path = tmp_path / "exports"
    with pytest.raises(NotFound, match="missing from the image store"):
        export_plan(plan, store, tmp_path / "out", fmt="coco")
    assert list(tmp_path.iterdir()) == []
    # A failed --force export keeps the old folder as it was.
    old = tmp_path / "old"
    old.mkdir()
    (old / "keep.txt").write_text("precious")
    with pytest.raises(NotFound):
        export_plan(plan, store, old, fmt="yolo", force=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old"]
    assert [p.name for p in old.iterdir()] == ["keep.txt"]


def test_all_classes_keeps_the_retired_one(db_session: Session, manifest: Manifest) -> None:
    everything = plan_export(db_session, manifest, classes="all")
    assert "old-gate" in everything.class_slugs
    assert len(everything) == len(ROWS)
    assert dict(everything.dropped) == {}


@pytest.mark.parametrize("fmt", ["folder", "csv", "coco", "yolo"])
def test_an_empty_version_exports_empty_files(
    tmp_path: Path, db_session: Session, store: LocalImageStore, fmt: Any
) -> None:
    plan = plan_export(db_session, empty_manifest(CLASSES))
    root = tmp_path / "empty"
    summary = export_plan(plan, store, root, fmt=fmt)
    assert summary.images == 0 and summary.bytes == 0
    if fmt in ("folder", "csv"):
        assert (root / "manifest.csv").read_text().count("\n") == 1  # the header
    if fmt == "coco":
        document = json.loads((root / "annotations" / "test.json").read_text())
        assert document["images"] == document["annotations"] == document["categories"] == []
    assert json.loads((root / "export.json").read_text())["images"] == 0


# --- tf.data ----------------------------------------------------------------------------------


def test_tf_dataset_shapes_labels_and_export_order(
    tmp_path: Path, plan: ExportPlan, store: LocalImageStore
) -> None:
    import tensorflow as tf

    from datasets.tfdata import make_tf_dataset

    root = tmp_path / "out"
    export_plan(plan, store, root, fmt="folder", crop=True)
    rows = [r for r in read_csv(root) if r["split"] == "test"]
    dataset = make_tf_dataset(
        plan, "test", store=store, image_size=(24, 20), batch_size=2, include_keys=True
    )
    images, labels, keys = [], [], []
    for x, y, k in dataset:
        assert x.dtype == tf.float32 and y.dtype == tf.int32
        assert tuple(x.shape[1:]) == (24, 20, 3)
        images.append(x.numpy())
        labels.extend(y.numpy().tolist())
        keys.extend(s.decode() for s in k.numpy())
    assert keys == [r["sha256"] for r in rows]  # the export's order, never shuffled
    assert labels == [int(r["class_index"]) for r in rows]
    pixels = np.concatenate(images)
    assert pixels.min() >= 0 and pixels.max() <= 255
    # The pipeline sees the pixels a cropped export holds (transparency over white).
    for position, row in enumerate(rows):
        with PILImage.open(root / row["path"]) as exported:
            rgba = np.asarray(exported.convert("RGBA"), dtype=np.float32)
        alpha = rgba[..., 3:] / 255.0
        rgb = rgba[..., :3] * alpha + 255.0 * (1.0 - alpha)
        expected = tf.image.resize(rgb, (24, 20), antialias=True).numpy()
        assert np.abs(expected - pixels[position]).mean() < 4
    # Without include_keys: (images, labels), as Keras' fit() wants.
    x, y = next(iter(make_tf_dataset(plan, Split.VALIDATION, store=store, image_size=(8, 8))))
    assert tuple(x.shape) == (2, 8, 8, 3) and tuple(y.shape) == (2,)


def test_tf_train_split_shuffles_with_its_seed_and_augments(
    plan: ExportPlan, store: LocalImageStore
) -> None:
    from datasets.tfdata import default_augmentation, make_tf_dataset

    def keys(seed: int, augment: Any = None) -> list[str]:
        dataset = make_tf_dataset(
            plan,
            "train",
            store=store,
            image_size=(16, 16),
            batch_size=3,
            seed=seed,
            augment=augment,
            include_keys=True,
        )
        out = []
        for x, _, k in dataset:
            assert tuple(x.shape[1:]) == (16, 16, 3)
            out.extend(s.decode() for s in k.numpy())
        return out

    train = [plan.sha256[r] for r in plan.rows_in("train")]
    first = keys(7)
    assert sorted(first) == sorted(train)
    assert keys(7) == first  # the same seed, the same order
    assert sorted(keys(1, augment=default_augmentation(seed=1))) == sorted(train)
    with pytest.raises(ValueError, match="never shuffled"):
        make_tf_dataset(plan, "test", store=store, shuffle=True)
    with pytest.raises(ValueError, match="train split only"):
        make_tf_dataset(plan, "validation", store=store, augment=default_augmentation())


# --- the command ----------------------------------------------------------------------------


def test_export_command_end_to_end_from_labels_through_a_snapshot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, runtime: Runtime
) -> None:
    from curation.cli import main as cli
    from curation.labels import append_label
    from curation.models import LandmarkClass

    with runtime.factory() as session, session.begin():
        for record in CLASSES:
            session.add(
                LandmarkClass(
                    id=record.class_id,
                    slug=record.slug,
                    display_name=record.display_name,
                    status=record.status,
                )
            )
        session.flush()
        for data, class_id, _split, box in ROWS:
            image = add_image(session, runtime.store, data)
            clipped = None
            if box is not None:
                x0, y0 = min(box[0], image.width - 1), min(box[1], image.height - 1)
                clipped = (x0, y0, min(box[2], image.width), min(box[3], image.height))
            append_label(
                session, image_id=image.id, class_id=class_id, box=clipped, origin="import:t"
            )
    monkeypatch.setenv("CURATION_DATA_DIR", str(runtime.settings.data_dir))
    monkeypatch.setenv("CURATION_DATABASE_URL", runtime.settings.database_url)
    invoke = CliRunner().invoke
    snap = invoke(cli, ["dataset", "snapshot", "-m", "for export", "--ratios", "50/25/25"])
    assert snap.exit_code == 0, snap.output
    out = tmp_path / "export"
    result = invoke(
        cli, ["dataset", "export", "v1", "--format", "yolo", "--out", str(out), "--crop", "--json"]
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["version"] == "v1" and payload["format"] == "yolo" and payload["crop"]
    # A retired class's images never enter a version, so nothing is dropped here.
    assert payload["images"] == 11 and payload["dropped"] == {"class_not_active": 0}
    assert sum(payload["splits"].values()) == 11
    assert json.loads((out / "export.json").read_text())["source"]["version"] == "v1"
    labels = sorted((out / "labels").rglob("*.txt"))
    assert len(labels) == 11
    human = invoke(cli, ["dataset", "export", "latest", "--out", str(tmp_path / "human")])
    assert human.exit_code == 0, human.output
    assert human.stdout.startswith("v1: 11 images (")
    refused = invoke(cli, ["dataset", "export", "latest", "--out", str(out)])
    assert refused.exit_code == 2
    assert refused.stderr.strip().splitlines() == [
        f"error: {out} is not empty; pass --force to replace it"
    ]
