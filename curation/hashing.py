"""Content and perceptual hashes.

Perceptual hashes are 64-bit DCT hashes (pHash), kept as signed 64-bit
integers in the database and as ``uint64`` in NumPy arrays (the same bits).
"""

from __future__ import annotations

import hashlib

import numpy as np
from numpy.typing import NDArray
from PIL import Image as PILImage

_HASH_SIDE = 32
_LOW_FREQUENCIES = 8


def _dct_matrix(n: int) -> NDArray[np.float64]:
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    matrix: NDArray[np.float64] = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    matrix[0, :] /= np.sqrt(2.0)
    return matrix


_DCT = _dct_matrix(_HASH_SIDE)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def perceptual_hash(image: PILImage.Image) -> int:
    """Return the 64-bit pHash of ``image`` as an unsigned Python int in [0, 2**64)."""
    gray = image.convert("L")
    small = gray.resize((_HASH_SIDE, _HASH_SIDE), PILImage.Resampling.LANCZOS, reducing_gap=3.0)
    pixels = np.asarray(small, dtype=np.float64)
    coefficients = _DCT @ pixels @ _DCT.T
    low = coefficients[:_LOW_FREQUENCIES, :_LOW_FREQUENCIES].ravel()
    # The DC term is the mean brightness; leaving it out of the median keeps
    # the hash about structure, not exposure.
    bits = low > np.median(low[1:])
    packed = np.packbits(bits.astype(np.uint8))
    return int.from_bytes(packed.tobytes(), "big")


def to_signed64(value: int) -> int:
    """Unsigned 64-bit int to the signed int a BIGINT column holds."""
    return value - (1 << 64) if value >= (1 << 63) else value


def to_unsigned64(value: int) -> int:
    return value + (1 << 64) if value < 0 else value


def hamming_distance(a: int, b: int) -> int:
    return (to_unsigned64(a) ^ to_unsigned64(b)).bit_count()
