"""Data sources: a name from the config -> examples `{image: uint8 HxWx3, label: int32}`.

Every source is an in-memory or tf.data-backed `Source` with `num_examples` and `num_classes`, so
the host pipeline does not care where the images came from. The walking skeleton ships `digits`
(scikit-learn's 1,797 real 8x8 handwritten digits, embedded, no download).
"""

from __future__ import annotations

import dataclasses

import ml_collections
import numpy as np

SPLITS = ("train", "test")
DIGITS_TEST_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0  # fixed, independent of config.seed: the test set never changes


@dataclasses.dataclass(frozen=True)
class Source:
    """An in-memory image classification split."""

    images: np.ndarray  # uint8 [N, H, W, 3]
    labels: np.ndarray  # int32 [N]
    num_classes: int

    @property
    def num_examples(self) -> int:
        return int(self.labels.shape[0])

    def __post_init__(self):
        if self.images.dtype != np.uint8 or self.images.ndim != 4 or self.images.shape[-1] != 3:
            raise ValueError(f"images must be uint8 [N, H, W, 3], got {self.images.dtype} {self.images.shape}")
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError(f"labels must be [{self.images.shape[0]}], got {self.labels.shape}")


def _resize_uint8(images: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of a uint8 batch to `size` x `size` (host side, once)."""
    if images.shape[1:3] == (size, size):
        return images
    import tensorflow as tf

    resized = tf.image.resize(tf.convert_to_tensor(images, tf.float32), (size, size), method="bilinear")
    return np.clip(np.round(resized.numpy()), 0, 255).astype(np.uint8)


def digits_split(split: str, image_size: int) -> Source:
    """scikit-learn's digits as RGB uint8 at `image_size`, with a fixed stratified 80/20 split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)  # ink 0..16 -> 0..255
    labels = digits.target.astype(np.int32)
    train_idx, test_idx = train_test_split(
        np.arange(labels.shape[0]),
        test_size=DIGITS_TEST_FRACTION,
        stratify=labels,
        random_state=DIGITS_SPLIT_SEED,
    )
    index = np.sort(train_idx if split == "train" else test_idx)
    rgb = np.repeat(images[index][..., None], 3, axis=-1)
    return Source(images=_resize_uint8(rgb, image_size), labels=labels[index], num_classes=10)


def load_source(data_config: ml_collections.ConfigDict, split: str) -> Source:
    """The source named by `data.name`, for `split` in ("train", "test")."""
    if split not in SPLITS:
        raise ValueError(f"split={split!r}; allowed: {SPLITS}")
    name = data_config.name
    if name == "digits":
        return digits_split(split, data_config.image_size)
    raise ValueError(f"data.name={name!r}; allowed: 'digits' (tfds, folder: and synthetic come with the data issue)")
