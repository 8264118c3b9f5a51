"""Optimizers and schedules against their definitions: LARS's masks, warmup + cosine / step /
constant, the batch scaling rule, gradient clipping, and the EMA of the train state."""

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from jax_supcon import optim
from jax_supcon.config import base_config, validate_config
from jax_supcon.train import state as common


def opt_config(**overrides) -> ml_collections.ConfigDict:
    opt = base_config().optimizer
    opt.update(overrides)
    return opt


def params():
    """A conv kernel, a dense kernel and bias, and BatchNorm scale/bias: rank > 1 vs rank 1."""
    rng = np.random.default_rng(0)
    return {
        "conv": {"kernel": jnp.asarray(rng.normal(size=(3, 3, 2, 4)), jnp.float32)},
        "dense": {"kernel": jnp.asarray(rng.normal(size=(4, 3)), jnp.float32), "bias": jnp.ones(3)},
        "bn": {"scale": jnp.full(4, 2.0), "bias": jnp.full(4, 0.5)},
    }


def test_lars_scales_kernels_by_the_trust_ratio_and_leaves_biases_and_batchnorm_alone():
    eta, lr, wd = 0.001, 0.1, 1e-4
    tx, _ = optim.create_optimizer(
        opt_config(
            name="lars",
            learning_rate=lr,
            weight_decay=wd,
            lars_trust_coefficient=eta,
            schedule="constant",
            momentum=0.0,
        ),
        total_steps=10,
        warmup_steps=0,
    )
    p = params()
    grads = jax.tree.map(lambda x: jnp.full_like(x, 0.3), p)
    updates, _ = tx.update(grads, tx.init(p), p)
    for path, update in jax.tree_util.tree_leaves_with_path(updates):
        name = jax.tree_util.keystr(path)
        w = p[path[0].key][path[1].key]
        g = grads[path[0].key][path[1].key]
        if w.ndim > 1:  # You et al.: (g + wd w) scaled by eta ||w|| / ||g + wd w||
            d = g + wd * w
            expected = -lr * eta * jnp.linalg.norm(w) / jnp.linalg.norm(d) * d
        else:  # biases and BatchNorm: plain SGD, no decay, no trust ratio
            expected = -lr * g
        np.testing.assert_allclose(update, expected, rtol=1e-5, err_msg=name)


@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_weight_decay_skips_biases_and_batchnorm(name):
    tx, _ = optim.create_optimizer(
        opt_config(name=name, learning_rate=0.1, weight_decay=0.5, schedule="constant", momentum=0.0),
        total_steps=10,
        warmup_steps=0,
    )
    p = params()
    zero_grads = jax.tree.map(jnp.zeros_like, p)
    updates, _ = tx.update(zero_grads, tx.init(p), p)
    for path, update in jax.tree_util.tree_leaves_with_path(updates):
        w = p[path[0].key][path[1].key]
        if w.ndim > 1:
            np.testing.assert_allclose(update, -0.1 * 0.5 * w, rtol=1e-5)  # decoupled decay, lr x wd x w
        else:
            assert not np.any(np.asarray(update)), jax.tree_util.keystr(path)


def schedule_values(opt, total, warmup, steps, batch=256):
    schedule = optim.create_schedule(opt, total, warmup, batch)
    return np.array([float(schedule(s)) for s in steps])


def test_warmup_then_cosine_matches_the_formula():
    total, warmup, peak = 100, 10, 0.4
    steps = np.arange(total + 1)
    expected = np.where(
        steps < warmup,
        peak * steps / warmup,
        0.5 * peak * (1 + np.cos(np.pi * (steps - warmup) / (total - warmup))),
    )
    np.testing.assert_allclose(
        schedule_values(opt_config(learning_rate=peak), total, warmup, steps), expected, atol=1e-6
    )


def test_step_schedule_decays_by_the_rate_at_each_boundary():
    opt = opt_config(learning_rate=0.5, schedule="step", decay_boundaries=(0.5, 0.75), decay_rate=0.1)
    values = schedule_values(opt, 100, 10, [0, 5, 10, 49, 50, 74, 75, 99])
    np.testing.assert_allclose(values, [0, 0.25, 0.5, 0.5, 0.05, 0.05, 0.005, 0.005], rtol=1e-5, atol=1e-9)


def test_step_decays_on_one_step_multiply_and_those_inside_the_warmup_apply_when_it_ends():
    # 8 steps: boundaries 0.7, 0.8, 0.9 round to steps 6, 6 and 7; all three decays must apply.
    opt = opt_config(learning_rate=1.0, schedule="step", decay_boundaries=(0.7, 0.8, 0.9), decay_rate=0.1)
    np.testing.assert_allclose(schedule_values(opt, 8, 0, [5, 6, 7]), [1.0, 0.01, 0.001], rtol=1e-6)
    # 100 steps, 80 of warmup: the boundaries at 70 and 80 apply when the warmup ends, 90 at 90.
    values = schedule_values(opt, 100, 80, [40, 79, 80, 85, 89, 90, 99])
    np.testing.assert_allclose(values, [0.5, 79 / 80, 0.01, 0.01, 0.01, 0.001, 0.001], rtol=1e-6)


def test_constant_schedule_and_batch_scaling():
    opt = opt_config(learning_rate=0.3, schedule="constant", lr_scaling="linear")
    np.testing.assert_allclose(schedule_values(opt, 50, 0, [0, 49], batch=1024), [1.2, 1.2], rtol=1e-6)
    opt = opt_config(learning_rate=0.075, schedule="constant", lr_scaling="sqrt")
    assert math.isclose(schedule_values(opt, 50, 0, [7], batch=4096)[0], 4.8, rel_tol=1e-6)


def test_gradient_clipping_bounds_the_global_norm_before_the_update():
    opt = opt_config(name="sgd", learning_rate=1.0, weight_decay=0.0, momentum=0.0, schedule="constant")
    opt.clip_grad_norm = 1.0
    tx, _ = optim.create_optimizer(opt, total_steps=10, warmup_steps=0)
    p = params()
    grads = jax.tree.map(lambda x: jnp.full_like(x, 3.0), p)
    updates, _ = tx.update(grads, tx.init(p), p)
    norm = float(jnp.sqrt(sum(jnp.sum(g**2) for g in jax.tree.leaves(grads))))
    for update, grad in zip(jax.tree.leaves(updates), jax.tree.leaves(grads), strict=True):
        np.testing.assert_allclose(update, -grad / norm, rtol=1e-5)  # g x (1 / ||g||), lr 1


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("schedule", "poly", "optimizer.schedule='poly'; allowed: ('cosine', 'step', 'constant')"),
        ("decay_boundaries", (0.8, 0.5), "optimizer.decay_boundaries=(0.8, 0.5) must be increasing fractions"),
        ("decay_boundaries", (0.5, 1.0), "must be increasing fractions of the run in (0, 1)"),
        ("decay_rate", 2.0, "optimizer.decay_rate=2.0 must be in [0, 1]"),
        ("clip_grad_norm", 0.0, "optimizer.clip_grad_norm=0.0 must be > 0"),
        ("learning_rate", -0.1, "optimizer.learning_rate=-0.1 must be >= 0"),
        ("momentum", 1.0, "optimizer.momentum=1.0 in [0, 1)"),
        ("weight_decay", -1e-4, "optimizer.weight_decay=-0.0001 must be >= 0"),
    ],
)
def test_bad_optimizer_settings_are_one_line_errors(key, value, message):
    config = base_config()
    config.optimizer[key] = value
    with pytest.raises(ValueError) as error:
        validate_config(config)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_a_zero_learning_rate_is_allowed():
    config = base_config()
    config.optimizer.learning_rate = 0.0
    validate_config(config)


def test_ema_follows_the_definition_with_its_warmup():
    """ema_t = r_t ema_{t-1} + (1 - r_t) w_t with r_t = min(decay, (1 + t) / (10 + t)), t the step
    before the update; checked over 30 updates of a toy state against a loop written from it."""
    decay = 0.9
    tx = optax.sgd(0.1)
    init = common.init_state_fn(lambda rng: {"params": {"w": jnp.arange(3.0)}}, tx, seed=0, ema=True)
    state = init()
    reference = np.arange(3.0)
    weights = np.arange(3.0)
    for t in range(30):
        grads = {"w": jnp.full(3, float(t % 4) - 1.5)}
        state = common.apply_gradients(state, grads, tx, ema_decay=decay)
        weights = weights - 0.1 * (t % 4 - 1.5)
        rate = min(decay, (1 + t) / (10 + t))
        reference = rate * reference + (1 - rate) * weights
        np.testing.assert_allclose(state.params["w"], weights, rtol=1e-6)
        np.testing.assert_allclose(state.ema["params"]["w"], reference, rtol=1e-5)
    assert state.variables(use_ema=True)["params"]["w"] is state.ema["params"]["w"]


def test_a_state_without_ema_says_so_when_asked_for_it():
    state = common.init_state_fn(lambda rng: {"params": {"w": jnp.zeros(2)}}, optax.sgd(0.1), seed=0)()
    assert state.ema == {}
    with pytest.raises(ValueError, match="set ema_decay > 0"):
        state.variables(use_ema=True)
