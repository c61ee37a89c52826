"""Embedding stored images: shapes, order, determinism, poison images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from curation.learning.backbones import LoadedBackbone, load_backbone
from curation.learning.decode import UndecodableImage
from curation.learning.embed import EmbedInput, embed_images
from tests.factories import jpeg, png


@pytest.fixture(scope="module")
def small() -> LoadedBackbone:
    return load_backbone("mobilenet_0.25", "none")


@pytest.fixture
def items(tmp_path: Path) -> list[EmbedInput]:
    made = []
    for index in range(5):
        path = tmp_path / f"image{index}.{'png' if index == 3 else 'jpg'}"
        path.write_bytes(png(index) if index == 3 else jpeg(index, width=300 + 40 * index))
        made.append(EmbedInput(path))
    return made


def test_shape_dtype_and_distinct_rows(small: LoadedBackbone, items: list[EmbedInput]) -> None:
    embeddings = embed_images(items, small, batch_size=2)
    assert embeddings.shape == (5, 256)
    assert embeddings.dtype == np.float16
    assert np.isfinite(embeddings).all()
    assert len({row.tobytes() for row in embeddings}) == 5


def test_deterministic_across_calls(small: LoadedBackbone, items: list[EmbedInput]) -> None:
    first = embed_images(items, small, batch_size=2)
    second = embed_images(items, small, batch_size=2, decode_threads=1)
    np.testing.assert_array_equal(first, second)


def test_preserves_input_order(small: LoadedBackbone, items: list[EmbedInput]) -> None:
    forward = embed_images(items, small, batch_size=2)
    order = [4, 2, 0, 3, 1]
    shuffled = embed_images([items[i] for i in order], small, batch_size=2)
    np.testing.assert_array_equal(shuffled, forward[order])


def test_batching_does_not_change_the_embedding(
    small: LoadedBackbone, items: list[EmbedInput]
) -> None:
    in_twos = embed_images(items, small, batch_size=2).astype(np.float32)
    at_once = embed_images(items, small, batch_size=8).astype(np.float32)
    np.testing.assert_allclose(in_twos, at_once, rtol=2e-3, atol=1e-3)


def test_matches_the_model_on_decoded_pixels(
    small: LoadedBackbone, items: list[EmbedInput]
) -> None:
    from curation.learning.decode import decode_for_model

    pixels = np.stack([decode_for_model(item.path, size=224, box=None) for item in items])
    expected = small.embed_batch(pixels).astype(np.float16)
    np.testing.assert_allclose(
        embed_images(items, small, batch_size=5).astype(np.float32),
        expected.astype(np.float32),
        rtol=2e-3,
        atol=1e-3,
    )


def test_a_box_changes_the_embedding(small: LoadedBackbone, items: list[EmbedInput]) -> None:
    boxed = EmbedInput(items[0].path, box=(0.0, 0.0, 150.0, 120.0))
    embeddings = embed_images([items[0], boxed], small, batch_size=2)
    assert not np.array_equal(embeddings[0], embeddings[1])


def test_on_batch_reports_progress(small: LoadedBackbone, items: list[EmbedInput]) -> None:
    seen: list[int] = []
    embed_images(items, small, batch_size=2, on_batch=seen.append)
    assert seen == [2, 4, 5]


def test_empty_input(small: LoadedBackbone) -> None:
    embeddings = embed_images([], small)
    assert embeddings.shape == (0, 256)
    assert embeddings.dtype == np.float16


@pytest.mark.parametrize("position", [0, 4])
def test_corrupt_file_raises_naming_its_path(
    small: LoadedBackbone, items: list[EmbedInput], tmp_path: Path, position: int
) -> None:
    poison = tmp_path / "poison.jpg"
    poison.write_bytes(jpeg(99)[:300])
    batch = list(items)
    batch.insert(position, EmbedInput(poison))
    with pytest.raises(UndecodableImage, match=r"poison\.jpg") as caught:
        embed_images(batch, small, batch_size=2)
    assert caught.value.source == str(poison)


def test_missing_file_raises_naming_its_path(
    small: LoadedBackbone, items: list[EmbedInput], tmp_path: Path
) -> None:
    with pytest.raises(UndecodableImage, match=r"vanished\.jpg"):
        embed_images([*items, EmbedInput(tmp_path / "vanished.jpg")], small, batch_size=4)


@pytest.mark.parametrize(("batch_size", "threads"), [(0, 1), (4, 0)])
def test_options_are_checked(
    small: LoadedBackbone, items: list[EmbedInput], batch_size: int, threads: int
) -> None:
    with pytest.raises(ValueError, match="positive"):
        embed_images(items, small, batch_size=batch_size, decode_threads=threads)
