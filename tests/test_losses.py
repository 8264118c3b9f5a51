"""supcon_loss against an independent float64 reference written from eq. 2 of Khosla et al. 2020.

L_out = sum_i  -1/|P(i)| * sum_{p in P(i)} log( exp(z_i.z_p / tau) / sum_{a in A(i)} exp(z_i.z_a / tau) )
with A(i) every view in the batch except i itself and P(i) the views in A(i) with i's label. The
reference loops over anchors one at a time in numpy float64; gradients are checked against its
central finite differences.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jax_supcon.losses import ntxent_loss, supcon_loss


def reference_loss(features, labels=None, temperature=0.1, base_temperature=None, contrast_mode="all"):
    z = np.asarray(features, np.float64)
    batch, views, _ = z.shape
    ids = np.arange(batch) if labels is None else np.asarray(labels)
    samples = [(b, v) for v in range(views) for b in range(batch)]
    anchors = samples if contrast_mode == "all" else [(b, 0) for b in range(batch)]
    scale = 1.0 if base_temperature is None else temperature / base_temperature
    per_anchor = []
    for b, v in anchors:
        others = [(c, w) for (c, w) in samples if (c, w) != (b, v)]
        sims = np.array([z[b, v] @ z[c, w] / temperature for (c, w) in others])
        log_denominator = sims.max() + np.log(np.exp(sims - sims.max()).sum())
        positive_logs = [sims[k] - log_denominator for k, (c, _) in enumerate(others) if ids[c] == ids[b]]
        if positive_logs:  # anchors without a positive are left out of the mean
            per_anchor.append(-scale * np.mean(positive_logs))
    return float(np.mean(per_anchor)) if per_anchor else 0.0


def finite_difference_grad(fn, x, eps=1e-6):
    grad = np.zeros_like(x, np.float64)
    for index in np.ndindex(x.shape):
        plus, minus = x.copy(), x.copy()
        plus[index] += eps
        minus[index] -= eps
        grad[index] = (fn(plus) - fn(minus)) / (2 * eps)
    return grad


def random_features(seed, batch, views, dim):
    x = np.random.default_rng(seed).normal(size=(batch, views, dim))
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


CASES = [
    dict(labels=[0, 1, 0, 2, 1, 0], views=2, mode="all", temperature=0.1, base=None),
    dict(labels=[0, 1, 0, 2, 1, 0], views=2, mode="one", temperature=0.1, base=None),
    dict(labels=[0, 1, 0, 2, 1, 0], views=1, mode="all", temperature=0.5, base=None),  # class 2 has no positive
    dict(labels=[3, 3, 1, 1, 2, 0], views=3, mode="all", temperature=0.07, base=0.07),
    dict(labels=[0, 1, 0, 2, 1, 0], views=2, mode="all", temperature=0.2, base=0.07),
    dict(labels=None, views=2, mode="all", temperature=0.5, base=None),  # SimCLR
    dict(labels=None, views=3, mode="one", temperature=0.3, base=None),
]


@pytest.mark.parametrize(
    "case", CASES, ids=lambda c: f"{c['mode']}-v{c['views']}-{'simclr' if c['labels'] is None else 'sup'}"
)
def test_value_and_gradient_match_reference(case):
    features = random_features(0, 6, case["views"], 5)
    labels = None if case["labels"] is None else np.array(case["labels"])
    kwargs = dict(temperature=case["temperature"], base_temperature=case["base"], contrast_mode=case["mode"])

    def loss(x):
        return supcon_loss(x, None if labels is None else jnp.asarray(labels), **kwargs)

    value, grad = jax.jit(jax.value_and_grad(loss))(jnp.asarray(features, jnp.float32))
    expected = reference_loss(features, labels, **kwargs)
    np.testing.assert_allclose(float(value), expected, rtol=1e-5)
    expected_grad = finite_difference_grad(lambda x: reference_loss(x, labels, **kwargs), features)
    np.testing.assert_allclose(np.asarray(grad), expected_grad, rtol=1e-3, atol=2e-5)


def test_simclr_is_supcon_with_one_example_per_class():
    features = jnp.asarray(random_features(1, 8, 2, 16), jnp.float32)
    distinct = jnp.arange(8) * 7
    np.testing.assert_allclose(supcon_loss(features, distinct, temperature=0.5), ntxent_loss(features), rtol=1e-6)


def test_batch_without_any_positive_gives_zero_loss_and_zero_gradient():
    features = jnp.asarray(random_features(2, 5, 1, 4), jnp.float32)
    labels = jnp.arange(5)
    value, grad = jax.value_and_grad(lambda x: supcon_loss(x, labels))(features)
    assert float(value) == 0.0
    assert np.all(np.asarray(grad) == 0.0)


def test_small_temperature_is_finite_and_matches_reference():
    features = random_features(3, 8, 2, 8)
    labels = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    value, grad = jax.value_and_grad(lambda x: supcon_loss(x, jnp.asarray(labels), temperature=0.005))(
        jnp.asarray(features, jnp.float32)
    )
    assert np.all(np.isfinite(np.asarray(grad)))
    np.testing.assert_allclose(float(value), reference_loss(features, labels, temperature=0.005), rtol=1e-4)


def test_bfloat16_inputs_are_computed_in_float32():
    features = jnp.asarray(random_features(4, 8, 2, 32), jnp.bfloat16)
    labels = jnp.array([0, 1, 2, 3, 0, 1, 2, 3])
    value = supcon_loss(features, labels)
    assert value.dtype == jnp.float32
    rounded = np.asarray(features.astype(jnp.float32))  # the loss must see exactly these values
    np.testing.assert_allclose(float(value), reference_loss(rounded, np.asarray(labels)), rtol=1e-5)
    grad = jax.grad(lambda x: supcon_loss(x, labels))(features)
    assert grad.dtype == jnp.bfloat16 and np.all(np.isfinite(np.asarray(grad, np.float32)))


@pytest.mark.parametrize(
    "features, labels, kwargs, message",
    [
        (np.zeros((4, 8)), None, {}, r"\[batch, views, dim\]"),
        (np.zeros((4, 2, 8)), np.zeros(3, np.int32), {}, r"labels must be \[batch\]=\[4\]"),
        (np.zeros((4, 2, 8)), None, {"temperature": 0.0}, "temperature=0.0 must be > 0"),
        (np.zeros((4, 2, 8)), None, {"temperature": -1}, "temperature=-1 must be > 0"),
        (np.zeros((4, 2, 8)), None, {"contrast_mode": "any"}, "contrast_mode='any'; allowed"),
    ],
)
def test_bad_inputs_raise_a_clear_value_error(features, labels, kwargs, message):
    with pytest.raises(ValueError, match=message):
        jax.jit(lambda x: supcon_loss(x, labels, **kwargs))(jnp.asarray(features, jnp.float32))
