"""A ``tf.data.Dataset`` read straight from a version's stored images, for training.

Each element is ``(images, labels)``: float32 ``(batch, height, width, 3)``
RGB in [0, 255] (what ``keras.utils.image_dataset_from_directory`` gives, and
what the Keras application backbones' own preprocessing expects) and int32
``(batch,)`` indices into :func:`class_index` (class slugs in sorted order;
save ``plan.class_slugs`` with the model).

Pixels: the stored copy (EXIF orientation already applied) is cut to the
crop window of :meth:`~datasets.export.plan.ExportPlan.crop_windows` (the
box rounded outwards to whole pixels, the same pixels a cropped export
holds; a JPEG is decoded only inside the window), transparent PNG pixels are
composited over white, and the result is resized to ``image_size`` as a
whole (no centre crop; bilinear with anti-aliasing when shrinking), as
:func:`curation.learning.decode.decode_for_model` does for embeddings.

Order: validation and test rows come in export order (split, class slug,
image hash), never shuffled, so predictions line up with a CSV manifest or
a COCO file of the same version. Train rows are shuffled with ``seed``
(reshuffled each epoch, the same sequence of epochs for the same seed), and
only train rows are augmented. Decoding runs in parallel
(``num_parallel_calls=AUTOTUNE``) with deterministic output order, and
batches are prefetched.

TensorFlow is imported inside the functions: importing this module is cheap
(the CLI imports ``datasets``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from curation.models import Split
from curation.store import LocalImageStore
from datasets.export.plan import ExportPlan, class_index, split_value

if TYPE_CHECKING:
    import tensorflow as tf

__all__ = ["class_index", "default_augmentation", "make_tf_dataset"]

BACKGROUND: Final = 255.0  # transparent pixels are composited over white


def default_augmentation(
    *,
    rotation: float = 0.05,
    translation: float = 0.1,
    shear: float = 0.1,
    zoom: float = 0.1,
    flip: str | None = "horizontal",
    seed: int = 0,
) -> Any:
    """A ``keras.Sequential`` of random rotation (fraction of a full turn),
    translation (fraction of the size), shear, zoom and flip; a zero or
    ``None`` option leaves its layer out. The seed projects' augmentation, as
    Keras layers (``RandomShear`` where the installed Keras has it)."""
    import keras

    layers: list[Any] = []
    if flip:
        layers.append(keras.layers.RandomFlip(flip, seed=seed))
    if rotation:
        layers.append(keras.layers.RandomRotation(rotation, fill_mode="reflect", seed=seed + 1))
    if translation:
        layers.append(
            keras.layers.RandomTranslation(
                translation, translation, fill_mode="reflect", seed=seed + 2
            )
        )
    if shear and hasattr(keras.layers, "RandomShear"):
        layers.append(
            keras.layers.RandomShear(
                x_factor=shear, y_factor=shear, fill_mode="reflect", seed=seed + 3
            )
        )
    if zoom:
        layers.append(keras.layers.RandomZoom(zoom, fill_mode="reflect", seed=seed + 4))
    return keras.Sequential(layers, name="augmentation")


def make_tf_dataset(
    plan: ExportPlan,
    split: Split | str,
    *,
    store: LocalImageStore,
    image_size: tuple[int, int] = (224, 224),
    crop: bool = True,
    batch_size: int = 32,
    shuffle: bool | None = None,
    seed: int = 0,
    augment: Callable[..., Any] | Sequence[Any] | None = None,
    include_keys: bool = False,
    drop_remainder: bool = False,
) -> tf.data.Dataset:
    """The rows of ``split`` as batches of ``(images, labels)`` (see the module docstring).

    ``image_size``: (height, width). ``crop``: cut boxed images to their box.
    ``shuffle``: default True for train; refused for validation and test.
    ``augment``: a Keras layer or model (e.g. :func:`default_augmentation`)
    or a sequence of Keras preprocessing layers, applied to train batches
    only (called with ``training=True``); refused for the other splits.
    ``include_keys``: yield ``(images, labels, sha256)`` instead, the source
    images' hashes as strings (to write predictions against).
    """
    import tensorflow as tf

    value = split_value(split)
    is_train = value == int(Split.TRAIN)
    shuffle = is_train if shuffle is None else shuffle
    if shuffle and not is_train:
        raise ValueError("validation and test rows are never shuffled: their order is the export's")
    if augment is not None and not is_train:
        raise ValueError("augmentation applies to the train split only")
    if batch_size < 1 or min(image_size) < 1:
        raise ValueError("batch_size and image_size must be positive")

    rows = plan.rows_in(value)
    windows = plan.crop_windows(crop=crop)[rows]
    # tf's crop window is (top, left, height, width).
    tf_windows = np.stack(
        [
            windows[:, 1],
            windows[:, 0],
            windows[:, 3] - windows[:, 1],
            windows[:, 2] - windows[:, 0],
        ],
        axis=1,
    ).astype(np.int32)
    paths = np.asarray(
        [str(store.path_for(plan.storage_keys[int(r)])) for r in rows], dtype=object
    ).reshape(-1)
    is_png = np.asarray([plan.stored_formats[int(r)] == "png" for r in rows], dtype=bool)
    labels = plan.class_indices[rows].astype(np.int32)
    keys = np.asarray([plan.sha256[int(r)] for r in rows], dtype=object).reshape(-1)
    height, width = int(image_size[0]), int(image_size[1])

    def load(path: Any, png: Any, window: Any, label: Any, key: Any) -> Any:
        data = tf.io.read_file(path)

        def from_jpeg() -> Any:
            return tf.cast(tf.io.decode_and_crop_jpeg(data, window, channels=3), tf.float32)

        def from_png() -> Any:
            rgba = tf.io.decode_png(data, channels=4)
            cut = tf.image.crop_to_bounding_box(rgba, window[0], window[1], window[2], window[3])
            cut = tf.cast(cut, tf.float32)
            alpha = cut[..., 3:] / 255.0
            return cut[..., :3] * alpha + BACKGROUND * (1.0 - alpha)

        pixels = tf.cond(png, from_png, from_jpeg)
        image = tf.image.resize(pixels, (height, width), method="bilinear", antialias=True)
        image = tf.clip_by_value(image, 0.0, 255.0)
        image.set_shape((height, width, 3))
        return image, label, key

    dataset = tf.data.Dataset.from_tensor_slices(
        (
            tf.constant(paths.tolist(), dtype=tf.string, shape=(len(rows),)),
            tf.constant(is_png, dtype=tf.bool, shape=(len(rows),)),
            tf.constant(tf_windows, dtype=tf.int32, shape=(len(rows), 4)),
            tf.constant(labels, dtype=tf.int32, shape=(len(rows),)),
            tf.constant(keys.tolist(), dtype=tf.string, shape=(len(rows),)),
        )
    )
    if shuffle:
        # The whole split's rows (strings and ints, not pixels) fit a full shuffle buffer.
        dataset = dataset.shuffle(max(1, len(rows)), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    if augment is not None:
        layer = _as_layer(augment)
        dataset = dataset.map(
            lambda images, labels_, keys_: (layer(images, training=True), labels_, keys_),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
    if not include_keys:
        dataset = dataset.map(lambda images, labels_, _keys: (images, labels_))
    return dataset.prefetch(tf.data.AUTOTUNE)


def _as_layer(augment: Callable[..., Any] | Sequence[Any]) -> Callable[..., Any]:
    if callable(augment):
        return augment
    import keras

    layer: Callable[..., Any] = keras.Sequential(list(augment), name="augmentation")
    return layer
