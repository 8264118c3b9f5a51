"""tfds image-classification data sets (`cifar10`, `imagenet2012`, ...), streamed: records read per
process share, shuffled in a buffer and decoded on the fly; labels read once and cached."""

from __future__ import annotations

import contextlib
import functools
import os

import ml_collections
import numpy as np

from jax_supcon.data.sources import ALLOWED_NAMES, Source, tf_module


def tfds_split(split_name: str, data: ml_collections.ConfigDict) -> Source:
    """A prepared tfds data set with `image` and `label` features; records stay undecoded until
    the pipeline has picked this process's share. Sizes missing from the metadata (as under
    `tfds.testing.mock_data`) come from the data itself or from `data.num_*` in the config."""
    tf = tf_module()
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
