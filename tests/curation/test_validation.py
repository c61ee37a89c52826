"""Validation of untrusted bytes, file names, manifest paths and URLs."""

from __future__ import annotations

import unicodedata

import numpy as np
import pytest
from PIL import Image as PILImage

from curation.exceptions import RejectedInput
from curation.validation import (
    decode_untrusted,
    sniff_format,
    validate_filename,
    validate_relative_path,
    validate_source_url,
)
from tests.curation.helpers import (
    animated_gif,
    bmp,
    gif_declaring,
    png_bomb,
    png_declaring,
    tiff,
    truncated_jpeg,
)
from tests.factories import encode, jpeg, pattern, png, with_exif

LIMITS = {"max_bytes": 40 * 1024 * 1024, "max_pixels": 60_000_000}


def rejection(data: bytes, **limits: int) -> str:
    with pytest.raises(RejectedInput) as caught:
        decode_untrusted(data, **(LIMITS | limits))
    return caught.value.reason


# --- format sniffing -----------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (jpeg(1), "jpeg"),
        (png(1), "png"),
        (encode(pattern(1), "GIF"), "gif"),
        (encode(pattern(1), "WEBP"), "webp"),
        (encode(pattern(1), "AVIF"), "avif"),
    ],
)
def test_sniff_format_reads_magic_bytes(data: bytes, expected: str) -> None:
    assert sniff_format(data) == expected


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty file"),
        (bmp(), "unsupported format: bmp (allowed: jpeg, png, webp, gif, avif)"),
        (tiff(), "unsupported format: tiff (allowed: jpeg, png, webp, gif, avif)"),
        (b"%PDF-1.7\n...", "unsupported format: pdf (allowed: jpeg, png, webp, gif, avif)"),
        (
            b"PK\x03\x04" + b"\x00" * 40,
            "unsupported format: zip (allowed: jpeg, png, webp, gif, avif)",
        ),
        (
            b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic",
            "unsupported format: heif/heic (allowed: jpeg, png, webp, gif, avif)",
        ),
        (
            b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"/>',
            "unsupported format: svg (allowed: jpeg, png, webp, gif, avif)",
        ),
        (b"just some text that someone named photo.jpg\n", "not an image: the file holds text"),
        # 400 Hangul syllables: the 1024-byte sniff window cuts one in half.
        (("가" * 400).encode("utf-8"), "not an image: the file holds text"),
        (b"\x00" * 2048, "not an image: unrecognised content"),
        (bytes(range(128, 256)) * 4, "not an image: unrecognised content"),
    ],
)
def test_sniff_format_rejects_what_it_does_not_accept(data: bytes, reason: str) -> None:
    with pytest.raises(RejectedInput) as caught:
        sniff_format(data)
    assert caught.value.reason == reason


# --- decoding: the bad-input battery -------------------------------------------


def test_truncated_jpeg_is_rejected_as_truncated() -> None:
    assert rejection(truncated_jpeg()).startswith("corrupt or truncated jpeg image (")


def test_text_file_is_rejected_as_text() -> None:
    assert rejection(b"hello\n" * 50) == "not an image: the file holds text"


def test_empty_file_is_rejected() -> None:
    assert rejection(b"") == "empty file"


@pytest.fixture
def no_full_decode(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if any pixel data is decoded: the rejection must come from the header."""
    from PIL import ImageFile

    def refuse(self: object) -> None:
        raise AssertionError("the image was decoded before its size was checked")

    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse)


def test_png_decompression_bomb_is_rejected_from_the_header(no_full_decode: None) -> None:
    bomb = png_bomb(30_000)
    assert len(bomb) < 2 * 1024 * 1024  # small on disk: the danger is the decode
    assert rejection(bomb).startswith("too many pixels")


def test_png_over_our_pixel_limit_but_under_pillows_is_rejected_by_ours() -> None:
    # 9000x9000 = 81 M pixels: under Pillow's own bomb limit, over ours (60 M).
    assert rejection(png_declaring(9000, 9000)) == (
        "too many pixels: 9000x9000 (limit 60000000 pixels)"
    )


def test_pixel_limit_is_the_setting_not_a_constant() -> None:
    assert rejection(png(1), max_pixels=320 * 240 - 1) == (
        f"too many pixels: 320x240 (limit {320 * 240 - 1} pixels)"
    )
    assert (
        decode_untrusted(png(1), max_bytes=LIMITS["max_bytes"], max_pixels=320 * 240).width == 320
    )


@pytest.mark.parametrize(("width", "height"), [(65535, 65535), (10_000, 10_000)])
def test_gif_header_declaring_huge_dimensions_is_rejected(
    width: int, height: int, no_full_decode: None
) -> None:
    assert rejection(gif_declaring(width, height)).startswith("too many pixels")


def test_png_header_declaring_huge_dimensions_is_rejected() -> None:
    assert rejection(png_declaring(100_000, 100_000)).startswith("too many pixels")


def test_png_header_with_a_bad_checksum_is_rejected_as_invalid() -> None:
    data = bytearray(png(1))
    data[16:24] = (100_000).to_bytes(4, "big") * 2  # CRC left stale
    assert rejection(bytes(data)) == "content is not a valid png image"


def test_unsupported_formats_are_named() -> None:
    assert rejection(bmp()) == "unsupported format: bmp (allowed: jpeg, png, webp, gif, avif)"
    assert rejection(tiff()) == "unsupported format: tiff (allowed: jpeg, png, webp, gif, avif)"


def test_file_over_the_byte_limit_is_rejected_before_sniffing() -> None:
    data = jpeg(1)
    assert rejection(data, max_bytes=len(data) - 1) == (
        f"file too large: {len(data)} bytes (limit {len(data) - 1})"
    )
    assert (
        decode_untrusted(data, max_bytes=len(data), max_pixels=LIMITS["max_pixels"]).format
        == "jpeg"
    )


def test_jpeg_magic_followed_by_garbage_is_rejected() -> None:
    reason = rejection(b"\xff\xd8\xff" + bytes(range(256)) * 4)
    assert reason in {"content is not a valid jpeg image"} or reason.startswith(
        "corrupt or truncated jpeg image"
    )


# --- decoding: what is accepted ------------------------------------------------


def test_format_comes_from_the_content() -> None:
    # decode_untrusted never sees a file name; a PNG is a PNG whatever it is called.
    decoded = decode_untrusted(png(1), **LIMITS)
    assert decoded.format == "png"
    assert (decoded.width, decoded.height) == (320, 240)


def test_gif_takes_the_first_frame() -> None:
    decoded = decode_untrusted(animated_gif(1, 2), **LIMITS)
    assert decoded.format == "gif"
    pixels = np.asarray(decoded.image.convert("RGB"), dtype=np.int16)
    first = np.asarray(pattern(1), dtype=np.int16)
    second = np.asarray(pattern(2), dtype=np.int16)
    # GIF quantises to a palette, so compare closeness, not equality.
    assert np.abs(pixels - first).mean() < 12
    assert np.abs(pixels - second).mean() > 30


@pytest.mark.parametrize("fmt", ["WEBP", "AVIF"])
def test_webp_and_avif_are_accepted(fmt: str) -> None:
    decoded = decode_untrusted(encode(pattern(4), fmt, quality=90), **LIMITS)
    assert decoded.format == fmt.lower()
    assert (decoded.width, decoded.height) == (320, 240)
    pixels = np.asarray(decoded.image.convert("RGB"), dtype=np.int16)
    assert np.abs(pixels - np.asarray(pattern(4), dtype=np.int16)).mean() < 8


def test_exif_orientation_is_applied_and_reported() -> None:
    decoded = decode_untrusted(with_exif(5, orientation=6), **LIMITS)
    assert decoded.orientation == 6
    assert (decoded.original_width, decoded.original_height) == (320, 240)
    assert (decoded.width, decoded.height) == (240, 320)


def test_out_of_range_orientation_is_ignored() -> None:
    decoded = decode_untrusted(with_exif(5, orientation=9, gps=False), **LIMITS)
    assert decoded.orientation == 1
    assert (decoded.width, decoded.height) == (320, 240)


def test_decoded_image_is_fully_loaded() -> None:
    decoded = decode_untrusted(jpeg(3), **LIMITS)
    assert isinstance(decoded.image, PILImage.Image)
    # Loaded: reading pixels needs no more access to the (gone) source bytes.
    assert decoded.image.getpixel((0, 0)) is not None
    assert decoded.image.im is not None


# --- file names ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("", "file name is empty"),
        ("photo\x00.jpg", "file name contains a NUL byte"),
        ("photo\n.jpg", "file name contains control characters"),
        ("a" * 300, "file name longer than 255 characters (300)"),
        ("../etc/passwd", "file name must not contain a path ('/', '\\\\' or '..')"),
        ("../photo.jpg", "file name must not contain a path ('/', '\\\\' or '..')"),
        ("dir/photo.jpg", "file name must not contain a path ('/', '\\\\' or '..')"),
        ("dir\\photo.jpg", "file name must not contain a path ('/', '\\\\' or '..')"),
        ("..", "file name must not contain a path ('/', '\\\\' or '..')"),
        (".", "file name must not contain a path ('/', '\\\\' or '..')"),
    ],
)
def test_validate_filename_rejects(name: str, reason: str) -> None:
    with pytest.raises(RejectedInput) as caught:
        validate_filename(name)
    assert caught.value.reason == reason


def test_validate_filename_accepts_unicode_and_normalises_to_nfc() -> None:
    decomposed = unicodedata.normalize("NFD", "경복궁 Château.jpg")
    assert decomposed != "경복궁 Château.jpg"
    assert validate_filename(decomposed) == "경복궁 Château.jpg"
    assert validate_filename("a" * 255) == "a" * 255


# --- manifest paths --------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("../outside.jpg", "path must not go up a folder ('..')"),
        ("a/../../outside.jpg", "path must not go up a folder ('..')"),
        ("a\\..\\..\\outside.jpg", "path must not go up a folder ('..')"),
        ("/etc/passwd", "path must be relative to the folder"),
        ("\\\\server\\share", "path must be relative to the folder"),
        ("C:\\photos\\a.jpg", "path must be relative to the folder"),
        ("a\x00.jpg", "path contains a NUL byte"),
        ("a\t.jpg", "path contains control characters"),
        ("a/" * 600, "path longer than 1024 characters"),
    ],
)
def test_validate_relative_path_rejects(path: str, reason: str) -> None:
    with pytest.raises(RejectedInput) as caught:
        validate_relative_path(path)
    assert caught.value.reason == reason


def test_validate_relative_path_normalises() -> None:
    assert validate_relative_path("./a//b/./c.jpg") == "a/b/c.jpg"
    assert validate_relative_path("a\\b.jpg") == "a/b.jpg"
    assert validate_relative_path(unicodedata.normalize("NFD", "é/é.jpg")) == "é/é.jpg"


# --- source URLs -----------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "javascript:alert(1)",
        "JAVASCRIPT:alert(1)",
        "data:image/png;base64,AAAA",
        "file:///etc/passwd",
        "ftp://example.com/a.jpg",
        "//example.com/a.jpg",
        "example.com/a.jpg",
        "http://",
        "",
    ],
)
def test_validate_source_url_rejects_non_http(url: str) -> None:
    with pytest.raises(RejectedInput) as caught:
        validate_source_url(url)
    assert caught.value.reason.startswith("source URL must be an absolute http(s) URL")


def test_validate_source_url_rejects_spaces_control_and_length() -> None:
    for url, reason in [
        ("http://example.com/a b.jpg", "source URL contains spaces or control characters"),
        ("http://example.com/\x00", "source URL contains spaces or control characters"),
        ("http://example.com/" + "a" * 2048, "source URL longer than 2048 characters"),
    ]:
        with pytest.raises(RejectedInput) as caught:
            validate_source_url(url)
        assert caught.value.reason == reason


def test_validate_source_url_accepts_http_and_https() -> None:
    assert (
        validate_source_url("  https://example.com/a.jpg?x=1  ") == "https://example.com/a.jpg?x=1"
    )
    assert validate_source_url("http://example.com/") == "http://example.com/"


@pytest.mark.parametrize("url", ["http://[::1/a.jpg", "https://[not-an-address]/a.jpg"])
def test_validate_source_url_rejects_malformed_hosts(url: str) -> None:
    with pytest.raises(RejectedInput) as caught:
        validate_source_url(url)
    assert caught.value.reason.startswith("source URL is malformed: ")
