"""Data sources: `data.name` -> a `Source` of examples `{image: uint8 HxWx3, label: int32}`.

Names: `digits` (scikit-learn's 1,797 handwritten digits, embedded), `synthetic` (random images,
for benchmarks), `folder:PATH` (`PATH/<split>/<class>/<image files>`) and any tfds
image-classification data set (`cifar10`, `imagenet2012`, ...; prepared under `data.tfds_data_dir`).

Two kinds, which the host pipeline treats differently:
- *indexable* (digits, synthetic, folder): every label is known and example `i` can be loaded on
  its own, so a batch is a list of indices. Shuffles are exact global permutations, resuming at
  any step costs nothing, class-balanced batches are possible, and any number of processes sees
  the same global batches (each loads only its slice).
- *streamed* (tfds): undecoded records are read per process share (`tfds.split_for_jax_process`),
  shuffled in a buffer and decoded on the fly.

This module holds the `Source` type, the `config.data` section (defaults and checks) and
`load_source`; each kind lives in its own module (`embedded`, `folders`, `tfds_data`), and the
rules that cut a training split (fractions, the validation part, label noise) in `subsets`.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable
from typing import Any

import ml_collections
import numpy as np
from ml_collections.config_dict import placeholder

BUILTIN_SOURCES = ("digits", "mnist5k", "synthetic")
FOLDER_PREFIX = "folder:"
ALLOWED_NAMES = "'digits', 'mnist5k', 'synthetic', 'folder:PATH' or a tfds image-classification name such as 'cifar10'"


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


def tf_module():
    """TensorFlow for the input pipeline only: never let it claim an accelerator."""
    import tensorflow as tf

    with contextlib.suppress(RuntimeError):  # TensorFlow already initialised its devices: nothing to hide
        tf.config.set_visible_devices([], "GPU")
    return tf


def _resize_uint8(images: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of a uint8 batch to `size` x `size` (host side, once)."""
    if images.shape[1:3] == (size, size):
        return images
    tf = tf_module()
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


def held_in_memory(source: Source) -> Source:
    """A streamed (tfds) source made indexable: its records, still encoded, are read once into host
    memory (every process holds the whole split), so class-balanced batches and exact per-step
    shuffles work as for a folder. Meant for the small metric-learning sets (CUB-200-2011 is
    about 0.6 GB of JPEGs per split, Cars-196 about 1 GB), not ImageNet."""
    if source.indexable:
        return source
    tf = tf_module()
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
    from jax_supcon.data import embedded, folders, tfds_data  # each kind imports this module's Source

    if data.name == "digits":
        source = embedded.digits_split(split, data.image_size)
    elif data.name == "mnist5k":
        source = embedded.mnist5k_split(split, data.image_size)
    elif data.name == "synthetic":
        source = embedded.synthetic_split(split, data)
    elif data.name.startswith(FOLDER_PREFIX):
        source = folders.folder_split(split, data)
    else:
        source = tfds_data.tfds_split(split, data)
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
    # labels (finetune, linear_eval, supervised; 1: all). See subsets.label_fraction_subset.
    section.label_fraction = 1.0
    # Small-data experiments: every job trains on this class-balanced, fixed fraction of the
    # training images (1: all). See subsets.train_fraction_subset.
    section.train_fraction = 1.0
    # Label-noise experiments: this fraction of each training class gets a wrong label, drawn per
    # seed (0: clean). Evaluation labels are never touched. See subsets.noisy_labels.
    section.label_noise = 0.0
    # Validation without the test split: this fixed, class-stratified fraction of the training
    # split (the same images for every seed and job) is kept out of training; validation, the
    # best checkpoint and `jax-supcon-sweep --select` read it, and the test split is read once, at
    # the end of a run. 0: validation reads the test split. See subsets.split_off_validation.
    section.validation_fraction = 0.0
    section.samples_per_class = 0  # > 0: class-balanced batches of this many examples per class
    section.eval_crop_fraction = 0.875  # varying-size images: centre crop of image_size / fraction
    section.verify_files = True  # folder: decode-check every file once at start
    section.skip_corrupt = False  # folder: leave out (and count) unreadable files instead of failing
    section.prefetch_to_device = 2  # batches copied to the devices ahead of the step
    return section
