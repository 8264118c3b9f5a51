"""`folder:PATH` data sets: `PATH/<split>/<class>/*.<image extension>`, hidden files skipped, every
file decode-checked once (`data.verify_files`; `data.skip_corrupt` leaves unreadable ones out)."""

from __future__ import annotations

import concurrent.futures
import os

import ml_collections
import numpy as np
from absl import logging

from jax_supcon.data.sources import FOLDER_PREFIX, Source, tf_module

# What `decode_file` (tf.io.decode_image) reads: folder data sets, search and the Embedder share
# this list and `is_image_file`, so a folder trains on the images search would see.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp")
DECODABLE_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "WEBP")


def decode_file(contents):
    """Encoded JPEG/PNG bytes -> uint8 HxWx3 (grayscale and RGBA become RGB)."""
    tf = tf_module()
    return tf.io.decode_image(contents, channels=3, expand_animations=False)


def is_readable(path: str) -> bool:
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
    tf = tf_module()
    try:
        decode_file(tf.io.read_file(path))
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
    tf = tf_module()
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
            readable = list(pool.map(is_readable, paths))
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
        return decode_file(tf.io.read_file(path_table[index]))

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
