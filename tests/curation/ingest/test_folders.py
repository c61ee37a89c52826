"""Crawled folders with CSV manifests, and labelled folder trees."""

from __future__ import annotations

import os
import unicodedata
from pathlib import Path

import pytest
from sqlalchemy import select

from curation.exceptions import RejectedInput
from curation.ingest.folders import crawl_items, labelled_tree_items, walk_files
from curation.ingest.records import IngestSummary
from curation.labels import current_label
from curation.models import Image, ImageSource, Label, LandmarkClass
from curation.runtime import Runtime
from curation.taxonomy import find_class
from tests.curation.helpers import counts, reasons, run_items, stored_files, write_tree
from tests.factories import jpeg, png


def _crawl(runtime: Runtime, root: Path, manifest: Path | None) -> IngestSummary:
    summary = IngestSummary()
    items = crawl_items(root, crawler="bing", manifest=manifest, summary=summary)
    return run_items(runtime, items, summary)


def _labelled(runtime: Runtime, root: Path, dataset: str = "set") -> IngestSummary:
    summary = IngestSummary()
    return run_items(
        runtime, labelled_tree_items(root, dataset_name=dataset, summary=summary), summary
    )


def _sources(runtime: Runtime) -> dict[str, ImageSource]:
    with runtime.factory() as session:
        rows = list(session.scalars(select(ImageSource)))
        for row in rows:
            session.expunge(row)
    return {row.original_path or "": row for row in rows}


# --- walking -------------------------------------------------------------------


def test_walk_is_sorted_skips_hidden_and_does_not_enter_linked_folders(tmp_path: Path) -> None:
    root = write_tree(
        tmp_path / "root",
        {"b/2.jpg": b"", "b/1.jpg": b"", "a.jpg": b"", ".git/config": b"", "c/.DS_Store": b""},
    )
    os.symlink(write_tree(tmp_path / "other", {"x.jpg": b""}), root / "linked")
    names = [p.relative_to(root).as_posix() for p in walk_files(root)]
    assert names == ["a.jpg", "b/1.jpg", "b/2.jpg"]


# --- crawls and manifests --------------------------------------------------------


def test_manifest_urls_are_recorded_on_sources(runtime: Runtime, tmp_path: Path) -> None:
    root = write_tree(
        tmp_path / "crawl",
        {"taj/1.jpg": jpeg(1), "taj/2.jpg": jpeg(2), "petra/경복궁 1.png": png(3)},
    )
    manifest = tmp_path / "urls.csv"
    manifest.write_text(
        "\ufeffPath,URL\n"  # a BOM and capitalised headers, as spreadsheets write them
        "taj/1.jpg,https://example.com/a.jpg\n"
        "./taj//2.jpg,http://example.org/b?x=1&y=2\n"
        f"{unicodedata.normalize('NFD', 'petra/경복궁 1.png')},https://example.com/k.png\n",
        encoding="utf-8",
    )
    summary = _crawl(runtime, root, manifest)
    assert summary.manifest_problems == []
    assert summary.ingested == 3
    sources = _sources(runtime)
    assert sources["taj/1.jpg"].source_url == "https://example.com/a.jpg"
    assert sources["taj/2.jpg"].source_url == "http://example.org/b?x=1&y=2"
    assert sources["petra/경복궁 1.png"].source_url == "https://example.com/k.png"
    assert {s.crawler for s in sources.values()} == {"bing"}
    assert {s.kind for s in sources.values()} == {"crawl"}
    assert sources["taj/1.jpg"].original_filename == "1.jpg"


def test_alternative_manifest_column_names(runtime: Runtime, tmp_path: Path) -> None:
    root = write_tree(tmp_path / "crawl", {"a.jpg": jpeg(1)})
    manifest = tmp_path / "m.csv"
    manifest.write_text("filename,source_url\na.jpg,https://example.com/a.jpg\n", encoding="utf-8")
    _crawl(runtime, root, manifest)
    assert _sources(runtime)["a.jpg"].source_url == "https://example.com/a.jpg"


def test_bad_manifest_rows_are_reported_and_the_rest_ingested(
    runtime: Runtime, tmp_path: Path
) -> None:
    long_name = "x" * 300 + ".jpg"
    root = write_tree(tmp_path / "crawl", {"a.jpg": jpeg(1), "b.jpg": jpeg(2), "c.jpg": jpeg(3)})
    manifest = root / "manifest.csv"  # inside the folder: not ingested as an image
    manifest.write_text(
        "path,url,title\n"
        "a.jpg,javascript:alert(document.cookie),x\n"  # line 2
        "../../etc/passwd,https://example.com/p,x\n"  # line 3
        "b.jpg\n"  # line 4: missing columns
        "nul\x00.jpg,https://example.com/n,x\n"  # line 5
        f"{long_name},https://example.com/long,x\n"  # line 6
        "c.jpg,https://example.com/c.jpg,x\n"  # line 7: good
        "gone.jpg,https://example.com/gone.jpg,x\n"  # line 8: no such file
        "/abs.jpg,https://example.com/abs.jpg,x\n"  # line 9
        "b.jpg,http://[::1/b.jpg,x\n",  # line 10: a malformed host
        encoding="utf-8",
    )
    summary = _crawl(runtime, root, manifest)
    problems = {p["path"]: p["reason"] for p in summary.manifest_problems}
    assert problems["manifest.csv:2"].startswith("source URL must be an absolute http(s) URL")
    assert problems["manifest.csv:3"] == "path must not go up a folder ('..')"
    assert problems["manifest.csv:4"].startswith("source URL must be an absolute http(s) URL")
    assert problems["manifest.csv:5"] == "path contains a NUL byte"
    assert problems["manifest.csv:9"] == "path must be relative to the folder"
    assert problems["manifest.csv:10"] == "source URL is malformed: 'http://[::1/b.jpg'"
    # Names that pass the path checks but match no file are reported too.
    assert problems[long_name] == "listed in the manifest but not found in the folder"
    assert problems["gone.jpg"] == "listed in the manifest but not found in the folder"
    assert len(problems) == 8
    # The bad rows did not stop the files: all three are in, only c has a URL.
    assert (summary.files, summary.ingested, summary.rejected) == (3, 3, [])
    sources = _sources(runtime)
    assert set(sources) == {"a.jpg", "b.jpg", "c.jpg"}
    assert sources["c.jpg"].source_url == "https://example.com/c.jpg"
    assert sources["a.jpg"].source_url is None
    assert sources["b.jpg"].source_url is None


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("name,link\na.jpg,https://example.com/a\n", "manifest needs a 'path'"),
        ("", "manifest needs a 'path'"),
    ],
)
def test_manifest_without_the_columns_is_refused(tmp_path: Path, content: str, reason: str) -> None:
    root = write_tree(tmp_path / "crawl", {"a.jpg": b"x"})
    manifest = tmp_path / "m.csv"
    manifest.write_text(content, encoding="utf-8")
    with pytest.raises(RejectedInput) as caught:
        list(crawl_items(root, crawler="c", manifest=manifest, summary=IngestSummary()))
    assert caught.value.reason.startswith(reason)


def test_manifest_that_is_not_utf8_is_refused_not_crashed(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "crawl", {"a.jpg": b"x"})
    manifest = tmp_path / "m.csv"
    manifest.write_bytes("path,url\nChâteau.jpg,https://example.com/a\n".encode("latin-1"))
    with pytest.raises(RejectedInput) as caught:
        list(crawl_items(root, crawler="c", manifest=manifest, summary=IngestSummary()))
    assert "UTF-8" in caught.value.reason


def test_manifest_with_an_oversized_field_is_refused_not_crashed(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "crawl", {"a.jpg": b"x"})
    manifest = tmp_path / "m.csv"
    manifest.write_text(
        "path,url\na.jpg,https://example.com/" + "a" * 200_000 + "\n", encoding="utf-8"
    )
    with pytest.raises(RejectedInput) as caught:
        list(crawl_items(root, crawler="c", manifest=manifest, summary=IngestSummary()))
    assert caught.value.reason.startswith("manifest m.csv")


def test_missing_manifest_and_missing_folder_are_refused(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "crawl", {"a.jpg": b"x"})
    with pytest.raises(RejectedInput, match=r"^manifest not found: "):
        list(crawl_items(root, crawler="c", manifest=tmp_path / "no.csv", summary=IngestSummary()))
    with pytest.raises(RejectedInput, match=r"^folder not found: "):
        list(crawl_items(tmp_path / "nope", crawler="c", manifest=None, summary=IngestSummary()))
    with pytest.raises(RejectedInput, match=r"^not a folder: "):
        list(crawl_items(root / "a.jpg", crawler="c", manifest=None, summary=IngestSummary()))


def test_symlink_in_a_crawl_folder_is_rejected(runtime: Runtime, tmp_path: Path) -> None:
    secret = tmp_path / "secret.jpg"
    secret.write_bytes(jpeg(5))
    root = write_tree(tmp_path / "crawl", {"good.jpg": jpeg(6)})
    os.symlink(secret, root / "link.jpg")
    summary = _crawl(runtime, root, None)
    assert reasons(summary) == {"link.jpg": "symbolic links are not followed"}
    assert summary.ingested == 1
    assert counts(runtime.factory)["images"] == 1
    assert len(stored_files(runtime.store)) == 1


def test_same_crawl_twice_is_already_present(runtime: Runtime, tmp_path: Path) -> None:
    root = write_tree(tmp_path / "crawl", {"a.jpg": jpeg(1), "b.jpg": jpeg(2)})
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,url\na.jpg,https://example.com/a\n", encoding="utf-8")
    _crawl(runtime, root, manifest)
    before = counts(runtime.factory)
    again = _crawl(runtime, root, manifest)
    assert (again.already_present, again.ingested, again.exact_duplicates) == (2, 0, 0)
    assert counts(runtime.factory) == before


# --- labelled trees ----------------------------------------------------------------


def test_class_per_folder_layout(runtime: Runtime, tmp_path: Path) -> None:
    versailles_nfd = unicodedata.normalize("NFD", "Château de Versailles")
    root = write_tree(
        tmp_path / "landmarks",
        {
            "Taj Mahal/1.jpg": jpeg(1),
            "Taj Mahal/sub/2.jpg": jpeg(2),
            "경복궁/3.jpg": jpeg(3),
            f"{versailles_nfd}/4.png": png(4),
            "Gyeongbokgung_Palace/5.jpg": jpeg(5),
            "loose.jpg": jpeg(6),
        },
    )
    summary = _labelled(runtime, root, dataset="landmarks")
    assert reasons(summary) == {"loose.jpg": "not inside a class folder"}
    assert (summary.files, summary.ingested, summary.labels_added) == (6, 5, 5)
    assert sorted(summary.classes_created) == sorted(
        ["taj-mahal", "경복궁", "chateau-de-versailles", "gyeongbokgung-palace"]
    )
    with runtime.factory() as session:
        for looked_up, display in [
            ("taj mahal", "Taj Mahal"),
            ("TAJ-MAHAL", "Taj Mahal"),
            ("경복 궁", "경복궁"),
            (unicodedata.normalize("NFD", "경복궁"), "경복궁"),
            ("chateau de versailles", "Château de Versailles"),
            ("CHÂTEAU_DE_VERSAILLES", "Château de Versailles"),
            ("gyeongbokgung palace", "Gyeongbokgung Palace"),
        ]:
            found = find_class(session, looked_up)
            assert found is not None, looked_up
            assert found.display_name == display
        # Each image is labelled with its folder's class, by the import.
        by_path = {s.original_path: s for s in session.scalars(select(ImageSource))}
        taj = find_class(session, "Taj Mahal")
        assert taj is not None
        for path in ("Taj Mahal/1.jpg", "Taj Mahal/sub/2.jpg"):
            source = by_path[path]
            assert source.original_class_name == "Taj Mahal"
            assert source.original_split is None
            assert source.dataset_name == "landmarks"
            label = current_label(session, source.image_id)
            assert label is not None
            assert (label.class_id, label.origin, label.verdict) == (
                taj.id,
                "import:landmarks",
                "landmark",
            )
            assert label.box is None
        assert "Château de Versailles/4.png" in by_path  # paths recorded in NFC
    assert counts(runtime.factory)["images"] == 5
    assert len(stored_files(runtime.store)) == 5


def test_split_layout_records_the_original_split(runtime: Runtime, tmp_path: Path) -> None:
    root = write_tree(
        tmp_path / "splits",
        {
            "train/Petra/1.jpg": jpeg(1),
            "Val/Petra/2.jpg": jpeg(2),
            "test/Machu Picchu/3.jpg": jpeg(3),
            "training/Machu Picchu/4.jpg": jpeg(4),
            "train/loose.jpg": jpeg(5),
        },
    )
    summary = _labelled(runtime, root)
    assert reasons(summary) == {"train/loose.jpg": "not inside a class folder"}
    assert summary.ingested == 4
    assert sorted(summary.classes_created) == ["machu-picchu", "petra"]  # no "train" class
    sources = _sources(runtime)
    assert sources["train/Petra/1.jpg"].original_split == "train"
    assert sources["Val/Petra/2.jpg"].original_split == "validation"
    assert sources["test/Machu Picchu/3.jpg"].original_split == "test"
    assert sources["training/Machu Picchu/4.jpg"].original_split == "train"
    assert sources["test/Machu Picchu/3.jpg"].original_class_name == "Machu Picchu"
    with runtime.factory() as session:
        names = sorted(session.scalars(select(LandmarkClass.display_name)))
    assert names == ["Machu Picchu", "Petra"]


def test_split_layout_with_a_file_in_the_root_rejects_that_file(
    runtime: Runtime, tmp_path: Path
) -> None:
    root = write_tree(
        tmp_path / "splits",
        {"README.txt": b"how this set was made", "train/Petra/1.jpg": jpeg(1)},
    )
    summary = _labelled(runtime, root)
    assert reasons(summary) == {"README.txt": "not inside a class folder"}
    assert summary.ingested == 1
    assert _sources(runtime)["train/Petra/1.jpg"].original_split == "train"


def test_same_bytes_in_two_class_folders_is_a_conflict_not_an_overwrite(
    runtime: Runtime, tmp_path: Path
) -> None:
    root = write_tree(tmp_path / "set", {"Petra/a.jpg": jpeg(1), "Taj Mahal/b.jpg": jpeg(1)})
    summary = _labelled(runtime, root, dataset="set")
    assert (summary.ingested, summary.exact_duplicates) == (1, 1)
    assert summary.label_conflicts == [
        {"path": "Taj Mahal/b.jpg", "reason": "already labelled otherwise in import:set"}
    ]
    assert summary.labels_added == 1 and summary.labels_changed == 0
    with runtime.factory() as session:
        labels = list(session.scalars(select(Label)))
        petra = find_class(session, "Petra")
        assert len(labels) == 1
        assert petra is not None and labels[0].class_id == petra.id
        image = session.scalars(select(Image)).one()
        assert sorted(s.original_class_name for s in image.sources) == ["Petra", "Taj Mahal"]  # type: ignore[type-var]


def test_another_dataset_relabelling_appends_a_label(runtime: Runtime, tmp_path: Path) -> None:
    _labelled(runtime, write_tree(tmp_path / "one", {"Petra/a.jpg": jpeg(1)}), dataset="one")
    summary = _labelled(
        runtime, write_tree(tmp_path / "two", {"Al Khazneh/a.jpg": jpeg(1)}), dataset="two"
    )
    assert (summary.exact_duplicates, summary.labels_changed, summary.label_conflicts) == (1, 1, [])
    with runtime.factory() as session:
        image = session.scalars(select(Image)).one()
        labels = list(session.scalars(select(Label).order_by(Label.id)))
        assert len(labels) == 2
        assert labels[1].supersedes_id == labels[0].id
        current = current_label(session, image.id)
        khazneh = find_class(session, "al khazneh")
        assert current is not None and khazneh is not None
        assert current.id == labels[1].id and current.class_id == khazneh.id


def test_labelled_import_twice_adds_nothing(runtime: Runtime, tmp_path: Path) -> None:
    root = write_tree(
        tmp_path / "set",
        {"Petra/a.jpg": jpeg(1), "Petra/a2.jpg": jpeg(1), "경복궁/b.jpg": jpeg(2)},
    )
    first = _labelled(runtime, root)
    assert (first.ingested, first.exact_duplicates, first.labels_added) == (2, 1, 2)
    before = counts(runtime.factory)
    second = _labelled(runtime, root)
    assert (second.already_present, second.ingested, second.labels_added) == (3, 0, 0)
    assert second.classes_created == [] and second.label_conflicts == []
    assert counts(runtime.factory) == before


def test_symlink_in_a_labelled_tree_is_rejected(runtime: Runtime, tmp_path: Path) -> None:
    outside = tmp_path / "outside.jpg"
    outside.write_bytes(jpeg(7))
    root = write_tree(tmp_path / "set", {"Petra/a.jpg": jpeg(1)})
    os.symlink(outside, root / "Petra" / "b.jpg")
    summary = _labelled(runtime, root)
    assert reasons(summary) == {"Petra/b.jpg": "symbolic links are not followed"}
    assert counts(runtime.factory)["images"] == 1


def test_invalid_class_folder_name_rejects_its_files(runtime: Runtime, tmp_path: Path) -> None:
    root = write_tree(tmp_path / "set", {"!!!/a.jpg": jpeg(1), "x" * 201 + "/b.jpg": jpeg(2)})
    summary = _labelled(runtime, root)
    assert reasons(summary) == {
        "!!!/a.jpg": "class name '!!!' has no letters or digits",
        "x" * 201 + "/b.jpg": "class name longer than 200 characters",
    }
    assert counts(runtime.factory)["images"] == 0
    assert stored_files(runtime.store) == []


def test_labelled_tree_folder_must_exist(tmp_path: Path) -> None:
    with pytest.raises(RejectedInput, match=r"^folder not found: "):
        list(labelled_tree_items(tmp_path / "nope", dataset_name="x", summary=IngestSummary()))
