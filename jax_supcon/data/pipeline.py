"""Host-side tf.data pipelines: this process's share of every global batch, as numpy.

Training: shard by process, shuffle reproducibly (seeded, reshuffled every epoch), repeat, batch.
Resuming at step `s` skips `s` batches, so a restarted run sees the same batches as an
uninterrupted one. Evaluation: one pass, padded to whole global batches with a `mask`, so every
process runs the same number of steps and padding is never counted.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

from jax_supcon.data.sources import Source

Batch = dict[str, np.ndarray]


def _tf():
    """TensorFlow for the input pipeline only: never let it claim an accelerator."""
    import tensorflow as tf

    tf.config.set_visible_devices([], "GPU")
    return tf


def local_batch_size(global_batch: int, process_count: int) -> int:
    if global_batch % process_count:
        raise ValueError(f"batch_size={global_batch} must be divisible by the process count ({process_count})")
    return global_batch // process_count


def _process_dataset(source: Source, process_index: int, process_count: int):
    tf = _tf()
    ds = tf.data.Dataset.from_tensor_slices({"image": source.images, "label": source.labels})
    return ds.shard(process_count, process_index)


def train_batches(
    source: Source,
    *,
    global_batch: int,
    seed: int,
    start_step: int = 0,
    process_index: int = 0,
    process_count: int = 1,
    shuffle_buffer: int = 50_000,
) -> Iterator[Batch]:
    """Endless shuffled batches of `global_batch / process_count` examples, from `start_step` on."""
    tf = _tf()
    batch = local_batch_size(global_batch, process_count)
    ds = _process_dataset(source, process_index, process_count)
    shard_size = math.ceil((source.num_examples - process_index) / process_count)
    if shard_size < batch:
        raise ValueError(
            f"batch_size={global_batch} is larger than the training split ({source.num_examples} examples)"
        )
    ds = ds.shuffle(min(shuffle_buffer, shard_size), seed=seed, reshuffle_each_iteration=True)
    ds = ds.repeat().batch(batch, drop_remainder=True).skip(start_step)
    return ds.prefetch(tf.data.AUTOTUNE).as_numpy_iterator()


def eval_batches(
    source: Source,
    *,
    global_batch: int,
    process_index: int = 0,
    process_count: int = 1,
) -> Iterator[Batch]:
    """One pass over `source`, padded with `mask == 0` rows to whole global batches; `index` is
    each example's position in the source (-1 for padding), so results can be put back in order."""
    tf = _tf()
    batch = local_batch_size(global_batch, process_count)
    num_batches = math.ceil(source.num_examples / global_batch)
    ds = tf.data.Dataset.from_tensor_slices(
        {"image": source.images, "label": source.labels, "index": np.arange(source.num_examples, dtype=np.int32)}
    ).shard(process_count, process_index)
    ds = ds.map(lambda ex: {**ex, "mask": tf.constant(1, tf.int32)})
    padding = tf.data.Dataset.from_tensors(
        {
            "image": tf.zeros(source.images.shape[1:], tf.uint8),
            "label": tf.constant(0, tf.int32),
            "index": tf.constant(-1, tf.int32),
            "mask": tf.constant(0, tf.int32),
        }
    ).repeat()
    ds = ds.concatenate(padding).take(num_batches * batch).batch(batch)
    return ds.prefetch(tf.data.AUTOTUNE).as_numpy_iterator()
