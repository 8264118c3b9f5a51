"""`data.train_fraction` (the images every job sees) and `data.label_noise` (wrong training
labels): deterministic, class-balanced, and never touching the evaluation split."""

import re

import numpy as np
import pytest

from jax_supcon.config import base_config
from jax_supcon.data import sources
from jax_supcon.train import inputs


def digits_config(**data_changes):
    config = base_config()
    config.data.update(name="digits", image_size=8, **data_changes)
    config.batch_size = 16
    config.eval_batch_size = 16
    config.total_steps = 3
    return config


def test_train_fraction_keeps_a_fixed_class_balanced_part_independent_of_the_label_fraction():
    train = sources.load_source(digits_config().data, "train")
    part = sources.train_fraction_subset(train, 0.3)
    np.testing.assert_array_equal(np.bincount(part.labels), np.round(0.3 * np.bincount(train.labels)))
    again = sources.train_fraction_subset(sources.load_source(digits_config().data, "train"), 0.3)
    np.testing.assert_array_equal(again.images, part.images)
    labelled = sources.label_fraction_subset(train, 0.3)
    assert not np.array_equal(labelled.images, part.images)  # a separate draw, not the labelled part
    assert sources.train_fraction_subset(train, 1.0) is train


def test_label_noise_flips_a_fixed_share_of_every_class_to_another_class():
    labels = np.repeat(np.arange(10), 50).astype(np.int32)
    noisy = sources.noisy_labels(labels, 10, 0.4, seed=3)
    flipped = noisy != labels
    assert [int(flipped[labels == c].sum()) for c in range(10)] == [20] * 10  # class-balanced
    assert noisy.min() >= 0 and noisy.max() <= 9
    targets = np.bincount(noisy[flipped], minlength=10)
    assert targets.min() > 0  # wrong labels spread over the other classes
    np.testing.assert_array_equal(sources.noisy_labels(labels, 10, 0.4, seed=3), noisy)  # deterministic per seed
    assert not np.array_equal(sources.noisy_labels(labels, 10, 0.4, seed=4), noisy)
    np.testing.assert_array_equal(sources.noisy_labels(labels, 10, 0.0, seed=3), labels)


def test_training_data_carries_fraction_and_noise_and_the_test_split_is_untouched():
    clean = inputs.load_training_data(digits_config())
    half = inputs.load_training_data(digits_config(train_fraction=0.5))
    data = inputs.load_training_data(digits_config(train_fraction=0.5, label_noise=0.2))
    assert half.train.num_examples == pytest.approx(0.5 * clean.train.num_examples, abs=10)
    np.testing.assert_array_equal(data.train.images, half.train.images)
    wrong = data.train.labels != half.train.labels
    expected = np.round(0.2 * np.bincount(half.train.labels))
    np.testing.assert_array_equal(np.bincount(half.train.labels[wrong], minlength=10), expected)
    np.testing.assert_array_equal(data.test.labels, clean.test.labels)
    np.testing.assert_array_equal(data.test.images, clean.test.images)
    again = inputs.load_training_data(digits_config(train_fraction=0.5, label_noise=0.2))
    np.testing.assert_array_equal(again.train.labels, data.train.labels)  # stage 2 sees stage 1's labels


@pytest.mark.parametrize(
    ("key", "value", "allowed"),
    [
        ("label_noise", 1.0, "[0, 1)"),
        ("label_noise", -0.1, "[0, 1)"),
        ("train_fraction", 0.0, "(0, 1]"),
        ("train_fraction", 1.5, "(0, 1]"),
    ],
)
def test_a_rate_or_fraction_out_of_range_is_a_one_line_error(key, value, allowed):
    data = base_config().data
    data[key] = value
    with pytest.raises(ValueError, match=re.escape(f"data.{key}={value!r} must be in {allowed}")):
        sources.validate_data_config(data, batch_size=16)
