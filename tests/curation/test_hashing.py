"""Content hashes and 64-bit perceptual hashes."""

from __future__ import annotations

import hashlib
import io

import pytest
from PIL import Image as PILImage

from curation.hashing import (
    hamming_distance,
    perceptual_hash,
    sha256_hex,
    to_signed64,
    to_unsigned64,
)
from tests.factories import encode, jpeg, near_copy, pattern


def _decode(data: bytes) -> PILImage.Image:
    image = PILImage.open(io.BytesIO(data))
    image.load()
    return image


def test_sha256_hex() -> None:
    assert sha256_hex(b"abc") == hashlib.sha256(b"abc").hexdigest()
    assert sha256_hex(b"") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def test_perceptual_hash_is_64_bits_unsigned_and_deterministic() -> None:
    value = perceptual_hash(pattern(1))
    assert 0 <= value < 2**64
    assert perceptual_hash(pattern(1)) == value


@pytest.mark.parametrize("seed", [1, 2, 3, 7, 11])
def test_reencoded_copy_is_within_a_small_distance(seed: int) -> None:
    original = perceptual_hash(_decode(jpeg(seed)))
    for copy in (
        encode(pattern(seed), "JPEG", quality=40),
        encode(pattern(seed), "PNG"),
        encode(pattern(seed), "WEBP", quality=50),
        near_copy(seed),
    ):
        assert hamming_distance(original, perceptual_hash(_decode(copy))) <= 4


def test_resized_copy_is_within_a_small_distance() -> None:
    original = perceptual_hash(pattern(3))
    smaller = pattern(3).resize((160, 120), PILImage.Resampling.BILINEAR)
    assert hamming_distance(original, perceptual_hash(smaller)) <= 4


def test_different_patterns_are_far_apart() -> None:
    hashes = [perceptual_hash(pattern(seed)) for seed in range(1, 13)]
    for i, a in enumerate(hashes):
        for b in hashes[i + 1 :]:
            assert hamming_distance(a, b) >= 12


def test_hash_ignores_uniform_brightness_change() -> None:
    # The DC term is left out of the median; a flat shift moves no bit.
    base = perceptual_hash(pattern(5))
    brighter = PILImage.eval(pattern(5), lambda v: min(255, v + 10))
    assert hamming_distance(base, perceptual_hash(brighter)) <= 2


@pytest.mark.parametrize("value", [0, 1, 2**62, 2**63 - 1, 2**63, 2**63 + 1, 2**64 - 2, 2**64 - 1])
def test_signed_unsigned_round_trip(value: int) -> None:
    signed = to_signed64(value)
    assert -(2**63) <= signed < 2**63
    assert to_unsigned64(signed) == value
    assert (signed < 0) == (value >= 2**63)


def test_signed_conversion_values() -> None:
    assert to_signed64(2**64 - 1) == -1
    assert to_signed64(2**63) == -(2**63)
    assert to_unsigned64(-1) == 2**64 - 1
    assert to_unsigned64(5) == 5


def test_hamming_distance_mixes_signed_and_unsigned() -> None:
    assert hamming_distance(-1, 0) == 64
    assert hamming_distance(2**64 - 1, -1) == 0
    assert hamming_distance(to_signed64(2**63 | 0b101), 0b100) == 2
