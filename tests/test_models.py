"""Parameter counts against torchvision's published numbers, shapes, and config errors."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jax_supcon import models
from jax_supcon.config import base_config


def count_params(variables) -> int:
    return sum(leaf.size for leaf in jax.tree.leaves(variables["params"]))


class WithLinear(nn.Module):
    encoder: nn.Module
    num_classes: int = 1000

    @nn.compact
    def __call__(self, x):
        return models.LinearClassifier(self.num_classes)(self.encoder(x, train=False))


@pytest.mark.parametrize(
    "name, expected", [("resnet50", 25_557_032), ("resnet18", 11_689_512), ("resnet101", 44_549_160)]
)
def test_parameter_counts_match_torchvision(name, expected):
    model = WithLinear(models.create_resnet(name, stem="imagenet"))
    variables = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 224, 224, 3)))
    assert count_params(variables) == expected


def model_config(**overrides) -> ml_collections.ConfigDict:
    config = base_config().model
    config.update(dict(name="resnet_tiny", width=0.125, proj_dim=16) | overrides)
    return config


def test_contrastive_model_outputs_unit_norm_projections():
    model = models.create_contrastive_model(model_config())
    x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 16, 16, 3)), jnp.float32)
    variables = model.init(jax.random.key(0), x, train=False)
    z, _ = model.apply(variables, x, train=True, mutable=["batch_stats"])
    assert z.shape == (4, 16) and z.dtype == jnp.float32
    np.testing.assert_allclose(np.linalg.norm(np.asarray(z), axis=-1), 1.0, rtol=1e-5)
    assert set(variables["params"]) == {"encoder", "head"}


@pytest.mark.parametrize(
    "name, width, feature_dim", [("resnet18", 1.0, 512), ("resnet50", 0.5, 1024), ("resnet_tiny", 0.125, 16)]
)
def test_encoder_feature_dim_and_width_multiplier(name, width, feature_dim):
    encoder = models.create_resnet(name, width=width, stem="cifar")
    out = jax.eval_shape(
        lambda x: encoder.init_with_output(jax.random.key(0), x, train=False)[0], jnp.zeros((2, 32, 32, 3))
    )
    assert out.shape == (2, feature_dim) == (2, encoder.feature_dim)


def test_cifar_stem_keeps_resolution_imagenet_stem_divides_by_four():
    x = jnp.zeros((1, 32, 32, 3))
    for stem, side in (("cifar", 32), ("imagenet", 8)):
        encoder = models.create_resnet("resnet_tiny", width=0.125, stem=stem)
        variables = encoder.init(jax.random.key(0), x, train=False)
        _, captured = encoder.apply(
            variables,
            x,
            train=False,
            capture_intermediates=lambda m, _: m.name == "stage1_block1",
            mutable=["intermediates"],
        )
        assert captured["intermediates"]["stage1_block1"]["__call__"][0].shape[1:3] == (side, side)


def test_projection_head_kinds():
    mlp = models.create_contrastive_model(model_config(head="mlp", hidden_dim=32))
    linear = models.create_contrastive_model(model_config(head="linear"))
    x = jnp.zeros((2, 8, 8, 3))
    mlp_head = mlp.init(jax.random.key(0), x, train=False)["params"]["head"]
    linear_head = linear.init(jax.random.key(0), x, train=False)["params"]["head"]
    assert mlp_head["hidden"]["kernel"].shape == (16, 32) and mlp_head["out"]["kernel"].shape == (32, 16)
    assert set(linear_head) == {"out"} and linear_head["out"]["kernel"].shape == (16, 16)


def test_bfloat16_compute_keeps_float32_params_and_output():
    model = models.create_contrastive_model(model_config(dtype="bfloat16"))
    x = jnp.zeros((2, 8, 8, 3))
    variables = model.init(jax.random.key(0), x, train=False)
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(variables["params"]))
    assert model.apply(variables, x, train=False).dtype == jnp.float32


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"name": "resnet19"}, "model.name='resnet19'; allowed"),
        ({"stem": "tiny"}, "model.stem='tiny'; allowed"),
        ({"width": 0.0}, "model.width=0.0 must be > 0"),
        ({"dtype": "float16"}, "model.dtype='float16'; allowed"),
    ],
)
def test_bad_model_config_is_a_clear_error(overrides, message):
    with pytest.raises(ValueError, match=message):
        models.create_contrastive_model(model_config(**overrides))


CONV_CASES = [
    # (input shape, kernel shape, strides, padding)
    ((2, 9, 7, 16), (3, 3, 16, 5), (2, 2), ((1, 1), (1, 1))),  # ResNet's 3x3/2 on odd sizes: one conv per phase
    ((1, 17, 15, 3), (7, 7, 3, 4), (2, 2), ((3, 3), (3, 3))),  # 7x7/2 stem on RGB: XLA's own input gradient
    ((2, 11, 10, 16), (5, 5, 16, 3), (3, 2), ((2, 1), (0, 2))),  # strides (3, 2), asymmetric padding
    ((2, 12, 11, 16), (3, 3, 16, 5), (2, 2), ((4, 2), (1, 4))),  # padding wider than the kernel: dy is cropped
    ((2, 10, 9, 16), (2, 2, 16, 3), (3, 3), ((1, 0), (0, 1))),  # stride above the kernel: a phase with no tap
    ((2, 9, 7, 4), (1, 1, 4, 6), (2, 2), "SAME"),  # strided 1x1 projection: slice, then 1x1
]


@pytest.mark.parametrize(
    "x_shape, w_shape, strides, padding, dtype",
    [(*case, jnp.float32) for case in CONV_CASES] + [(*CONV_CASES[0], jnp.bfloat16)],
)
def test_strided_conv_matches_lax_forward_and_gradients(x_shape, w_shape, strides, padding, dtype):
    """The CPU formulation of strided convolutions is lax.conv_general_dilated's function, gradients included."""
    from jax_supcon.models.conv import conv_general_dilated

    x = jax.random.normal(jax.random.PRNGKey(0), x_shape, dtype)
    w = jax.random.normal(jax.random.PRNGKey(1), w_shape, dtype)
    tol = 1e-4 if dtype == jnp.float32 else 1e-2
    layout = jax.lax.conv_dimension_numbers(x_shape, w_shape, ("NHWC", "HWIO", "NHWC"))

    def loss(conv, x, w):
        y = conv(x, w, strides, padding, dimension_numbers=layout)
        return jnp.sum(jnp.sin(y.astype(jnp.float32))), y  # non-linear, so dy differs per position

    # The reference is lax's own gradient in float32 on the same (rounded) inputs.
    (ref_loss, ref_y), ref_grads = jax.value_and_grad(loss, argnums=(1, 2), has_aux=True)(
        jax.lax.conv_general_dilated, x.astype(jnp.float32), w.astype(jnp.float32)
    )
    (new_loss, new_y), new_grads = jax.jit(
        jax.value_and_grad(lambda x, w: loss(conv_general_dilated, x, w), argnums=(0, 1), has_aux=True)
    )(x, w)
    np.testing.assert_allclose(new_y.astype(np.float32), ref_y.astype(np.float32), rtol=tol, atol=tol)
    for new, ref in zip(new_grads, ref_grads, strict=True):
        assert new.shape == ref.shape and new.dtype == dtype
        new, ref = np.asarray(new, np.float32), np.asarray(ref, np.float32)
        np.testing.assert_allclose(new, ref, rtol=tol, atol=tol * float(np.max(np.abs(ref))))


def test_resnet_gradients_equal_plain_lax_convolutions():
    """Whole-encoder gradients (7x7/2 stem, strided 3x3 and 1x1 projections) against lax's own."""
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 33, 31, 3))
    cpu_model, lax_model = (
        models.create_resnet("resnet_tiny", stem="imagenet", width=0.25, cpu_convolutions=flag)
        for flag in (True, False)
    )
    variables = lax_model.init(jax.random.PRNGKey(1), x)

    def grads(model, variables):
        def loss(params):
            out, _ = model.apply({**variables, "params": params}, x, train=True, mutable=["batch_stats"])
            return jnp.sum(out**2)

        return jax.grad(loss)(variables["params"])

    new = jax.jit(functools.partial(grads, cpu_model))(variables)  # jax_supcon's convolutions
    ref = jax.jit(functools.partial(grads, lax_model))(variables)  # lax's
    for path, ref_leaf in jax.tree_util.tree_leaves_with_path(ref):
        scale = float(jnp.max(jnp.abs(ref_leaf))) + 1e-12
        err = float(jnp.max(jnp.abs(_leaf(new, path) - ref_leaf))) / scale
        assert err < 1e-4, (jax.tree_util.keystr(path), err)


def _leaf(tree, path):
    for key in path:
        tree = tree[key.key]
    return tree


def test_rematerialised_blocks_give_the_same_gradients_and_statistics_and_recompute_the_forward():
    """`model.remat`: the same parameter tree, gradients and batch statistics; the compiled backward
    pass runs block convolutions again instead of keeping their activations."""
    x = jax.random.normal(jax.random.PRNGKey(0), (8, 16, 16, 3))
    plain = models.create_resnet("resnet_tiny", stem="cifar", width=0.25)
    remat = models.create_resnet("resnet_tiny", stem="cifar", width=0.25, remat=True)
    variables = plain.init(jax.random.PRNGKey(1), x)
    assert jax.tree.structure(remat.init(jax.random.PRNGKey(1), x)) == jax.tree.structure(variables)

    def grads_and_stats(model):
        def loss(params):
            out, updated = model.apply({**variables, "params": params}, x, train=True, mutable=["batch_stats"])
            return jnp.sum(jnp.sin(out)), updated["batch_stats"]

        return jax.jit(jax.grad(loss, has_aux=True))

    results, convolutions = [], []
    for model in (plain, remat):
        fn = grads_and_stats(model)
        convolutions.append(fn.lower(variables["params"]).compile().as_text().count(" convolution("))
        results.append(fn(variables["params"]))
    for new, ref in zip(jax.tree.leaves(results[1]), jax.tree.leaves(results[0]), strict=True):
        np.testing.assert_allclose(new, ref, rtol=1e-5, atol=1e-6)
    assert convolutions[1] > convolutions[0], convolutions  # the blocks' forward runs again in the backward
