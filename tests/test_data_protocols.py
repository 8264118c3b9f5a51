"""`data.train_fraction` (the images every job sees), `data.label_noise` (wrong training labels)
and `data.validation_fraction` (validation without the test split): deterministic,
class-balanced, and never touching the evaluation split."""

import dataclasses
import json
import re

import jax
import numpy as np
import pytest
from conftest import tiny

from jax_supcon import parallel
from jax_supcon.config import base_config
from jax_supcon.data import sources, subsets
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
    part = subsets.train_fraction_subset(train, 0.3)
    np.testing.assert_array_equal(np.bincount(part.labels), np.round(0.3 * np.bincount(train.labels)))
    again = subsets.train_fraction_subset(sources.load_source(digits_config().data, "train"), 0.3)
    np.testing.assert_array_equal(again.images, part.images)
    labelled = subsets.label_fraction_subset(train, 0.3)
    assert not np.array_equal(labelled.images, part.images)  # a separate draw, not the labelled part
    assert subsets.train_fraction_subset(train, 1.0) is train


def test_label_noise_flips_a_fixed_share_of_every_class_to_another_class():
    labels = np.repeat(np.arange(10), 50).astype(np.int32)
    noisy = subsets.noisy_labels(labels, 10, 0.4, seed=3)
    flipped = noisy != labels
    assert [int(flipped[labels == c].sum()) for c in range(10)] == [20] * 10  # class-balanced
    assert noisy.min() >= 0 and noisy.max() <= 9
    targets = np.bincount(noisy[flipped], minlength=10)
    assert targets.min() > 0  # wrong labels spread over the other classes
    np.testing.assert_array_equal(subsets.noisy_labels(labels, 10, 0.4, seed=3), noisy)  # deterministic per seed
    assert not np.array_equal(subsets.noisy_labels(labels, 10, 0.4, seed=4), noisy)
    np.testing.assert_array_equal(subsets.noisy_labels(labels, 10, 0.0, seed=3), labels)


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
        ("validation_fraction", 1.0, "[0, 1)"),
        ("validation_fraction", -0.1, "[0, 1)"),
    ],
)
def test_a_rate_or_fraction_out_of_range_is_a_one_line_error(key, value, allowed):
    data = base_config().data
    data[key] = value
    with pytest.raises(ValueError, match=re.escape(f"data.{key}={value!r} must be in {allowed}")):
        sources.validate_data_config(data, batch_size=16)


def image_keys(source) -> set[bytes]:
    return {image.tobytes() for image in source.images}


def test_the_validation_part_is_stratified_fixed_disjoint_and_leaves_the_test_split_alone():
    clean = inputs.load_training_data(digits_config())
    data = inputs.load_training_data(digits_config(validation_fraction=0.2))
    counts = np.bincount(clean.train.labels)
    np.testing.assert_array_equal(np.bincount(data.validation.labels), np.round(0.2 * counts))  # stratified
    np.testing.assert_array_equal(np.bincount(data.train.labels), counts - np.round(0.2 * counts))
    assert not image_keys(data.validation) & image_keys(data.train)  # disjoint from training
    assert image_keys(data.validation) | image_keys(data.train) == image_keys(clean.train)
    assert not image_keys(data.validation) & image_keys(data.test)  # and from the test split
    np.testing.assert_array_equal(data.test.images, clean.test.images)
    assert clean.validation is clean.test and clean.validation_is_test and not data.validation_is_test
    # The same images whatever the seed, the training subset or the label noise; validation labels stay clean.
    other = digits_config(validation_fraction=0.2, train_fraction=0.5, label_noise=0.3)
    other.seed = 7
    again = inputs.load_training_data(other)
    np.testing.assert_array_equal(again.validation.images, data.validation.images)
    np.testing.assert_array_equal(again.validation.labels, data.validation.labels)
    assert not image_keys(again.train) - image_keys(data.train)


def test_a_class_of_one_example_stays_in_training_and_no_validation_image_is_an_error():
    labels = np.array([0, 0, 0, 0, 1, 2, 2], np.int32)
    held = subsets.validation_positions(labels, 0.5)
    assert list(labels[held]) == [0, 0, 2]  # class 1's only example is not taken from training
    single = sources.in_memory_source("tiny", "train", np.zeros((3, 4, 4, 3), np.uint8), np.arange(3), 3, 4)
    with pytest.raises(ValueError, match=r"data.validation_fraction=0.5 leaves no validation image"):
        subsets.split_off_validation(single, 0.5)


def test_a_streamed_tfds_split_is_sliced_by_name_instead():
    streamed = sources.Source("cifar10", "train", 10, 10, 8, None, records=lambda index, count: None)
    with pytest.raises(ValueError, match=r"data.validation_fraction=0.1 needs an indexable .*train\[:90%\]"):
        subsets.split_off_validation(streamed, 0.1)
    assert subsets.split_off_validation(streamed, 0.0) == (streamed, None)


def test_open_set_validation_queries_come_from_the_training_split_never_the_test_split():
    data = inputs.load_training_data(digits_config(validation_fraction=0.2, train_classes="0-4"))
    assert set(np.unique(data.validation_held_out.labels)) == set(range(5, 10))  # their own ids
    assert set(np.unique(data.validation.labels)) == set(range(5))  # relabelled training classes
    clean_train = sources.load_source(digits_config().data, "train")
    assert image_keys(data.validation_held_out) <= image_keys(clean_train)
    assert not image_keys(data.validation_held_out) & image_keys(data.held_out)
    assert set(np.unique(data.train.labels)) == set(range(5))


def test_open_set_validation_needs_held_out_images_in_the_training_split():
    config = digits_config(validation_fraction=0.2, train_classes="0-4")
    train = sources.load_source(config.data, "train")
    seen_only = subsets.subset(train, np.flatnonzero(train.labels < 5), train.labels[train.labels < 5])
    seen_only = dataclasses.replace(seen_only, num_classes=10)  # a CUB-style training split: half the classes
    split = inputs.classes.class_split("0-4", 10)
    carved = subsets.split_off_validation(seen_only, 0.2)[1]
    with pytest.raises(ValueError, match=r"validates on their images in the training split 'train', which has none"):
        inputs._held_out_validation(carved, split, config.data)


def test_runs_validate_on_the_carved_part_read_the_test_split_once_and_resume(tmp_path):
    """Stage 1 and stage 2 with a validation part: validation figures from it, test figures at the
    end under their own names, a resumed run keeps its recorded part, stage 2 must use stage 1's."""
    from configs import digits_linear, digits_supcon
    from jax_supcon.jobs import linear_eval, pretrain

    mesh = parallel.create_mesh(jax.devices()[:2])
    config = tiny(digits_supcon.get_config())
    config.data.validation_fraction = 0.1
    config.eval_every_steps = 2
    config.total_steps = 2
    pretrain.train_and_evaluate(config, str(tmp_path / "pre"), mesh=mesh)
    config.total_steps = 4  # resumed and trained longer: validation stays on the same images
    summary = pretrain.train_and_evaluate(config, str(tmp_path / "pre"), mesh=mesh)
    assert summary["steps"] == 4 and summary["validation_split"] == "train (validation_fraction 0.1)"
    assert summary["validation_examples"] == 142
    assert 0 <= summary["val/encoder/knn_top1"] <= 1 and 0 <= summary["test/encoder/knn_top1"] <= 1
    with open(tmp_path / "pre" / "metrics.jsonl") as f:
        records = [json.loads(line) for line in f]
    tested = [r["step"] for r in records if "test/encoder/knn_top1" in r]
    assert tested == [2, 4]  # the test split, read once at the end of each finished length
    assert [r["step"] for r in records if "val/encoder/knn_top1" in r] == [2, 4]
    config.data.validation_fraction = 0.2
    with pytest.raises(ValueError, match="holds a run with a different data"):
        pretrain.train_and_evaluate(config, str(tmp_path / "pre"), mesh=mesh)

    linear = tiny(digits_linear.get_config())
    linear.pretrained_workdir = str(tmp_path / "pre")
    with pytest.raises(ValueError, match=r"data.validation_fraction=0.0 differs from the pretrained run's 0.1"):
        linear_eval.train_and_evaluate(linear, str(tmp_path / "lin0"), mesh=mesh)
    assert not (tmp_path / "lin0").exists()
    linear.data.validation_fraction = 0.1
    linear.evaluate_test = False  # tuning: the test split is not read
    tuned = linear_eval.train_and_evaluate(linear, str(tmp_path / "lin"), mesh=mesh)
    assert "val_top1" in tuned and not any(key.startswith("test_") for key in tuned)
    linear.evaluate_test = True  # the chosen run, started again: trains no more, reads the test split once
    summary = linear_eval.train_and_evaluate(linear, str(tmp_path / "lin"), mesh=mesh)
    assert {"val_top1", "val_top5", "test_top1", "test_top5"} <= set(summary)
    assert summary["test_examples"] == 360 and summary["validation_examples"] == 142
    assert summary["val_top1"] == tuned["val_top1"] and summary["train_seconds"] == tuned["train_seconds"]
    config.data.validation_fraction = 0.1
    config.evaluate_test = False
    untested = pretrain.train_and_evaluate(config, str(tmp_path / "pre_untested"), mesh=mesh)
    assert "val/encoder/knn_top1" in untested and not any(key.startswith("test/") for key in untested)
