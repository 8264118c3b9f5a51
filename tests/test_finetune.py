"""`data.label_fraction` (a fixed class-balanced part of the training labels), the encoder's
learning-rate multiplier, and the `finetune` job from a stage-1 run or imported weights."""

import json
import os
import re

import jax
import numpy as np
import optax
import pytest
from conftest import read_metrics, tiny
from safetensors.numpy import save_file

from jax_supcon import optim, parallel
from jax_supcon.config import base_config
from jax_supcon.data import sources, subsets
from jax_supcon.jobs import finetune, pretrain
from jax_supcon.models import weights


def digits_train():
    data = base_config().data
    data.update(name="digits", image_size=8)
    return sources.load_source(data, "train")


def test_label_fraction_keeps_a_fixed_class_balanced_part_of_every_class():
    train = digits_train()
    part = subsets.label_fraction_subset(train, 0.1)
    counts, full = np.bincount(part.labels), np.bincount(train.labels)
    np.testing.assert_array_equal(counts, np.maximum(1, np.round(0.1 * full)))
    rows = {image.tobytes() for image in train.images}
    assert all(image.tobytes() in rows for image in part.images)
    again = subsets.label_fraction_subset(digits_train(), 0.1)
    np.testing.assert_array_equal(again.images, part.images)  # the same subset every time
    tiny_part = subsets.label_fraction_subset(train, 0.001)
    assert np.bincount(tiny_part.labels).tolist() == [1] * 10  # at least one example per class
    assert subsets.label_fraction_subset(train, 1.0) is train


def test_label_fraction_of_a_tfds_split_reads_it_into_memory(tmp_path):
    import tensorflow_datasets as tfds

    data = base_config().data
    data.update(name="cifar10", image_size=32, tfds_data_dir=str(tmp_path))
    with tfds.testing.mock_data(num_examples=50):
        source = sources.load_source(data, "train")
        part = subsets.label_fraction_subset(source, 0.5)
        full = np.bincount(source.read_labels(), minlength=10)
        assert part.indexable and np.bincount(part.labels, minlength=10).tolist() == [
            max(1, round(0.5 * n)) if n else 0 for n in full
        ]


@pytest.mark.parametrize("fraction", [0.0, 1.5, -0.1])
def test_a_label_fraction_outside_0_1_is_a_one_line_error(fraction):
    data = base_config().data
    data.label_fraction = fraction
    with pytest.raises(ValueError, match=re.escape(f"data.label_fraction={fraction!r} must be in (0, 1]")):
        sources.validate_data_config(data, batch_size=16)


def test_the_encoder_multiplier_scales_only_the_encoders_updates():
    params = {"encoder": {"w": np.ones(3, np.float32)}, "classifier": {"w": np.ones(2, np.float32)}}
    grads = jax.tree.map(lambda p: 0.5 * p, params)
    tx = optax.chain(optax.sgd(0.1, momentum=0.9), optim.scale_subtree("encoder", 0.1))
    state = tx.init(params)
    for _ in range(3):
        updates, state = tx.update(grads, state, params)
    plain = optax.sgd(0.1, momentum=0.9)
    plain_state = plain.init(params)
    for _ in range(3):
        expected, plain_state = plain.update(grads, plain_state, params)
    np.testing.assert_allclose(updates["encoder"]["w"], 0.1 * expected["encoder"]["w"], rtol=1e-6)
    np.testing.assert_allclose(updates["classifier"]["w"], expected["classifier"]["w"], rtol=1e-6)


def finetune_config(**changes):
    from configs import digits_finetune

    config = tiny(digits_finetune.get_config())
    config.data.label_fraction = 0.2
    config.update(changes)
    return config


def test_finetune_starts_from_the_stage_one_encoder_and_resumes_exactly(tmp_path):
    from configs import digits_supcon

    mesh = parallel.create_mesh(jax.devices()[:2])
    pretrain.train_and_evaluate(tiny(digits_supcon.get_config()), str(tmp_path / "pre"), mesh=mesh)
    config = finetune_config(pretrained_workdir=str(tmp_path / "pre"), total_steps=4, checkpoint_every_steps=2)
    config.optimizer.schedule = "constant"  # the same rates whatever total_steps: a 2-step run is a prefix
    straight = finetune.train_and_evaluate(config, str(tmp_path / "straight"), mesh=mesh)
    assert straight["job"] == "finetune" and 0 <= straight["test_top1"] <= 1 and straight["test_examples"] == 360
    with open(tmp_path / "straight" / "pretrained.json") as f:
        assert json.load(f)["step"] == 3  # pinned to the stage-1 checkpoint it started from

    first = config.copy_and_resolve_references()
    first.total_steps = 2
    finetune.train_and_evaluate(first, str(tmp_path / "resumed"), mesh=mesh)
    resumed = finetune.train_and_evaluate(config, str(tmp_path / "resumed"), mesh=mesh)
    losses = [r["loss"] for r in read_metrics(str(tmp_path / "straight")) if "loss" in r]
    again = [r["loss"] for r in read_metrics(str(tmp_path / "resumed")) if "loss" in r]
    np.testing.assert_allclose(again, losses, rtol=1e-5)
    assert resumed["test_top1"] == pytest.approx(straight["test_top1"])


def test_finetune_from_imported_weights(tmp_path):
    import jax.numpy as jnp

    from jax_supcon import models

    config = finetune_config()
    encoder = models.create_encoder(config.model)
    template = encoder.init(jax.random.PRNGKey(3), jnp.zeros((1, 8, 8, 3)), train=False)
    path = str(tmp_path / "enc.safetensors")
    save_file(weights.state_dict_from_encoder(template), path)
    config.model.init_from = path
    summary = finetune.train_and_evaluate(config, str(tmp_path / "run"), mesh=parallel.create_mesh(jax.devices()[:2]))
    assert summary["steps"] == 3 and np.isfinite(summary["final_loss"])
    assert not os.path.exists(tmp_path / "run" / "pretrained.json")


@pytest.mark.parametrize(
    "changes, message",
    [
        ({}, "finetune needs a starting encoder: --config.pretrained_workdir=DIR"),
        ({"pretrained_workdir": "/x", "model.init_from": __file__}, "finetune starts from one encoder"),
        ({"optimizer.encoder_lr_multiplier": -1.0}, "optimizer.encoder_lr_multiplier=-1.0 must be >= 0"),
    ],
)
def test_finetune_without_one_starting_encoder_is_refused_before_anything_is_written(tmp_path, changes, message):
    config = finetune_config()
    for key, value in changes.items():
        section, _, name = key.rpartition(".")
        (config[section] if section else config)[name] = value
    if "model.init_from" in changes:
        config.model.init_from = str(tmp_path / "w.safetensors")
        save_file({"x": np.zeros(1, np.float32)}, config.model.init_from)
    with pytest.raises(ValueError, match=re.escape(message)):
        finetune.train_and_evaluate(config, str(tmp_path / "run"), mesh=parallel.create_mesh(jax.devices()[:2]))
    assert not (tmp_path / "run").exists()
