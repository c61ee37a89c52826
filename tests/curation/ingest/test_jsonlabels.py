"""Images with a per-image JSON annotation beside them (AI-Hub style and custom mappings)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from curation.exceptions import RejectedInput
from curation.ingest.jsonlabels import (
    MAX_JSON_BYTES,
    PRESETS,
    JsonMapping,
    json_labelled_items,
    lookup,
    parse_annotation,
)
from curation.ingest.records import IngestSummary
from curation.labels import current_label
from curation.models import ImageSource, LandmarkClass
from curation.runtime import Runtime
from curation.taxonomy import find_class
from tests.curation.helpers import counts, reasons, run_items, stored_files, write_tree
from tests.factories import jpeg, png, with_exif

AIHUB = PRESETS["aihub"]


def _doc(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode("utf-8")


def _aihub(name: str, bbox: list[float] | None) -> bytes:
    annotation: dict[str, Any] = {"category_name": name}
    if bbox is not None:
        annotation["bbox"] = bbox
    return _doc({"images": {"file_name": "x.jpg"}, "annotations": [annotation]})


def _ingest(runtime: Runtime, root: Path, mapping: JsonMapping = AIHUB) -> IngestSummary:
    summary = IngestSummary()
    items = json_labelled_items(root, dataset_name="aihub-set", mapping=mapping, summary=summary)
    return run_items(runtime, items, summary)


def _label_of(runtime: Runtime, path: str) -> tuple[str, tuple[float, float, float, float] | None]:
    with runtime.factory() as session:
        source = session.scalars(select(ImageSource).where(ImageSource.original_path == path)).one()
        label = current_label(session, source.image_id)
        assert label is not None
        assert label.origin == "import:aihub-set"
        landmark = session.get(LandmarkClass, label.class_id)
        assert landmark is not None
        assert find_class(session, landmark.display_name) == landmark
        return landmark.display_name, label.box


# --- parsing ---------------------------------------------------------------------


def test_lookup_follows_dotted_paths_and_list_indexes() -> None:
    document = {"a": [{"b": 1}, {"b": 2}], "c": {"d": None}}
    assert lookup(document, "a.1.b") == 2
    assert lookup(document, "a.0.b") == 1
    assert lookup(document, "c.d") is None
    missing = lookup(document, "a.5.b")
    assert missing is lookup(document, "nope") is lookup(document, "a.x")


def test_aihub_preset_reads_class_and_box() -> None:
    assert parse_annotation(_aihub("경복궁", [10, 20, 30, 40]), AIHUB) == (
        "경복궁",
        (10.0, 20.0, 30.0, 40.0),
    )
    assert parse_annotation(_doc({"landmark_name": "  Petra "}), AIHUB) == ("Petra", None)
    assert parse_annotation(_doc({"label": "Petra", "bbox": "1, 2, 3, 4"}), AIHUB) == (
        "Petra",
        (1.0, 2.0, 3.0, 4.0),
    )
    # A BOM (Windows tools write one) is fine.
    assert parse_annotation(b"\xef\xbb\xbf" + _doc({"class_name": "Petra"}), AIHUB)[0] == "Petra"


@pytest.mark.parametrize(
    ("raw", "prefix"),
    [
        (b"{not json", "malformed JSON annotation: "),
        (b"", "malformed JSON annotation: "),
        (
            '{"label": "Ch\u00e2teau"}'.encode("latin-1"),
            "malformed JSON annotation: not UTF-8 text",
        ),
        (
            _doc({"annotations": [{"bbox": [1, 2, 3, 4]}]}),
            "JSON annotation has no class name under ",
        ),
        (_doc({"label": ""}), "JSON annotation has no class name under "),
        (_doc({"label": 7}), "JSON annotation has no class name under "),
        (_doc(["a", "list"]), "JSON annotation has no class name under "),
        (
            _doc({"label": "P", "bbox": [1, 2, 3]}),
            "JSON annotation box under 'bbox' is not four numbers",
        ),
        (
            _doc({"label": "P", "bbox": [1, 2, "x", 4]}),
            "JSON annotation box under 'bbox' is not four numbers",
        ),
        (
            _doc({"label": "P", "bbox": {"x": 1}}),
            "JSON annotation box under 'bbox' is not four numbers",
        ),
        (
            b'{"label": "P", "bbox": [1, 2, NaN, 4]}',
            "JSON annotation box under 'bbox' holds a non-finite",
        ),
        (
            b'{"label": "P", "bbox": [1, 2, Infinity, 4]}',
            "JSON annotation box under 'bbox' holds a non-finite",
        ),
        (b"[" * 100_000 + b"]" * 100_000, "malformed JSON annotation: "),
        (b'{"a":' * 100_000 + b"1" + b"}" * 100_000, "malformed JSON annotation: "),
        (b" " * (MAX_JSON_BYTES + 1), f"JSON annotation larger than {MAX_JSON_BYTES} bytes"),
    ],
)
def test_parse_annotation_rejects(raw: bytes, prefix: str) -> None:
    with pytest.raises(RejectedInput) as caught:
        parse_annotation(raw, AIHUB)
    assert caught.value.reason.startswith(prefix)


def test_custom_mapping_with_dict_box_and_fields() -> None:
    mapping = JsonMapping.from_dict(
        {
            "class_key": ["meta.landmark", "name"],
            "box_key": "region",
            "box_format": "xyxy",
            "box_units": "normalized",
            "box_fields": ["left", "top", "right", "bottom"],
            "box_required": True,
            "notes": "vendor X",
        }
    )
    assert mapping.class_keys == ("meta.landmark", "name")
    raw = _doc(
        {
            "meta": {"landmark": "Petra"},
            "region": {"top": 0.2, "left": 0.1, "bottom": 0.6, "right": 0.5},
        }
    )
    assert parse_annotation(raw, mapping) == ("Petra", (0.1, 0.2, 0.5, 0.6))
    with pytest.raises(RejectedInput, match=r"^JSON annotation has no box under region$"):
        parse_annotation(_doc({"name": "Petra"}), mapping)
    with pytest.raises(RejectedInput, match="is not four numbers"):
        parse_annotation(_doc({"name": "Petra", "region": {"left": 0.1}}), mapping)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ({}, "mapping: 'class_key' is required"),
        ({"class_key": []}, "mapping: 'class_key' is required"),
        ({"class_key": 5}, "mapping: 'class_key' must be a string or a list of strings"),
        ({"class_key": ["a", 1]}, "mapping: 'class_key' must be a string or a list of strings"),
        (
            {"class_key": "a", "box_key": {"x": 1}},
            "mapping: 'box_key' must be a string or a list of strings",
        ),
        (
            {"class_key": "a", "box_format": "cxcywh"},
            "mapping: 'box_format' must be 'xywh' or 'xyxy'",
        ),
        (
            {"class_key": "a", "box_units": "percent"},
            "mapping: 'box_units' must be 'pixels' or 'normalized'",
        ),
        (
            {"class_key": "a", "box_fields": ["x", "y", "w"]},
            "mapping: 'box_fields' must be a list of four key names",
        ),
        (
            {"class_key": "a", "box_fields": "xywh"},
            "mapping: 'box_fields' must be a list of four key names",
        ),
        ({"class_key": "a", "classkey": "b"}, "mapping: unknown keys ['classkey']"),
    ],
)
def test_invalid_mapping_dicts_are_refused(raw: dict[str, Any], reason: str) -> None:
    with pytest.raises(RejectedInput) as caught:
        JsonMapping.from_dict(raw)
    assert caught.value.reason == reason


def test_mapping_file_errors(tmp_path: Path) -> None:
    broken = tmp_path / "m.json"
    broken.write_text("{oops", encoding="utf-8")
    with pytest.raises(RejectedInput, match=r"^mapping file m\.json: "):
        JsonMapping.load(broken)
    broken.write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(RejectedInput, match=r"^mapping file m\.json must hold a JSON object$"):
        JsonMapping.load(broken)
    with pytest.raises(RejectedInput, match=r"^mapping file missing\.json: "):
        JsonMapping.load(tmp_path / "missing.json")
    broken.write_text('{"class_key": "name", "box_key": "b"}', encoding="utf-8")
    assert JsonMapping.load(broken).box_keys == ("b",)


# --- ingestion -------------------------------------------------------------------


def test_aihub_folder_is_ingested_with_pixel_boxes(runtime: Runtime, tmp_path: Path) -> None:
    root = write_tree(
        tmp_path / "aihub",
        {
            "a/0001.jpg": jpeg(1),
            "a/0001.json": _aihub("경복궁", [10, 20, 100, 50]),  # xywh pixels
            "a/0002.png": png(2),
            "a/0002.png.json": _aihub("Gyeongbokgung", None),  # name.ext.json also found
        },
    )
    summary = _ingest(runtime, root)
    assert summary.rejected == []
    assert (summary.ingested, summary.labels_added) == (2, 2)
    assert _label_of(runtime, "a/0001.jpg") == ("경복궁", (10.0, 20.0, 110.0, 70.0))
    assert _label_of(runtime, "a/0002.png") == ("Gyeongbokgung", None)


def test_box_follows_the_exif_orientation_onto_the_stored_copy(
    runtime: Runtime, tmp_path: Path
) -> None:
    # The box is drawn on the 320x240 file as it arrived; the stored copy is
    # rotated to 240x320, and the box must move with it.
    root = write_tree(
        tmp_path / "aihub",
        {"p.jpg": with_exif(3, orientation=6), "p.json": _aihub("Petra", [10, 20, 100, 50])},
    )
    summary = _ingest(runtime, root)
    assert summary.rejected == []
    _, box = _label_of(runtime, "p.jpg")
    # Rotated 90 degrees clockwise: (x, y) -> (h - y, x) with h = 240.
    assert box == (240 - 70, 10.0, 240 - 20, 110.0)


def test_custom_mapping_normalized_xyxy_dict_box(runtime: Runtime, tmp_path: Path) -> None:
    mapping = JsonMapping.from_dict(
        {
            "class_key": "object.name",
            "box_key": "object.box",
            "box_format": "xyxy",
            "box_units": "normalized",
            "box_fields": ["x1", "y1", "x2", "y2"],
        }
    )
    root = write_tree(
        tmp_path / "vendor",
        {
            "img.jpg": jpeg(4),
            "img.json": _doc(
                {
                    "object": {
                        "name": "Château de Versailles",
                        "box": {"x1": 0.1, "y1": 0.2, "x2": 0.5, "y2": 0.6},
                    }
                }
            ),
        },
    )
    summary = _ingest(runtime, root, mapping)
    assert summary.rejected == []
    name, box = _label_of(runtime, "img.jpg")
    assert name == "Château de Versailles"
    assert box == pytest.approx((32.0, 48.0, 160.0, 144.0))


def test_bad_annotations_reject_their_images_and_leave_nothing(
    runtime: Runtime, tmp_path: Path
) -> None:
    root = write_tree(
        tmp_path / "aihub",
        {
            "good.jpg": jpeg(1),
            "good.json": _aihub("Petra", [0, 0, 50, 50]),
            "no_json.jpg": jpeg(2),
            "malformed.jpg": jpeg(3),
            "malformed.json": b'{"annotations": [',
            "no_class.jpg": jpeg(4),
            "no_class.json": _doc({"annotations": [{"bbox": [1, 1, 5, 5]}]}),
            "outside.jpg": jpeg(5),
            "outside.json": _aihub("Petra", [300, 200, 100, 100]),  # past the 320x240 edge
            "inverted.jpg": jpeg(6),
            "inverted.json": _aihub("Petra", [50, 50, -10, 20]),
            "deep.jpg": jpeg(7),
            "deep.json": b"[" * 50_000 + b"]" * 50_000,
            "badclass.jpg": jpeg(8),
            "badclass.json": _aihub("???", None),
            "orphan.json": _aihub("Petra", None),
        },
    )
    summary = _ingest(runtime, root)
    got = reasons(summary)
    assert got["no_json.jpg"] == "no JSON annotation beside it (expected no_json.json)"
    assert got["malformed.jpg"].startswith("malformed JSON annotation: ")
    assert got["no_class.jpg"].startswith("JSON annotation has no class name under ")
    assert got["outside.jpg"] == (
        "bounding box (300.0, 200.0, 400.0, 300.0) lies outside the 320x240 image"
    )
    assert got["inverted.jpg"].startswith("bounding box is empty or inverted")
    assert got["deep.jpg"].startswith("malformed JSON annotation: ")
    assert got["badclass.jpg"] == "class name '???' has no letters or digits"
    assert len(got) == 7
    assert summary.manifest_problems == [
        {"path": "orphan.json", "reason": "JSON annotation without an image beside it"}
    ]
    assert summary.ingested == 1
    assert counts(runtime.factory) == {
        "images": 1,
        "sources": 1,
        "labels": 1,
        "groups": 1,
        "classes": 1,
        "aliases": 1,
    }
    assert len(stored_files(runtime.store)) == 1


def test_json_folder_must_exist(tmp_path: Path) -> None:
    with pytest.raises(RejectedInput, match=r"^folder not found: "):
        list(
            json_labelled_items(
                tmp_path / "x", dataset_name="d", mapping=AIHUB, summary=IngestSummary()
            )
        )
