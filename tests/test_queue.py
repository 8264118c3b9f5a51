"""The feature queue and the momentum encoder: FIFO order and masking, sharding, the momentum
update, and whole runs with them (exact resume, 1 vs 8 devices, each actually used). The loss's
handling of queue entries and keys is checked against the float64 reference in test_losses.py."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from conftest import compiled_pretraining, read_metrics

from jax_supcon import losses, parallel
from jax_supcon.jobs import pretrain
from jax_supcon.train import pretrained
from jax_supcon.train import queue as feature_queue
from jax_supcon.train.state import abstract_state


def loss_config(views="all", num_views=2):
    return ml_collections.ConfigDict(dict(num_views=num_views, queue_views=views, queue_size=0))


def test_the_queue_is_a_fifo_whose_unwritten_entries_are_masked():
    queue = feature_queue.init_queue(6, 3)
    per_step = losses.entries_per_step(loss_config("one"), 2)  # 2 examples, first view only
    assert per_step == 2
    written = []
    for step in range(5):
        mask = np.asarray(feature_queue.filled(queue, jnp.asarray(step), per_step))
        assert mask.tolist() == [i < min(2 * step, 6) for i in range(6)]  # entries of earlier steps only
        features = jnp.full((2, 2, 3), float(step)).at[:, 1].set(-1.0)  # view 2 must not be enqueued
        labels = jnp.asarray([10 * step, 10 * step + 1])
        queue = feature_queue.enqueue(queue, jnp.asarray(step), features, labels, "one")
        written.append(step)
    # Steps 0-2 filled rows 0-5; steps 3 and 4 overwrote the oldest (steps 0 and 1) in order.
    assert np.asarray(queue["features"])[:, 0].tolist() == [3, 3, 4, 4, 2, 2]
    assert np.asarray(queue["labels"]).tolist() == [30, 31, 40, 41, 20, 21]
    arguments = feature_queue.contrast_arguments(queue, jnp.asarray(5), per_step, with_labels=False)
    assert sorted(arguments) == ["contrast_features", "contrast_mask"] and bool(arguments["contrast_mask"].all())
    assert feature_queue.contrast_arguments({}, jnp.asarray(5), per_step, with_labels=True) == {}


def test_all_views_are_enqueued_example_by_example():
    queue = feature_queue.init_queue(8, 1)
    assert losses.entries_per_step(loss_config("all", num_views=2), 2) == 4
    features = jnp.asarray([[[1.0], [2.0]], [[3.0], [4.0]]])
    queue = feature_queue.enqueue(queue, jnp.asarray(1), features, jnp.asarray([7, 8]), "all")
    assert np.asarray(queue["features"])[:, 0].tolist() == [0, 0, 0, 0, 1, 2, 3, 4]
    assert np.asarray(queue["labels"]).tolist() == [0, 0, 0, 0, 7, 7, 8, 8]


def test_the_queue_is_sharded_over_the_devices_and_the_rest_replicated(pretrain_config):
    pretrain_config.loss.queue_size = 64
    pretrain_config.data.num_classes = 10
    _, _, _, init = pretrained.build(pretrain_config, total_steps=3, warmup_steps=0)
    target = abstract_state(init, parallel.create_mesh())
    assert target.queue["features"].shape == (64, 8) and target.queue["labels"].shape == (64,)
    assert target.queue["features"].sharding.spec == parallel.data_sharding(parallel.create_mesh()).spec
    assert all(leaf.sharding.is_fully_replicated for leaf in jax.tree.leaves(target.params))
    assert not target.queue["features"].sharding.is_fully_replicated


def test_the_momentum_encoder_follows_the_encoder_at_its_rate(pretrain_config):
    from jax_supcon.train import inputs

    pretrain_config.model.momentum = 0.75
    mesh = parallel.create_mesh()
    config, train, state, step = compiled_pretraining(pretrain_config, mesh)
    batches = inputs.training_batches(train, config, state, mesh, views=2)

    def kernel(variables):
        return np.asarray(jax.tree.leaves(variables["params"]["head"])[-1])

    first = kernel(state.variables())
    np.testing.assert_array_equal(kernel(state.momentum), first)  # starts as a copy
    state, _ = step(state, next(batches))
    second = kernel(state.variables())
    assert not np.allclose(second, first)
    np.testing.assert_allclose(kernel(state.momentum), first, atol=1e-7)  # 0.75 first + 0.25 first
    state, _ = step(state, next(batches))
    np.testing.assert_allclose(kernel(state.momentum), 0.75 * first + 0.25 * second, atol=1e-6)


def test_runs_with_a_queue_and_a_momentum_encoder_resume_exactly_and_match_on_one_and_eight_devices(
    pretrain_config, tmp_path
):
    pretrain_config.optimizer.schedule = "constant"
    pretrain_config.total_steps = 4
    eight, one = parallel.create_mesh(), parallel.create_mesh(jax.devices()[:1])

    def run(name, mesh=eight, **loss_and_model):
        pretrain_config.loss.queue_size = loss_and_model.get("queue_size", 0)
        pretrain_config.model.momentum = loss_and_model.get("momentum", 0.0)
        pretrain.train_and_evaluate(pretrain_config, str(tmp_path / name), mesh=mesh)

    both = dict(queue_size=64, momentum=0.9)  # two steps of 16 x 2 views fill the queue
    run("plain")
    run("queue", queue_size=64)
    run("both", **both)
    run("both_one_device", mesh=one, **both)
    pretrain_config.total_steps = 2  # checkpoint 2: a half-filled queue and a lagging key encoder
    run("restarted", **both)
    pretrain_config.total_steps = 4
    run("restarted", **both)
    runs = {name.name: read_metrics(name) for name in tmp_path.iterdir()}
    losses = {name: [m["loss"] for m in records] for name, records in runs.items()}
    np.testing.assert_allclose(losses["restarted"], losses["both"], rtol=1e-5)
    np.testing.assert_allclose(losses["both_one_device"], losses["both"], rtol=2e-5)
    # Step 1: the queue is empty (every entry masked) and the key encoder is still the encoder, so
    # the keys equal the projections: the same loss, but no gradient flows through the keys.
    assert losses["queue"][0] == losses["plain"][0]
    np.testing.assert_allclose(losses["both"][0], losses["plain"][0], rtol=1e-6)
    assert abs(runs["both"][0]["grad_norm"] - runs["plain"][0]["grad_norm"]) > 1e-3
    # Later the queue takes part, and the keys lag behind the encoder.
    for a, b in (("queue", "plain"), ("both", "queue")):
        assert all(abs(x - y) > 1e-4 for x, y in zip(losses[a][1:], losses[b][1:], strict=True)), (a, b)


def test_runs_recorded_before_the_queue_and_momentum_existed_resume(pretrain_config, tmp_path):
    """A checkpoint without the `queue` and `momentum` fields and a config.json without their keys,
    as the previous version wrote them: a run with both off restores and resumes them."""
    import json

    import flax

    from jax_supcon.checkpoint import Checkpointer
    from jax_supcon.train import workdir as run_dir
    from jax_supcon.train.state import init_state

    @flax.struct.dataclass
    class PreviousTrainState:  # TrainState as it was, field for field
        step: jax.Array
        params: dict
        batch_stats: dict
        opt_state: object
        rng: jax.Array
        ema: dict = flax.struct.field(default_factory=dict)

    mesh = parallel.create_mesh()
    pretrain_config.data.num_classes = 10
    _, _, _, init = pretrained.build(pretrain_config, total_steps=3, warmup_steps=0)
    target = abstract_state(init, mesh)
    state = init_state(init, target)
    fields = {name: getattr(state, name) for name in ("step", "params", "batch_stats", "opt_state", "rng", "ema")}
    checkpointer = Checkpointer(str(tmp_path))
    checkpointer.save(1, PreviousTrainState(**fields))
    checkpointer.wait()
    restored = checkpointer.restore(target, step=1)
    assert restored.queue == {} and restored.momentum == {}
    np.testing.assert_array_equal(jax.tree.leaves(restored.params)[0], jax.tree.leaves(state.params)[0])

    recorded = json.loads(json.dumps(run_dir._as_json(pretrain_config)))
    del recorded["model"]["momentum"], recorded["loss"]["queue_size"], recorded["loss"]["queue_views"]
    (tmp_path / run_dir.CONFIG_FILE).write_text(json.dumps(recorded))
    run_dir.check_resumable(str(tmp_path), pretrain_config)  # no refusal
    pretrain_config.loss.queue_size = 64
    with pytest.raises(ValueError, match=r"different loss.queue_size \(0 vs 64\)"):
        run_dir.check_resumable(str(tmp_path), pretrain_config)


def test_stage_two_restores_the_encoder_not_the_momentum_copy_of_a_run_with_both(pretrain_config, tmp_path):
    pretrain_config.loss.queue_size = 64
    pretrain_config.model.momentum = 0.5
    mesh = parallel.create_mesh()
    workdir = str(tmp_path / "pre")
    pretrain.train_and_evaluate(pretrain_config, workdir, mesh=mesh)
    _, _, state, step = pretrained.restore_pretrained(workdir, mesh)
    assert step == 3 and state.queue["features"].shape == (64, 8) and state.momentum
    _, encoder = pretrained.restore_encoder(workdir, mesh)
    trained, lagging = (jax.tree.leaves(v["params"]["encoder"])[0] for v in (state.variables(), state.momentum))
    np.testing.assert_array_equal(jax.tree.leaves(encoder["params"])[0], trained)
    assert not np.allclose(trained, lagging)


def test_a_bfloat16_model_trains_with_a_queue_and_a_momentum_encoder(pretrain_config, tmp_path):
    pretrain_config.model.dtype = "bfloat16"
    pretrain_config.loss.queue_size = 32
    pretrain_config.loss.queue_views = "one"
    pretrain_config.model.momentum = 0.99
    pretrain.train_and_evaluate(pretrain_config, str(tmp_path), mesh=parallel.create_mesh())
    records = read_metrics(tmp_path)
    assert len(records) == 3 and all(np.isfinite(m["loss"]) and np.isfinite(m["grad_norm"]) for m in records)
