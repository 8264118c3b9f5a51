"""The subset rules of a training split, each a pure function of the labels and a seed stream:
class-balanced fractions of the images (`data.train_fraction`) and of the labels
(`data.label_fraction`), the fixed validation part (`data.validation_fraction`), and label noise
drawn per seed (`data.label_noise`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from jax_supcon.data.sources import Source, held_in_memory, tf_module


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
        tf = tf_module()
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
