"""Mesh, host -> global arrays, the same training on 1 device and on 8 fake devices (the
two-process run is in test_launch.py)."""

import jax
import numpy as np
import pytest
from conftest import compiled_pretraining, read_metrics

from jax_supcon import parallel
from jax_supcon.jobs import pretrain


def test_eight_fake_devices_are_visible():
    assert jax.device_count() == 8


def test_batch_not_divisible_by_device_count_is_a_clear_error():
    with pytest.raises(ValueError, match=r"batch_size=12 must be a positive multiple of the device count \(8\)"):
        parallel.check_batch_size(12, parallel.create_mesh())
    parallel.check_batch_size(12, parallel.create_mesh(jax.devices()[:4]))


def test_host_batch_becomes_a_global_array_sharded_over_data():
    mesh = parallel.create_mesh()
    batch = parallel.to_global({"image": np.arange(16 * 3).reshape(16, 3), "label": np.arange(16)}, mesh)
    assert batch["image"].shape == (16, 3) and len(batch["image"].addressable_shards) == 8
    assert batch["image"].addressable_shards[1].data.shape == (2, 3)
    np.testing.assert_array_equal(batch["label"], np.arange(16))


@pytest.mark.parametrize(
    "loss",
    [
        dict(name="supcon"),
        # The sharded loss of every option and loss is checked against one device in test_losses
        # (values and gradients), and the whole step in float64 below; these whole-run variants add
        # little and run with -m slow.
        pytest.param(dict(name="simclr"), marks=pytest.mark.slow),
        pytest.param(
            dict(name="supcon", chunk_size=8, denominator="one_positive", loss_type="in"), marks=pytest.mark.slow
        ),
        pytest.param(dict(name="triplet", margin=0.5), marks=pytest.mark.slow),
    ],
    ids=["supcon", "simclr", "supcon-chunked-options", "triplet"],
)
def test_one_and_eight_devices_give_the_same_losses(pretrain_config, tmp_path, loss):
    pretrain_config.loss.update(loss)
    one = pretrain.train_and_evaluate(
        pretrain_config, str(tmp_path / "one"), mesh=parallel.create_mesh(jax.devices()[:1])
    )
    eight = pretrain.train_and_evaluate(pretrain_config, str(tmp_path / "eight"), mesh=parallel.create_mesh())
    assert (one["devices"], eight["devices"]) == (1, 8)
    losses_one = [m["loss"] for m in read_metrics(tmp_path / "one")]
    losses_eight = [m["loss"] for m in read_metrics(tmp_path / "eight")]
    assert len(losses_one) == 3
    np.testing.assert_allclose(losses_eight, losses_one, rtol=2e-5)


def _step_metrics(config, mesh, steps):
    """(loss, grad_norm) of the first `steps` pretraining steps on `mesh`, no workdir."""
    import itertools

    from jax_supcon.train import inputs

    config, train, state, step = compiled_pretraining(config, mesh)
    out = []
    for batch in itertools.islice(inputs.training_batches(train, config, state, mesh, views=2), steps):
        state, metrics = step(state, batch)
        out.append((float(metrics["loss"]), float(metrics["grad_norm"])))
    return np.array(out)


def test_lars_class_balanced_chunked_step_is_the_same_on_one_and_eight_devices(pretrain_config, monkeypatch):
    """The step with LARS, class-balanced batches (each of the 8 devices then holds one class)
    and a chunked loss computes the same function on 1 and 8 devices. Compared in float64
    activations: in float32, reductions split over devices round differently (about 1e-6 in the
    activations), and once a ReLU input lies that close to 0 its unit's gradient switches on one
    side only (in a digits ResNet-18 run: grad_norm 6e-4 apart at step 6, losses equal). In
    float64 nothing lies that close, so any difference left would be a sharding error."""
    import jax.numpy as jnp

    from jax_supcon import models

    monkeypatch.setitem(models.DTYPES, "float64", jnp.float64)
    pretrain_config.model.dtype = "float64"
    pretrain_config.augment.recipe = "none"  # not what is compared; saves compiling it twice
    pretrain_config.batch_size = 32
    pretrain_config.optimizer.name = "lars"
    pretrain_config.data.samples_per_class = 4
    pretrain_config.loss.chunk_size = 16
    with jax.enable_x64(True):
        one = _step_metrics(pretrain_config, parallel.create_mesh(jax.devices()[:1]), steps=6)
        eight = _step_metrics(pretrain_config, parallel.create_mesh(), steps=6)
    assert np.all(np.isfinite(one)) and one[0, 1] > 0
    np.testing.assert_allclose(eight, one, rtol=1e-5)
