"""Host-side tf.data pipelines: this process's share of every global batch, as numpy.

Training batches are a pure function of (seed, step). For indexable sources (digits, synthetic,
folder) global batch `t` is slice `t` of a seeded permutation per epoch (or a seeded
class-balanced draw), each process loads only its slice of it, so 1 process x 4 devices and
2 processes x 2 devices see the same global batches, and resuming at step `t` is free. Streamed
(tfds) sources read this process's share of the records, shuffled in a buffer with a seed per
epoch; resuming skips at most one epoch of undecoded records.

The host only decodes and, for images of varying size, takes an Inception-style random crop per
view (seeded by the example's stream position, so it too is exact on resume); everything else
is augmented on the accelerator (`augment.py`). Evaluation is one pass that resizes and centre-crops,
padded with `mask == 0` rows to whole global batches so every process runs the same number of
steps and each example counts exactly once.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Iterator

import numpy as np

from jax_supcon.data.recipes import resolve_view
from jax_supcon.data.sources import Source, tf_module

Batch = dict[str, np.ndarray]
_INT64_MAX = np.iinfo(np.int64).max


@dataclasses.dataclass(frozen=True)
class HostViews:
    """What the host makes of a training image of varying size: `views` random crops (area
    fraction in `crop_scale`, aspect ratio in `crop_ratio`), or with `random_crop=False` the
    evaluation view (shorter side to `image_size / source.crop_fraction`, centre crop)."""

    views: int = 1
    random_crop: bool = True
    crop_scale: tuple[float, float] = (0.08, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    per_view: tuple[tuple[tuple[float, float], tuple[float, float]], ...] = ()  # (scale, ratio) of view v

    def crop_of(self, view: int) -> tuple[tuple[float, float], tuple[float, float]]:
        return self.per_view[view] if view < len(self.per_view) else (self.crop_scale, self.crop_ratio)


def host_views_for(augment_config, views: int, random_crop: bool = True) -> HostViews:
    """The host's crop settings for `views` views of an augment config (each view's own)."""
    crops = tuple(
        (tuple(view.crop_scale), tuple(view.crop_ratio))
        for view in (resolve_view(augment_config, v) for v in range(views))
    )
    return HostViews(
        views=views, random_crop=random_crop, crop_scale=crops[0][0], crop_ratio=crops[0][1], per_view=crops
    )


def local_batch_size(global_batch: int, process_count: int) -> int:
    if global_batch % process_count:
        raise ValueError(f"batch_size={global_batch} must be divisible by the process count ({process_count})")
    return global_batch // process_count


# ----------------------------------------------------------------------------- host image ops


def _to_uint8(image):
    tf = tf_module()
    return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)


def resize(image, size: int):
    """uint8 HxWx3 -> uint8 `size` x `size` x 3 (bilinear, antialiased); a no-op at that size."""
    tf = tf_module()
    if tuple(image.shape[:2]) == (size, size):
        return image
    return _to_uint8(tf.image.resize(image, (size, size), method="bilinear", antialias=True))


def center_view(image, size: int, crop_fraction: float):
    """The evaluation view of a variable-size image: shorter side to `size / crop_fraction`,
    then the central `size` x `size` crop (ImageNet's usual 0.875)."""
    tf = tf_module()
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    scale = (size / crop_fraction) / tf.reduce_min(shape)
    new_shape = tf.cast(tf.round(shape * scale), tf.int32)
    new_shape = tf.maximum(new_shape, size)
    resized = tf.image.resize(image, new_shape, method="bilinear", antialias=True)
    top, left = (new_shape[0] - size) // 2, (new_shape[1] - size) // 2
    return _to_uint8(resized[top : top + size, left : left + size])


def random_crops(image, size: int, spec: HostViews, seed, position):
    """`spec.views` Inception-style random crops of one image, each resized to `size`: uint8
    [views, size, size, 3]. View v of stream position p uses the stateless seed (seed, p*V + v)."""
    tf = tf_module()
    crops = []
    for view in range(spec.views):
        scale, ratio = spec.crop_of(view)
        begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
            tf.shape(image),
            bounding_boxes=tf.zeros([1, 0, 4]),
            seed=tf.stack([tf.cast(seed, tf.int64), position * spec.views + view]),
            area_range=scale,
            aspect_ratio_range=ratio,
            max_attempts=10,
            min_object_covered=0.0,  # the default 0.1 would floor every crop at 10% of the image
            use_image_if_no_bounding_boxes=True,
        )
        crop = tf.slice(image, begin, crop_size)
        crop = tf.image.resize(crop, (size, size), method="bilinear", antialias=True)
        crops.append(_to_uint8(crop))
    return tf.stack(crops)


def training_image(image, source: Source, spec: HostViews, seed: int, position):
    """What one training example becomes on the host: fixed-size images are only resized (the
    accelerator crops them); varying sizes get their random crops (or the evaluation view) here."""
    if source.image_shape is not None:
        return resize(image, source.image_size)
    if not spec.random_crop:
        return center_view(image, source.image_size, source.crop_fraction)
    return random_crops(image, source.image_size, spec, seed, position)


def evaluation_image(image, source: Source):
    if source.image_shape is not None:
        return resize(image, source.image_size)
    return center_view(image, source.image_size, source.crop_fraction)


# ------------------------------------------------------------------------------ index streams


@functools.lru_cache(maxsize=2)
def _epoch_order(num_examples: int, seed: int, epoch: int) -> np.ndarray:
    order = np.random.default_rng([seed, epoch]).permutation(num_examples)
    order.flags.writeable = False
    return order


def shuffled_indices(num_examples: int, global_batch: int, seed: int, step: int) -> np.ndarray:
    """Global batch `step` of an endless stream that visits every example once per epoch, in a
    new seeded order each epoch (batches run across epoch boundaries, nothing is dropped)."""
    positions = step * global_batch + np.arange(global_batch, dtype=np.int64)
    epochs, offsets = np.divmod(positions, num_examples)
    indices = np.empty(global_batch, np.int64)
    for epoch in np.unique(epochs):
        here = epochs == epoch
        indices[here] = _epoch_order(num_examples, seed, int(epoch))[offsets[here]]
    return indices


def examples_by_class(labels: np.ndarray, num_classes: int) -> list[np.ndarray]:
    order = np.argsort(labels, kind="stable")
    bounds = np.searchsorted(labels[order], np.arange(num_classes + 1))
    return [order[bounds[c] : bounds[c + 1]] for c in range(num_classes)]


def class_balanced_indices(
    by_class: list[np.ndarray], global_batch: int, samples_per_class: int, seed: int, step: int
) -> np.ndarray:
    """Global batch `step` of `global_batch / samples_per_class` distinct random classes with
    `samples_per_class` examples each (drawn without replacement when the class has enough)."""
    rng = np.random.default_rng([seed, step, 0xBA1A])
    present = np.flatnonzero([len(members) > 0 for members in by_class])
    classes = rng.choice(present, global_batch // samples_per_class, replace=False)
    picks = [rng.choice(by_class[c], samples_per_class, replace=len(by_class[c]) < samples_per_class) for c in classes]
    return np.concatenate(picks).astype(np.int64)


def check_class_balanced(source: Source, global_batch: int, samples_per_class: int) -> None:
    """One-line errors for a class-balanced setting this source cannot satisfy."""
    if not source.indexable:
        raise ValueError(
            f"data.samples_per_class={samples_per_class} needs an indexable source (digits, synthetic, folder:PATH, "
            f"or tfds through sources.held_in_memory, as the training jobs do); {source.name!r} is streamed"
        )
    if samples_per_class < 1 or global_batch % samples_per_class:
        raise ValueError(
            f"data.samples_per_class={samples_per_class} must be >= 1 and divide batch_size={global_batch}"
        )
    classes_needed = global_batch // samples_per_class
    present = int(np.count_nonzero(np.bincount(source.labels, minlength=source.num_classes)))
    if classes_needed > present:
        raise ValueError(
            f"batch_size={global_batch} with data.samples_per_class={samples_per_class} needs {classes_needed} "
            f"classes per batch; {source.name!r} has {present}"
        )


def _index_batches(source: Source, *, global_batch, seed, start_step, process_index, local, samples_per_class):
    """tf.data of this process's (indices, stream positions) for every global batch from `start_step`."""
    tf = tf_module()
    by_class = examples_by_class(source.labels, source.num_classes) if samples_per_class else None
    lo, hi = process_index * local, (process_index + 1) * local

    def generate():
        for step in range(start_step, _INT64_MAX):
            if samples_per_class:
                indices = class_balanced_indices(by_class, global_batch, samples_per_class, seed, step)
            else:
                indices = shuffled_indices(source.num_examples, global_batch, seed, step)
            positions = step * global_batch + np.arange(global_batch, dtype=np.int64)
            yield indices[lo:hi], positions[lo:hi]

    spec = tf.TensorSpec([local], tf.int64)
    return tf.data.Dataset.from_generator(generate, output_signature=(spec, spec))


def _stream_examples(source: Source, *, seed, start_step, process_index, process_count, local, shuffle_buffer):
    """tf.data of (stream position, record) of this process's tfds share, reshuffled per epoch."""
    tf = tf_module()
    records = source.records(process_index, process_count)
    share = int(records.cardinality())
    if share < 0:
        share = int(records.reduce(np.int64(0), lambda count, _: count + 1))
    if share < local:
        raise ValueError(
            f"batch_size={local * process_count} is larger than the training split "
            f"({source.num_examples} examples, {share} on process {process_index})"
        )
    start = start_step * local
    first_epoch, offset = divmod(start, share)
    buffer = max(1, min(shuffle_buffer, share))

    def epoch(index):
        return records.shuffle(buffer, seed=seed * 1_000_003 + index, reshuffle_each_iteration=False)

    stream = tf.data.Dataset.range(first_epoch, _INT64_MAX).flat_map(epoch).skip(offset).enumerate(start=start)
    global_batch = local * process_count

    def global_position(position, record):  # host-crop seeds differ between processes
        return (position // local) * global_batch + process_index * local + position % local, record

    return stream.map(global_position)


def train_batches(
    source: Source,
    *,
    global_batch: int,
    seed: int,
    start_step: int = 0,
    process_index: int = 0,
    process_count: int = 1,
    shuffle_buffer: int = 50_000,
    samples_per_class: int = 0,
    host_views: HostViews = HostViews(),
) -> Iterator[Batch]:
    """Endless batches of `global_batch / process_count` examples from `start_step` on:
    `label` int32 [b] and `image` uint8 [b, S, S, 3], or [b, views, S, S, 3] when the host
    cropped the views (images of varying size, `host_views.random_crop`)."""
    tf = tf_module()
    local = local_batch_size(global_batch, process_count)
    if samples_per_class:
        check_class_balanced(source, global_batch, samples_per_class)
    elif source.indexable and global_batch > source.num_examples:
        raise ValueError(
            f"batch_size={global_batch} is larger than the training split ({source.num_examples} examples)"
        )
    autotune = tf.data.AUTOTUNE
    if not source.indexable:
        ds = _stream_examples(
            source,
            seed=seed,
            start_step=start_step,
            process_index=process_index,
            process_count=process_count,
            local=local,
            shuffle_buffer=shuffle_buffer,
        )

        def prepare_record(position, record):
            image, label = source.decode(record)
            return {"image": training_image(image, source, host_views, seed, position), "label": label}

        ds = ds.map(prepare_record, num_parallel_calls=autotune).batch(local, drop_remainder=True)
        return ds.prefetch(autotune).as_numpy_iterator()
    ds = _index_batches(
        source,
        global_batch=global_batch,
        seed=seed,
        start_step=start_step,
        process_index=process_index,
        local=local,
        samples_per_class=samples_per_class,
    )
    labels = tf.constant(source.labels)
    if source.images is not None:  # in memory, already at the training size: gather whole batches
        images = source.images

        def gather(indices, positions):
            batch = tf.numpy_function(lambda i: images[i], [indices], tf.uint8)
            batch.set_shape((local,) + images.shape[1:])
            return {"image": batch, "label": tf.gather(labels, indices)}

        return ds.map(gather).prefetch(autotune).as_numpy_iterator()

    def prepare_index(index, position):
        image = training_image(source.load(index), source, host_views, seed, position)
        return {"image": image, "label": tf.gather(labels, index)}

    ds = ds.unbatch().map(prepare_index, num_parallel_calls=autotune).batch(local, drop_remainder=True)
    return ds.prefetch(autotune).as_numpy_iterator()


def eval_batches(
    source: Source,
    *,
    global_batch: int,
    process_index: int = 0,
    process_count: int = 1,
) -> Iterator[Batch]:
    """One pass over `source` in evaluation views (`image` uint8 [b, S, S, 3]), padded with
    `mask == 0` rows to whole global batches; `index` is each example's position in the source
    (-1 for padding), so results can be put back in order. Process p takes examples p, p+P, ...;
    for tfds every process reads the split's records and decodes only its own."""
    tf = tf_module()
    local = local_batch_size(global_batch, process_count)
    num_batches = math.ceil(source.num_examples / global_batch)
    size = source.image_size
    if source.indexable:
        mine = np.arange(process_index, source.num_examples, process_count, dtype=np.int64)
        padded = np.full(num_batches * local, -1, np.int64)
        padded[: mine.shape[0]] = mine
        if source.images is not None:
            return _in_memory_eval(source, padded, local)
        labels = tf.constant(source.labels)

        def prepare_index(index):
            real = tf.maximum(index, 0)
            image = evaluation_image(source.load(real), source)
            valid = tf.cast(index >= 0, tf.int32)
            label = tf.gather(labels, real) * valid
            return {"image": image, "label": label, "index": tf.cast(index, tf.int32), "mask": valid}

        ds = tf.data.Dataset.from_tensor_slices(padded).map(prepare_index, num_parallel_calls=tf.data.AUTOTUNE)
        return ds.batch(local).prefetch(tf.data.AUTOTUNE).as_numpy_iterator()

    def prepare_record(index, record):
        image, label = source.decode(record)
        return {
            "image": evaluation_image(image, source),
            "label": label,
            "index": tf.cast(index, tf.int32),
            "mask": tf.constant(1, tf.int32),
        }

    ds = source.records(0, 1).enumerate().filter(lambda index, _: index % process_count == process_index)
    ds = ds.map(prepare_record, num_parallel_calls=tf.data.AUTOTUNE)
    padding = tf.data.Dataset.from_tensors(
        {
            "image": tf.zeros((size, size, 3), tf.uint8),
            "label": tf.constant(0, tf.int32),
            "index": tf.constant(-1, tf.int32),
            "mask": tf.constant(0, tf.int32),
        }
    ).repeat()
    ds = ds.concatenate(padding).take(num_batches * local).batch(local)
    return ds.prefetch(tf.data.AUTOTUNE).as_numpy_iterator()


def _in_memory_eval(source: Source, padded: np.ndarray, local: int) -> Iterator[Batch]:
    real = np.maximum(padded, 0)
    valid = (padded >= 0).astype(np.int32)
    for start in range(0, padded.shape[0], local):
        rows = slice(start, start + local)
        images = source.images[real[rows]] * valid[rows, None, None, None].astype(np.uint8)
        yield {
            "image": images,
            "label": source.labels[real[rows]] * valid[rows],
            "index": padded[rows].astype(np.int32),
            "mask": valid[rows],
        }


def evaluation_images(source: Source, indices: np.ndarray) -> np.ndarray:
    """uint8 [len(indices), S, S, 3]: the evaluation views of examples `indices` (positions in
    the split) of any source; a streamed one is read until the last of them."""
    tf = tf_module()
    indices = np.asarray(indices, np.int64)
    if source.indexable:
        raw = [source.images[i] if source.images is not None else source.load(i) for i in indices.tolist()]
    else:
        wanted, found = set(indices.tolist()), {}
        for position, record in source.records(0, 1).take(int(indices.max(initial=-1)) + 1).enumerate():
            if int(position) in wanted:
                found[int(position)] = source.decode(record)[0]
        raw = [found[i] for i in indices.tolist()]
    return np.stack([np.asarray(evaluation_image(tf.convert_to_tensor(image), source)) for image in raw])


def sample_examples(source: Source, count: int, *, seed: int, host_views: HostViews) -> Batch:
    """`count` examples of `source` for looking at (evenly spread over an indexable source, so
    several classes show; the first ones of a streamed one): `original` (the evaluation view),
    `image` (what a training step receives for them) and `label`."""
    tf = tf_module()
    count = min(count, source.num_examples)
    if source.indexable:
        chosen = np.linspace(0, source.num_examples - 1, count).round().astype(np.int64)
        raw = [(source.images[i] if source.images is not None else source.load(i)) for i in chosen]
        labels = source.labels[chosen]
    else:
        decoded = [source.decode(record) for record in source.records(0, 1).take(count)]
        raw, labels = [image for image, _ in decoded], np.asarray([int(label) for _, label in decoded], np.int32)
    return {
        "original": np.stack([np.asarray(evaluation_image(tf.convert_to_tensor(im), source)) for im in raw]),
        "image": np.stack(
            [
                np.asarray(training_image(tf.convert_to_tensor(im), source, host_views, seed, tf.constant(i, tf.int64)))
                for i, im in enumerate(raw)
            ]
        ),
        "label": np.asarray(labels, np.int32),
    }
