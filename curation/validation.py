"""Validation of untrusted image bytes.

The format is sniffed from the content, never from the file name; sizes and
pixel counts are checked from the header before any full decode, so a
decompression bomb costs a few microseconds, not gigabytes.
"""

from __future__ import annotations

import codecs
import io
import re
import unicodedata
import warnings
from dataclasses import dataclass

from PIL import Image as PILImage
from PIL import ImageOps, UnidentifiedImageError

from curation.exceptions import RejectedInput

ALLOWED_FORMATS = ("jpeg", "png", "webp", "gif", "avif")

# Pillow's format names, mapped to ours.
_PIL_FORMATS = {
    "JPEG": "jpeg",
    "MPO": "jpeg",
    "PNG": "png",
    "WEBP": "webp",
    "GIF": "gif",
    "AVIF": "avif",
}
# The decoders Image.open may try. MPO (the multi-picture JPEG many phones
# write) has no opener of its own: the JPEG opener returns it.
_OPENERS = ["JPEG", "PNG", "WEBP", "GIF", "AVIF"]

# Formats we recognise only to name them in the rejection.
_KNOWN_UNSUPPORTED: tuple[tuple[bytes, int, str], ...] = (
    (b"BM", 0, "bmp"),
    (b"II*\x00", 0, "tiff"),
    (b"MM\x00*", 0, "tiff"),
    (b"%PDF", 0, "pdf"),
    (b"\x00\x00\x01\x00", 0, "ico"),
    (b"8BPS", 0, "psd"),
    (b"PK\x03\x04", 0, "zip"),
    (b"\x1f\x8b", 0, "gzip"),
)

_HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"}
_AVIF_BRANDS = {b"avif", b"avis"}


def sniff_format(data: bytes) -> str:
    """Return the format name read from the magic bytes, or raise ``RejectedInput``."""
    if not data:
        raise RejectedInput("empty file")
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data[4:8] == b"ftyp":
        brands = {data[8:12]} | {data[i : i + 4] for i in range(16, min(len(data), 64), 4)}
        if brands & _AVIF_BRANDS:
            return "avif"
        if brands & _HEIF_BRANDS:
            raise RejectedInput(
                "unsupported format: heif/heic (allowed: jpeg, png, webp, gif, avif)"
            )
    for magic, offset, name in _KNOWN_UNSUPPORTED:
        if data[offset : offset + len(magic)] == magic:
            raise RejectedInput(
                f"unsupported format: {name} (allowed: {', '.join(ALLOWED_FORMATS)})"
            )
    head = data[:512].lstrip()
    if head[:5].lower() in (b"<?xml", b"<svg ") or b"<svg" in head.lower():
        raise RejectedInput("unsupported format: svg (allowed: jpeg, png, webp, gif, avif)")
    if _looks_like_text(data[:1024]):
        raise RejectedInput("not an image: the file holds text")
    raise RejectedInput("not an image: unrecognised content")


def _looks_like_text(head: bytes) -> bool:
    if b"\x00" in head:  # zero-filled or binary, not text
        return False
    try:
        # Not final: the 1024-byte cut may split the last multi-byte character.
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError:
        return False
    return True


@dataclass(frozen=True)
class DecodedImage:
    """A validated image, decoded, with EXIF orientation applied.

    ``orientation`` is the EXIF orientation tag (1 to 8) that was applied;
    boxes given in the original pixel grid must be moved with
    :func:`curation.geometry.orient_box`.
    """

    format: str
    image: PILImage.Image
    original_width: int
    original_height: int
    orientation: int

    @property
    def width(self) -> int:
        return self.image.width

    @property
    def height(self) -> int:
        return self.image.height


def decode_untrusted(data: bytes, *, max_bytes: int, max_pixels: int) -> DecodedImage:
    """Validate and decode untrusted bytes; raise ``RejectedInput`` with one reason."""
    if len(data) > max_bytes:
        raise RejectedInput(f"file too large: {len(data)} bytes (limit {max_bytes})")
    sniffed = sniff_format(data)
    try:
        with warnings.catch_warnings():
            # Pillow warns (and above 2x its limit, raises) on big images; our
            # own limit below is the one that decides.
            warnings.simplefilter("ignore", PILImage.DecompressionBombWarning)
            image = PILImage.open(io.BytesIO(data), formats=_OPENERS)
            pil_format = _PIL_FORMATS.get(image.format or "", "")
            if pil_format != sniffed:
                raise RejectedInput(f"content is not a valid {sniffed} image")
            width, height = image.size
            if width <= 0 or height <= 0:
                raise RejectedInput("image has no pixels")
            if width * height > max_pixels:
                raise RejectedInput(
                    f"too many pixels: {width}x{height} (limit {max_pixels} pixels)"
                )
            image.seek(0)  # a GIF or animated WEBP: the first frame only
            image.load()
    except RejectedInput:
        raise
    except PILImage.DecompressionBombError:
        raise RejectedInput("too many pixels: decompression bomb") from None
    except UnidentifiedImageError:
        raise RejectedInput(f"content is not a valid {sniffed} image") from None
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise RejectedInput(f"corrupt or truncated {sniffed} image ({_short(error)})") from None
    orientation = _exif_orientation(image)
    oriented = ImageOps.exif_transpose(image) if orientation != 1 else image
    return DecodedImage(
        format=sniffed,
        image=oriented,
        original_width=width,
        original_height=height,
        orientation=orientation,
    )


def _exif_orientation(image: PILImage.Image) -> int:
    try:
        value = image.getexif().get(0x0112, 1)
    except Exception:  # a broken EXIF block must not reject an otherwise good image
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _short(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    return text if len(text) <= 120 else text[:117] + "..."


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def validate_filename(name: str, *, max_length: int = 255) -> str:
    """Check a user-supplied file name that is kept as metadata only.

    Stored files are always named by hash; this name is recorded for people to
    read, so it must be a plain base name.
    """
    if name == "":
        raise RejectedInput("file name is empty")
    if "\x00" in name:
        raise RejectedInput("file name contains a NUL byte")
    if _CONTROL.search(name):
        raise RejectedInput("file name contains control characters")
    if len(name) > max_length:
        raise RejectedInput(f"file name longer than {max_length} characters ({len(name)})")
    if "/" in name or "\\" in name or name in (".", ".."):
        raise RejectedInput("file name must not contain a path ('/', '\\\\' or '..')")
    return unicodedata.normalize("NFC", name)


def validate_relative_path(path: str, *, max_length: int = 1024) -> str:
    """Check a relative path read from a manifest: no escape from its folder."""
    if "\x00" in path:
        raise RejectedInput("path contains a NUL byte")
    if _CONTROL.search(path):
        raise RejectedInput("path contains control characters")
    if len(path) > max_length:
        raise RejectedInput(f"path longer than {max_length} characters")
    parts = path.replace("\\", "/").split("/")
    if path.startswith(("/", "\\")) or (len(path) > 1 and path[1] == ":"):
        raise RejectedInput("path must be relative to the folder")
    if any(part == ".." for part in parts):
        raise RejectedInput("path must not go up a folder ('..')")
    return unicodedata.normalize("NFC", "/".join(p for p in parts if p not in ("", ".")))


def validate_source_url(url: str) -> str:
    """Accept an absolute http(s) URL of reasonable length, nothing else."""
    from urllib.parse import urlsplit

    url = url.strip()
    if len(url) > 2048:
        raise RejectedInput("source URL longer than 2048 characters")
    if _CONTROL.search(url) or " " in url:
        raise RejectedInput("source URL contains spaces or control characters")
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. "http://[::1/": a malformed IPv6 host
        raise RejectedInput(f"source URL is malformed: {url[:80]!r}") from None
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise RejectedInput(f"source URL must be an absolute http(s) URL, got {url[:80]!r}")
    return url
