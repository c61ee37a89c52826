"""The registry of image backbones that turn photos into embeddings.

A backbone is a Keras application without its classifier
(``include_top=False``) and with global average pooling, so one image of
``input_size x input_size`` RGB pixels becomes one vector of ``dim`` floats.

Names:

* ``"efficientnetb0"`` (the default, 224 px, 1280 dims);
* ``"mobilenetv2"`` (224 px, 1280 dims);
* ``"mobilenetv3small"`` (224 px, 576 dims);
* ``"mobilenet_<alpha>"`` with alpha 0.25, 0.5, 0.75 or 1.0 (224 px,
  ``1024 * alpha`` dims), e.g. ``"mobilenet_0.25"``; ``"mobilenet_0.50"`` is
  accepted and named ``"mobilenet_0.5"``.

Weights (:func:`load_backbone`):

* ``"imagenet"``: Keras downloads (and caches under ``~/.keras``) its stock
  ImageNet weights; needs internet access the first time.
* ``"none"``: random initialisation from a fixed seed, the same in every
  process (a throughput baseline, and a fallback that still keys its
  embeddings apart from real weights).
* a path to a local ``.h5`` file: either a legacy Keras HDF5 weights file
  (such as the files Keras itself downloads), matched to the layers by name,
  every layer with weights required; or a Keras 3 ``.weights.h5`` file saved
  from the same architecture.

Preprocessing: every model takes pixels as floats in ``[0, 255]``. Keras'
EfficientNet and MobileNetV3 rescale inside the model, so their
``preprocess`` passes the pixels through; MobileNet and MobileNetV2 scale them
to ``[-1, 1]`` with their own ``preprocess_input``.

Known limit: for EfficientNet Keras adds a per-channel rescaling layer only
when ``weights == "imagenet"``; a file path is loaded as Keras loads a path
(without it), so stock EfficientNet weights should come from ``"imagenet"``.
"""

from __future__ import annotations

import hashlib
import random
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np
from numpy.typing import NDArray

from curation.exceptions import ConfigurationError

if TYPE_CHECKING:
    import keras

DEFAULT_BACKBONE: Final = "efficientnetb0"
INIT_SEED: Final = 20_240_601  # weights "none": the same random model in every process
MOBILENET_ALPHAS: Final = {0.25: "0.25", 0.5: "0.5", 0.75: "0.75", 1.0: "1.0"}

Builder = Callable[[str | None], "keras.Model"]
"""Builds the headless, average-pooled model: ``"imagenet"`` or ``None`` (random)."""
Preprocess = Callable[[Any], Any]
"""Float pixels ``(N, s, s, 3)`` in ``[0, 255]`` (NumPy or tensor) -> what the model takes."""


@dataclass(frozen=True)
class BackboneSpec:
    """One backbone: its name, square input side, embedding size, and how to build it."""

    name: str
    input_size: int
    dim: int
    builder: Builder
    preprocess: Preprocess


@dataclass(frozen=True)
class LoadedBackbone:
    """A built backbone with its weights.

    ``weights_id`` names the weights in a short stable string (``"imagenet"``,
    ``"none"`` or ``"file:<first 16 hex digits of the file's SHA-256>"``), and
    ``space_key`` (``"<name>:<weights_id>"``) names the embedding space: two
    embeddings are comparable exactly when their space keys are equal.
    """

    spec: BackboneSpec
    model: keras.Model
    weights_id: str

    @property
    def space_key(self) -> str:
        return f"{self.spec.name}:{self.weights_id}"

    @cached_property
    def _infer(self) -> Callable[[Any], Any]:
        import tensorflow as tf

        size = self.spec.input_size
        model = self.model
        preprocess = self.spec.preprocess

        @tf.function(  # type: ignore[untyped-decorator]
            input_signature=[tf.TensorSpec((None, size, size, 3), tf.uint8)],
            autograph=False,  # nothing to convert; and no source files read at trace time
        )
        def infer(pixels: Any) -> Any:
            return model(preprocess(tf.cast(pixels, tf.float32)), training=False)

        return infer  # type: ignore[no-any-return]

    def embed_batch(self, pixels: NDArray[np.uint8]) -> NDArray[np.float32]:
        """Run the model on one batch of decoded images.

        ``pixels``: uint8 ``(N, s, s, 3)`` RGB in ``[0, 255]`` with
        ``s = spec.input_size``. Returns float32 ``(N, spec.dim)``. The
        preprocessing runs inside the same compiled graph as the model (one
        trace per backbone; inference mode, so batch norm and dropout are fixed
        and the result depends only on the pixels). On 2 cores the compiled
        function ran EfficientNetB0 at 24 images/s against 17 for
        ``predict_on_batch`` and 13 for an eager ``model(x, training=False)``;
        XLA (``jit_compile=True``) was 5 to 10 times slower still.
        """
        size = self.spec.input_size
        if pixels.dtype != np.uint8 or pixels.ndim != 4 or pixels.shape[1:] != (size, size, 3):
            raise ValueError(
                f"expected uint8 (N, {size}, {size}, 3) pixels, got {pixels.dtype} {pixels.shape}"
            )
        result = self._infer(pixels)
        return np.array(result, dtype=np.float32)  # a writable copy, not a view of the tensor


def _application(constructor_name: str, size: int, **options: object) -> Builder:
    def build(weights: str | None) -> keras.Model:
        import keras

        constructor = getattr(keras.applications, constructor_name)
        model = constructor(
            include_top=False,
            pooling="avg",
            input_shape=(size, size, 3),
            weights=weights,
            **options,
        )
        return model

    return build


def passthrough(pixels: Any) -> Any:
    """For models that rescale inside (EfficientNet, MobileNetV3, a fine-tuned
    classifier): pixels stay in [0, 255]."""
    return pixels


def _scale_to_unit_range(pixels: Any) -> Any:
    """MobileNet and MobileNetV2: ``preprocess_input`` maps [0, 255] to [-1, 1]."""
    from keras.applications import mobilenet

    return mobilenet.preprocess_input(pixels)


def _scale_to_unit_range_v2(pixels: Any) -> Any:
    from keras.applications import mobilenet_v2

    return mobilenet_v2.preprocess_input(pixels)


def _mobilenet(alpha: float) -> BackboneSpec:
    return BackboneSpec(
        name=f"mobilenet_{MOBILENET_ALPHAS[alpha]}",
        input_size=224,
        dim=int(1024 * alpha),
        builder=_application("MobileNet", 224, alpha=alpha),
        preprocess=_scale_to_unit_range,
    )


BACKBONES: Final[Mapping[str, BackboneSpec]] = {
    spec.name: spec
    for spec in (
        BackboneSpec(
            name="efficientnetb0",
            input_size=224,
            dim=1280,
            builder=_application("EfficientNetB0", 224),
            preprocess=passthrough,
        ),
        BackboneSpec(
            name="mobilenetv2",
            input_size=224,
            dim=1280,
            builder=_application("MobileNetV2", 224),
            preprocess=_scale_to_unit_range_v2,
        ),
        BackboneSpec(
            name="mobilenetv3small",
            input_size=224,
            dim=576,
            builder=_application("MobileNetV3Small", 224),
            preprocess=passthrough,
        ),
        *(_mobilenet(alpha) for alpha in MOBILENET_ALPHAS),
    )
}


def backbone_names() -> list[str]:
    """The canonical names of every registered backbone, default first."""
    return [DEFAULT_BACKBONE, *sorted(name for name in BACKBONES if name != DEFAULT_BACKBONE)]


def get_spec(name: str) -> BackboneSpec:
    """The spec registered under ``name``; ``mobilenet_<alpha>`` parses the alpha.

    Raises ``ConfigurationError`` for an unknown name.
    """
    key = name.strip().lower()
    if key in BACKBONES:
        return BACKBONES[key]
    prefix = "mobilenet_"
    if key.startswith(prefix):
        try:
            alpha = float(key[len(prefix) :])
        except ValueError:
            alpha = -1.0
        if alpha in MOBILENET_ALPHAS:
            return BACKBONES[f"{prefix}{MOBILENET_ALPHAS[alpha]}"]
        raise ConfigurationError(
            f"backbone {name!r}: MobileNet alpha must be one of "
            f"{', '.join(MOBILENET_ALPHAS.values())}"
        )
    raise ConfigurationError(f"unknown backbone {name!r}; known: {', '.join(backbone_names())}")


def file_digest(path: Path) -> str:
    """The first 16 hex digits of the SHA-256 of the file (read in 1 MiB chunks)."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:16]


def file_weights_id(path: Path) -> str:
    """``"file:<first 16 hex digits of the SHA-256 of the file>"``."""
    return f"file:{file_digest(path)}"


def configured_space_key(name: str, weights: str) -> str:
    """The space key :func:`load_backbone` would give, without building the model.

    Training and rescoring read cached embeddings only; they need the space's
    name, not the network (nor, for ImageNet weights, a download).
    """
    spec = get_spec(name)
    if weights in ("imagenet", "none"):
        return f"{spec.name}:{weights}"
    path = Path(weights).expanduser()
    if not path.is_file():
        raise ConfigurationError(
            f"backbone {spec.name}: weights must be 'imagenet', 'none' or a weights file; "
            f"{str(path)!r} is not a file"
        )
    return f"{spec.name}:{file_weights_id(path)}"


def load_backbone(name: str, weights: str) -> LoadedBackbone:
    """Build backbone ``name`` with ``weights``: ``"imagenet"``, ``"none"`` or a file path.

    Raises ``ConfigurationError`` for an unknown name, a weights file that is
    missing, unreadable or does not fit the architecture, or ImageNet weights
    that Keras cannot download.
    """
    spec = get_spec(name)
    if weights == "imagenet":
        try:
            model = spec.builder("imagenet")
        except Exception as error:  # Keras raises many kinds while downloading
            raise ConfigurationError(
                f"backbone {spec.name}: cannot get the ImageNet weights from Keras "
                f"(no internet access or no cached copy in ~/.keras/models?): {_short(error)}"
            ) from error
        return LoadedBackbone(spec=spec, model=model, weights_id="imagenet")
    if weights == "none":
        return LoadedBackbone(spec=spec, model=_build_seeded(spec), weights_id="none")
    path = Path(weights).expanduser()
    if not path.is_file():
        raise ConfigurationError(
            f"backbone {spec.name}: weights must be 'imagenet', 'none' or a weights file; "
            f"{str(path)!r} is not a file"
        )
    try:
        weights_id = file_weights_id(path)
    except OSError as error:
        raise ConfigurationError(
            f"backbone {spec.name}: cannot read weights file {path}: {_short(error)}"
        ) from error
    if not path.name.endswith((".h5", ".hdf5")):
        raise ConfigurationError(
            f"backbone {spec.name}: weights file {path}: expected a Keras .h5 or .weights.h5 file"
        )
    model = _build_seeded(spec)
    _load_weights_file(model, path, backbone=spec.name)
    return LoadedBackbone(spec=spec, model=model, weights_id=weights_id)


def _build_seeded(spec: BackboneSpec) -> keras.Model:
    """Build with random weights that are the same in every process.

    Keras' own initialisation is of no use here: its MobileNets start from
    Glorot kernels under identity batch norms, so the signal shrinks layer
    after layer and the pooled features come out near 1e-12 to 1e-20, zero in
    float16. Every convolution kernel is therefore drawn again, He-normal
    (``std = sqrt(2 / fan_in)``, variance preserving through ReLU), from
    ``INIT_SEED`` and the layer's position; biases stay zero, batch norms stay
    identities. Python's ``random`` (which Keras draws its seeds from) is put
    back as it was, so that nothing else in the process notices.
    """
    import keras

    state = random.getstate()
    try:
        model = spec.builder(None)
    finally:
        random.setstate(state)
    rng = np.random.default_rng(INIT_SEED)
    for layer in model.layers:
        kernel = getattr(layer, "kernel", None)
        if kernel is None or len(kernel.shape) != 4:
            continue
        height, width, inputs, _ = (int(n) for n in kernel.shape)
        fan_in = height * width * (1 if isinstance(layer, keras.layers.DepthwiseConv2D) else inputs)
        values = rng.standard_normal(tuple(kernel.shape), dtype=np.float32)
        kernel.assign(values * np.float32(np.sqrt(2.0 / fan_in)))
    return model


def _load_weights_file(model: keras.Model, path: Path, *, backbone: str) -> None:
    import h5py  # type: ignore[import-untyped]  # a Keras dependency, without stubs

    where = f"backbone {backbone}: weights file {path}"
    if path.name.endswith(".weights.h5"):
        try:
            # Keras 3 only warns when it skips a part of the model that the
            # file lacks, leaving it random: such a warning is an error here.
            with warnings.catch_warnings():
                warnings.simplefilter("error", UserWarning)
                model.load_weights(str(path))
        except Exception as error:  # h5py, Keras and TensorFlow each raise their own
            raise ConfigurationError(f"{where} does not fit: {_short(error)}") from error
        return
    if path.suffix not in (".h5", ".hdf5"):
        raise ConfigurationError(f"{where}: expected a Keras .h5 or .weights.h5 file")
    try:
        with h5py.File(path, "r") as handle:
            group = handle if "layer_names" in handle.attrs else handle["model_weights"]
            stored = {_text(value) for value in group.attrs["layer_names"]}
    except (OSError, KeyError, ValueError) as error:
        raise ConfigurationError(
            f"{where} is not a readable Keras HDF5 weights file: {_short(error)}"
        ) from error
    try:
        # In layer order, as Keras saves and downloads them: this needs no
        # layer names (Keras numbers unnamed layers per process).
        model.load_weights(str(path))
        return
    except ValueError:
        pass  # another layer count, e.g. a file that also holds a classifier
    except Exception as error:  # h5py, Keras and TensorFlow each raise their own
        raise ConfigurationError(f"{where} does not fit: {_short(error)}") from error
    missing = [layer.name for layer in model.layers if layer.weights and layer.name not in stored]
    if missing:
        raise ConfigurationError(
            f"{where} does not fit: it lacks weights for {len(missing)} of the model's "
            f"layers (first: {', '.join(missing[:3])}); is it for another architecture?"
        )
    try:
        # By name, every layer with weights covered (checked above) and every
        # shape equal (skip_mismatch=False): no layer keeps random weights.
        model.load_weights(str(path), by_name=True, skip_mismatch=False)
    except Exception as error:  # h5py, Keras and TensorFlow each raise their own
        raise ConfigurationError(f"{where} does not fit: {_short(error)}") from error


def _text(value: object) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _short(error: BaseException, limit: int = 200) -> str:
    text = f"{type(error).__name__}: {error}"
    return text if len(text) <= limit else text[: limit - 3] + "..."
