"""Decoding stored copies into square model inputs."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, JpegImagePlugin

from curation.learning.decode import BoxOutsideImage, UndecodableImage, decode_for_model
from tests.factories import encode, jpeg, pattern, png


def halves(width: int, height: int, *, split: int | None = None) -> Image.Image:
    """Red left of ``split`` (default: the middle), blue right of it."""
    split = width // 2 if split is None else split
    array = np.zeros((height, width, 3), dtype=np.uint8)
    array[:, :split] = (255, 0, 0)
    array[:, split:] = (0, 0, 255)
    return Image.fromarray(array, "RGB")


@pytest.fixture
def draft_calls(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Every result of JpegImageFile.draft while the test runs."""
    calls: list[object] = []
    original = JpegImagePlugin.JpegImageFile.draft

    def spy(self: JpegImagePlugin.JpegImageFile, mode: str | None, size: object) -> object:
        result = original(self, mode, size)  # type: ignore[arg-type]
        calls.append(result)
        return result

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    return calls


@pytest.mark.parametrize(
    "data",
    [
        jpeg(1),
        png(2),
        jpeg(3, width=1600, height=1200),
        encode(pattern(4).convert("L"), "JPEG", quality=92),  # a grayscale stored copy
        encode(pattern(5, 50, 30), "PNG"),  # smaller than the model input: upscaled
    ],
    ids=["jpeg", "png", "large-jpeg", "gray-jpeg", "tiny-png"],
)
def test_shape_and_dtype(data: bytes) -> None:
    pixels = decode_for_model(data, size=224, box=None)
    assert pixels.shape == (224, 224, 3)
    assert pixels.dtype == np.uint8
    assert pixels.flags.c_contiguous


def test_path_and_bytes_agree(tmp_path: Path) -> None:
    data = jpeg(6, width=900, height=700)
    path = tmp_path / "stored.jpg"
    path.write_bytes(data)
    from_bytes = decode_for_model(data, size=160, box=(10, 20, 500, 600))
    np.testing.assert_array_equal(
        decode_for_model(path, size=160, box=(10, 20, 500, 600)), from_bytes
    )
    np.testing.assert_array_equal(
        decode_for_model(str(path), size=160, box=(10, 20, 500, 600)), from_bytes
    )
    assert from_bytes.shape == (160, 160, 3)


def test_box_on_the_right_half_is_blue() -> None:
    data = encode(halves(400, 200), "JPEG", quality=92)
    right = decode_for_model(data, size=64, box=(200, 0, 400, 200)).astype(np.int32)
    assert right[..., 2].mean() > 230
    assert right[..., 0].mean() < 25
    left = decode_for_model(data, size=64, box=(0, 0, 200, 200)).astype(np.int32)
    assert left[..., 0].mean() > 230
    assert left[..., 2].mean() < 25
    whole = decode_for_model(data, size=64, box=None)
    assert whole[:, :28, 0].mean() > 230 and whole[:, 36:, 2].mean() > 230


def test_box_is_in_full_size_pixels_when_drafting(draft_calls: list[object]) -> None:
    # 2400 x 1200, red only in the first 600 columns: a box around that strip
    # must be red, though the decoder reduces the image before the crop.
    data = encode(halves(2400, 1200, split=600), "JPEG", quality=92)
    red = decode_for_model(data, size=64, box=(0, 0, 580, 1200)).astype(np.int32)
    assert red[..., 0].mean() > 230 and red[..., 2].mean() < 25
    blue = decode_for_model(data, size=64, box=(620, 0, 1220, 1200)).astype(np.int32)
    assert blue[..., 2].mean() > 230 and blue[..., 0].mean() < 25
    # The draft really reduced the decode (a 580-wide box needs only 64 pixels).
    scales = [2400 / result[1][2] for result in draft_calls if isinstance(result, tuple)]
    assert scales and all(scale >= 4 for scale in scales)


def test_a_box_keeps_its_detail(draft_calls: list[object]) -> None:
    # A small box in a large photo: the reduction keeps the box >= size pixels.
    data = jpeg(7, width=2000, height=1600)
    decode_for_model(data, size=224, box=(100, 100, 600, 600))
    (result,) = draft_calls
    assert isinstance(result, tuple)
    scale = 2000 / result[1][2]
    assert 500 / scale >= 224


def test_draft_decoding_matches_full_decoding(draft_calls: list[object]) -> None:
    image = pattern(8, width=1792, height=1344)
    array = np.asarray(image).astype(np.int16)
    noise = np.random.default_rng(8).integers(-12, 13, size=array.shape)  # some texture
    data = encode(
        Image.fromarray(np.clip(array + noise, 0, 255).astype(np.uint8)), "JPEG", quality=92
    )
    fast = decode_for_model(data, size=224, box=None).astype(np.float64)
    scale = 1792 / draft_calls[0][1][2]  # type: ignore[index]
    assert scale == 4
    with Image.open(io.BytesIO(data)) as full:
        reference = np.asarray(full.convert("RGB").resize((224, 224), Image.Resampling.BILINEAR))
    difference = np.abs(fast - reference.astype(np.float64))
    assert difference.mean() < 1.5
    assert np.percentile(difference, 99) < 8


def test_png_is_not_drafted_and_alpha_goes_over_white() -> None:
    rgba = np.zeros((100, 100, 4), dtype=np.uint8)
    rgba[:, :50] = (0, 0, 0, 0)  # transparent (black underneath)
    rgba[:, 50:] = (0, 128, 0, 255)  # opaque green
    pixels = decode_for_model(encode(Image.fromarray(rgba, "RGBA"), "PNG"), size=50, box=None)
    assert pixels[:, :20].min() > 240  # white, not black
    assert abs(int(pixels[:, 30:, 1].mean()) - 128) < 4
    assert pixels[:, 30:, 0].max() < 10


def test_box_is_clipped_to_the_image() -> None:
    data = encode(halves(200, 100), "PNG")
    pixels = decode_for_model(data, size=32, box=(150, -5, 260, 130)).astype(np.int32)
    assert pixels[..., 2].mean() > 240


@pytest.mark.parametrize("box", [(300, 0, 400, 100), (50, 50, 50, 80), (80, 10, 20, 90)])
def test_box_without_area_inside_is_refused(box: tuple[float, float, float, float]) -> None:
    with pytest.raises(BoxOutsideImage, match="box"):
        decode_for_model(png(9, 200, 100), size=32, box=box)


def test_corrupt_bytes_and_truncated_jpeg() -> None:
    with pytest.raises(UndecodableImage, match="<bytes>"):
        decode_for_model(b"definitely not an image", size=32, box=None)
    data = jpeg(10, width=640, height=480)
    with pytest.raises(UndecodableImage):
        decode_for_model(data[: len(data) // 2], size=32, box=None)


def test_missing_or_corrupt_file_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "gone.jpg"
    with pytest.raises(UndecodableImage, match=r"gone\.jpg") as caught:
        decode_for_model(missing, size=32, box=None)
    assert caught.value.source == str(missing)
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(jpeg(11)[:200])
    with pytest.raises(UndecodableImage, match=r"corrupt\.jpg"):
        decode_for_model(corrupt, size=32, box=None)


def test_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="size"):
        decode_for_model(jpeg(12), size=0, box=None)
