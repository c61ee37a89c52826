"""The backbone registry: names, dims, weights and their identifiers."""

from __future__ import annotations

import hashlib
import random
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from curation.exceptions import ConfigurationError
from curation.learning.backbones import (
    BACKBONES,
    DEFAULT_BACKBONE,
    LoadedBackbone,
    backbone_names,
    file_weights_id,
    get_spec,
    load_backbone,
)
from tests.conftest import SHARED_WEIGHTS

SMALL = "mobilenet_0.25"
SHARED_MOBILENET = SHARED_WEIGHTS / "mobilenet_2_5_224_tf_no_top.h5"


def _pixels(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, 224, 224, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def small_none() -> LoadedBackbone:
    return load_backbone(SMALL, "none")


@pytest.fixture(scope="module")
def trained() -> LoadedBackbone:
    """A small MobileNet whose weights differ from the seeded random ones ("trained")."""
    backbone = load_backbone(SMALL, "none")
    rng = np.random.default_rng(7)
    for variable in backbone.model.trainable_variables:
        values = np.asarray(variable.numpy())
        variable.assign(values * rng.uniform(0.5, 1.5, size=values.shape).astype(values.dtype))
    return backbone


@pytest.fixture(scope="module")
def saved_weights(trained: LoadedBackbone, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("weights") / "small.weights.h5"
    save_weights(trained, path)
    return path


def save_weights(backbone: LoadedBackbone, path: Path) -> None:
    with warnings.catch_warnings():
        # Keras' own saving trips NumPy 2's __array__(copy=...) deprecation.
        warnings.simplefilter("ignore", DeprecationWarning)
        backbone.model.save_weights(str(path))


def test_registry_names_sizes_and_dims() -> None:
    dims = {name: (spec.input_size, spec.dim) for name, spec in BACKBONES.items()}
    assert dims == {
        "efficientnetb0": (224, 1280),
        "mobilenetv2": (224, 1280),
        "mobilenetv3small": (224, 576),
        "mobilenet_0.25": (224, 256),
        "mobilenet_0.5": (224, 512),
        "mobilenet_0.75": (224, 768),
        "mobilenet_1.0": (224, 1024),
    }
    assert DEFAULT_BACKBONE == "efficientnetb0"
    assert backbone_names()[0] == DEFAULT_BACKBONE
    assert sorted(backbone_names()) == sorted(BACKBONES)


@pytest.mark.parametrize(
    ("name", "canonical"),
    [
        ("mobilenet_0.25", "mobilenet_0.25"),
        ("mobilenet_0.50", "mobilenet_0.5"),
        ("mobilenet_1", "mobilenet_1.0"),
        ("MobileNetV2", "mobilenetv2"),
        (" efficientnetb0 ", "efficientnetb0"),
    ],
)
def test_names_are_canonicalised(name: str, canonical: str) -> None:
    assert get_spec(name).name == canonical


@pytest.mark.parametrize("name", ["resnet50", "mobilenet", "mobilenet_0.3", "mobilenet_x", ""])
def test_unknown_name_is_a_configuration_error(name: str) -> None:
    with pytest.raises(ConfigurationError, match="backbone"):
        load_backbone(name, "none")


def test_model_dims_match_the_registry(small_none: LoadedBackbone) -> None:
    assert small_none.model.output_shape == (None, 256)
    assert small_none.weights_id == "none"
    assert small_none.space_key == "mobilenet_0.25:none"


def test_random_weights_are_seeded_and_not_degenerate(small_none: LoadedBackbone) -> None:
    state = random.getstate()
    again = load_backbone(SMALL, "none")
    assert random.getstate() == state  # Python's global RNG is left as it was
    pixels = _pixels(3)
    first, second = small_none.embed_batch(pixels), again.embed_batch(pixels)
    np.testing.assert_array_equal(first, second)
    # Keras' own init makes these ~1e-15 (zero in float16); the He re-init does not.
    as_half = first.astype(np.float16)
    assert np.isfinite(as_half).all()
    assert float(np.abs(as_half).mean()) > 1e-3
    assert not np.array_equal(as_half[0], as_half[1])


def test_embed_batch_checks_its_input(small_none: LoadedBackbone) -> None:
    with pytest.raises(ValueError, match="uint8"):
        small_none.embed_batch(np.zeros((1, 224, 224, 3), dtype=np.float32))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="224"):
        small_none.embed_batch(np.zeros((1, 200, 200, 3), dtype=np.uint8))


def test_missing_weights_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.h5"
    with pytest.raises(ConfigurationError, match=r"nope\.h5"):
        load_backbone(SMALL, str(missing))


def test_unreadable_weights_file(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.h5"
    garbage.write_bytes(b"not an hdf5 file" * 64)
    with pytest.raises(ConfigurationError, match=r"garbage\.h5"):
        load_backbone(SMALL, str(garbage))


def test_weights_file_of_another_kind(tmp_path: Path) -> None:
    other = tmp_path / "weights.bin"
    other.write_bytes(b"\0" * 64)
    with pytest.raises(ConfigurationError, match=r"\.h5"):
        load_backbone(SMALL, str(other))


def test_imagenet_without_internet_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from keras.src.utils import file_utils

    def offline(*args: object, **kwargs: object) -> str:
        raise OSError("URL fetch failure: no route to host")

    monkeypatch.setattr(file_utils, "get_file", offline)
    with pytest.raises(ConfigurationError, match="ImageNet"):
        load_backbone(SMALL, "imagenet")


def test_weights_id_is_stable_and_content_based(saved_weights: Path, tmp_path: Path) -> None:
    expected = "file:" + hashlib.sha256(saved_weights.read_bytes()).hexdigest()[:16]
    first = load_backbone(SMALL, str(saved_weights))
    second = load_backbone(SMALL, str(saved_weights))
    assert first.weights_id == second.weights_id == expected
    assert first.space_key == f"mobilenet_0.25:{expected}"
    copy = tmp_path / "renamed.weights.h5"
    shutil.copyfile(saved_weights, copy)
    assert file_weights_id(copy) == expected
    changed = tmp_path / "changed.weights.h5"
    changed.write_bytes(saved_weights.read_bytes() + b"\0")
    assert file_weights_id(changed) != expected


def test_keras3_weights_file_round_trips(
    small_none: LoadedBackbone, trained: LoadedBackbone, saved_weights: Path
) -> None:
    loaded = load_backbone(SMALL, str(saved_weights))
    pixels = _pixels(2, seed=1)
    embeddings = loaded.embed_batch(pixels)
    np.testing.assert_array_equal(embeddings, trained.embed_batch(pixels))
    assert not np.allclose(embeddings, small_none.embed_batch(pixels), atol=1e-3)


def test_keras3_weights_file_of_another_architecture(tmp_path: Path) -> None:
    path = tmp_path / "v3small.weights.h5"
    save_weights(load_backbone("mobilenetv3small", "none"), path)
    with pytest.raises(ConfigurationError, match="does not fit"):
        load_backbone(SMALL, str(path))


def test_keras3_weights_file_of_another_width(saved_weights: Path) -> None:
    with pytest.raises(ConfigurationError, match="does not fit"):
        load_backbone("mobilenet_0.5", str(saved_weights))


def _shared_mobilenet() -> Path:
    if not SHARED_MOBILENET.is_file():
        pytest.skip(f"{SHARED_MOBILENET} is absent")
    return SHARED_MOBILENET


def test_shared_mobilenet_weights_load_and_change_the_embeddings(
    small_none: LoadedBackbone,
) -> None:
    path = _shared_mobilenet()
    loaded = load_backbone(SMALL, str(path))
    assert loaded.weights_id.startswith("file:")
    assert len(loaded.weights_id) == len("file:") + 16
    assert loaded.weights_id == file_weights_id(path)
    assert loaded.space_key == f"mobilenet_0.25:{loaded.weights_id}"
    pixels = _pixels(2, seed=2)
    trained, random_ = loaded.embed_batch(pixels), small_none.embed_batch(pixels)
    assert trained.shape == random_.shape == (2, 256)
    assert not np.allclose(trained, random_, atol=1e-3)
    # ImageNet features after ReLU6 and pooling: non-negative, at most 6, not all zero.
    assert float(trained.min()) >= 0.0
    assert float(trained.max()) <= 6.0
    assert float(trained.mean()) > 0.01


def test_shared_mobilenet_weights_do_not_fit_another_width() -> None:
    path = _shared_mobilenet()
    with pytest.raises(ConfigurationError, match="does not fit"):
        load_backbone("mobilenet_0.5", str(path))
