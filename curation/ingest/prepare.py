"""The CPU-bound part of ingestion: validate, decode, hash, re-encode.

Pure functions of bytes, so they run in a process pool in parallel with the
database work; nothing here touches the database or the store.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image as PILImage

from curation.geometry import Box, clip_box, orient_box
from curation.hashing import perceptual_hash, sha256_hex, to_signed64
from curation.validation import DecodedImage, decode_untrusted

JPEG_QUALITY = 92


@dataclass(frozen=True)
class PreparedImage:
    sha256: str
    format: str
    byte_size: int
    width: int
    height: int
    phash_signed: int
    stored_bytes: bytes
    stored_extension: str  # "jpg" or "png"
    # EXIF orientation applied to the stored copy, and the size before it,
    # so that boxes drawn on the original can be moved onto the stored copy.
    orientation: int
    original_width: int
    original_height: int

    @property
    def stored_format(self) -> str:
        return "jpeg" if self.stored_extension == "jpg" else "png"

    def box_on_stored(self, box: Box) -> Box:
        """Move a box given on the original pixel grid onto the stored, oriented copy."""
        clipped = clip_box(box, width=self.original_width, height=self.original_height)
        return orient_box(
            clipped,
            orientation=self.orientation,
            width=self.original_width,
            height=self.original_height,
        )


def prepare_image(data: bytes, *, max_bytes: int, max_pixels: int) -> PreparedImage:
    """Validate ``data`` and build what will be stored; raises ``RejectedInput``."""
    decoded = decode_untrusted(data, max_bytes=max_bytes, max_pixels=max_pixels)
    if decoded.image.mode in _WIDE_GRAY_MODES:
        # A 16-bit grayscale PNG: Pillow's conversion to L or RGB clips every
        # value above 255 to white, so scale it down to 8 bits here.
        decoded = replace(decoded, image=_to_eight_bit_gray(decoded.image))
    if decoded.image.mode == "P" and "transparency" in decoded.image.info:
        # Palette transparency converts cleanly only through RGBA.
        decoded = replace(decoded, image=decoded.image.convert("RGBA"))
    stored_bytes, extension = _encode_clean_copy(decoded)
    return PreparedImage(
        sha256=sha256_hex(data),
        format=decoded.format,
        byte_size=len(data),
        width=decoded.width,
        height=decoded.height,
        phash_signed=to_signed64(perceptual_hash(decoded.image)),
        stored_bytes=stored_bytes,
        stored_extension=extension,
        orientation=decoded.orientation,
        original_width=decoded.original_width,
        original_height=decoded.original_height,
    )


_WIDE_GRAY_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N"}


def _to_eight_bit_gray(image: PILImage.Image) -> PILImage.Image:
    values = np.asarray(image).astype(np.float64)
    scaled = np.clip(np.rint(values / 257.0), 0, 255).astype(np.uint8)
    return PILImage.fromarray(scaled, "L")


def _has_alpha(image: PILImage.Image) -> bool:
    if image.mode in ("RGBA", "LA", "PA"):
        return True
    return image.mode == "P" and "transparency" in image.info


def _encode_clean_copy(decoded: DecodedImage) -> tuple[bytes, str]:
    """Re-encode pixels only: no EXIF, GPS, XMP or comments survive, nor any
    bytes an attacker appended to the file (a polyglot becomes a plain image)."""
    image = decoded.image
    out = io.BytesIO()
    icc = image.info.get("icc_profile")
    if _has_alpha(image):
        image.convert("RGBA").save(out, format="PNG", icc_profile=icc)
        return out.getvalue(), "png"
    converted = image if image.mode in ("RGB", "L") else image.convert("RGB")
    converted.save(out, format="JPEG", quality=JPEG_QUALITY, icc_profile=icc)
    return out.getvalue(), "jpg"
