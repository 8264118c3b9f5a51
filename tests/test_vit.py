"""Vision Transformer encoders: parameter counts against timm's, the forward pass against an
independent NumPy implementation written from the paper's equations, position-embedding
interpolation, pooling, stochastic depth, remat and scan, 1 vs 8 devices, and the optimizer
rules ViT recipes need (weight decay by parameter path, layer-wise learning-rate decay)."""

import itertools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import compiled_pretraining, tiny
from scipy.special import erf

from jax_supcon import models, optim, parallel
from jax_supcon.models import vit

# timm 1.0: sum(p.numel() for p in timm.create_model(f"{name}_patch16_224").parameters())
TIMM_PARAMETERS = {"vit_tiny": 5_717_416, "vit_small": 22_050_664, "vit_base": 86_567_656, "vit_large": 304_326_632}


def _count(tree) -> int:
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


@pytest.mark.parametrize("name", sorted(TIMM_PARAMETERS))
def test_parameter_counts_equal_timm(name):
    model = models.SupervisedModel(encoder=vit.create_vit(name), classifier=models.LinearClassifier(1000))
    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 224, 224, 3)), train=False))
    assert _count(shapes) == TIMM_PARAMETERS[name]
    if name == "vit_base":  # without the 1000-way head, as the issue quotes it
        assert _count(shapes["params"]["encoder"]) == 85_798_656


# An independent float64 ViT: the equations of Dosovitskiy et al. (2021) and Vaswani et al. (2017).


def _layer_norm(x, p, eps=1e-6):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * p["scale"] + p["bias"]


def _dense(x, p):
    return x @ p["kernel"] + p["bias"]


def _attention(x, p, heads):
    b, n, w = x.shape
    d = w // heads
    q, k, v = (t.reshape(b, n, heads, d).transpose(0, 2, 1, 3) for t in np.split(_dense(x, p["qkv"]), 3, axis=-1))
    logits = q @ k.transpose(0, 1, 3, 2) / np.sqrt(d)
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    return _dense((weights @ v).transpose(0, 2, 1, 3).reshape(b, n, w), p["proj"])


def reference_vit(params, images, *, patch, heads, pool, depth):
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    b, h, w, c = images.shape
    x = images.astype(np.float64).reshape(b, h // patch, patch, w // patch, patch, c)
    x = _dense(x.transpose(0, 1, 3, 2, 4, 5).reshape(b, -1, patch * patch * c), p["patch_embed"])
    if pool == "cls":
        x = np.concatenate([np.repeat(p["cls_token"], b, axis=0), x], axis=1)
    x = x + p["pos_embedding"]
    for index in range(depth):
        block = p[f"block{index}"]
        x = x + _attention(_layer_norm(x, block["norm1"]), block["attn"], heads)
        y = _dense(_layer_norm(x, block["norm2"]), block["fc1"])
        x = x + _dense(0.5 * y * (1 + erf(y / np.sqrt(2))), block["fc2"])
    return _layer_norm(x, p["norm"])[:, 0] if pool == "cls" else _layer_norm(x.mean(1), p["norm"])


def _perturbed(params, seed=0):
    """Initial parameters plus noise, so norm scales, biases and the class token are not 1 or 0."""
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
    return jax.tree.unflatten(
        treedef, [x + 0.2 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys, strict=True)]
    )


@pytest.mark.parametrize("pool", vit.POOLS)
def test_forward_equals_an_independent_numpy_implementation(pool):
    model = vit.VisionTransformer(width=32, depth=2, num_heads=4, mlp_dim=64, patch_size=4, pool=pool)
    images = np.random.default_rng(0).normal(size=(3, 12, 12, 3)).astype(np.float32)
    params = _perturbed(model.init(jax.random.PRNGKey(0), images[:1], train=False)["params"])
    assert ("cls_token" in params) == (pool == "cls")
    assert params["pos_embedding"].shape == (1, 9 + (pool == "cls"), 32)
    ours = np.asarray(model.apply({"params": params}, images, train=False))
    reference = reference_vit(params, images, patch=4, heads=4, pool=pool, depth=2)
    assert ours.shape == (3, 32)
    np.testing.assert_allclose(ours, reference, rtol=0, atol=2e-5 * np.abs(reference).max())


def test_bfloat16_compute_keeps_float32_parameters_and_output():
    model = vit.create_vit("vit_micro", patch_size=4, dtype=jnp.bfloat16)
    images = np.random.default_rng(0).normal(size=(2, 16, 16, 3)).astype(np.float32)
    variables = model.init(jax.random.PRNGKey(0), images, train=False)
    assert {leaf.dtype for leaf in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}
    out = model.apply(variables, images, train=False)
    full = vit.create_vit("vit_micro", patch_size=4).apply(variables, images, train=False)
    assert out.dtype == jnp.float32
    np.testing.assert_allclose(out, full, atol=0.1 * float(jnp.abs(full).max()))


def test_position_embedding_interpolation():
    rng = np.random.default_rng(0)
    pos = jnp.asarray(rng.normal(size=(1, 1 + 16, 8)), jnp.float32)
    assert vit.interpolate_position_embedding(pos, 1, 4) is pos  # the grid it was made for: untouched
    resized = vit.interpolate_position_embedding(pos, 1, 6)
    assert resized.shape == (1, 1 + 36, 8)
    np.testing.assert_array_equal(resized[:, 0], pos[:, 0])  # the class token's embedding is kept
    constant = jnp.full((1, 16, 8), 0.3)
    np.testing.assert_allclose(vit.interpolate_position_embedding(constant, 0, 7), jnp.full((1, 49, 8), 0.3), atol=1e-6)
    # A field linear in the patch position is reproduced exactly by the cubic kernel wherever its
    # four taps lie inside the grid: patch centre i of the new grid sits at (i + 0.5) * 8 / 12 - 0.5.
    rows, cols = np.meshgrid(np.arange(8.0), np.arange(8.0), indexing="ij")
    linear = jnp.asarray((0.5 * rows - 0.25 * cols).reshape(1, 64, 1), jnp.float32)
    out = np.asarray(vit.interpolate_position_embedding(linear, 0, 12)).reshape(12, 12)
    source = (np.arange(12) + 0.5) * 8 / 12 - 0.5
    inside = (source >= 1) & (source <= 6)
    expected = 0.5 * source[:, None] - 0.25 * source[None, :]
    np.testing.assert_allclose(out[np.ix_(inside, inside)], expected[np.ix_(inside, inside)], atol=1e-5)


def test_a_model_made_for_one_size_runs_at_another_with_interpolated_embeddings():
    small = vit.create_vit("vit_micro", patch_size=4)
    images = np.random.default_rng(0).normal(size=(2, 24, 24, 3)).astype(np.float32)
    params = _perturbed(small.init(jax.random.PRNGKey(0), images[:, :16, :16], train=False)["params"])
    assert params["pos_embedding"].shape == (1, 17, 64)  # made for 16 px: a 4 x 4 grid
    at_24 = small.apply({"params": params}, images, train=False)
    # The same encoder made for 24 px, given the interpolated embeddings, computes the same thing.
    large = {**params, "pos_embedding": vit.interpolate_position_embedding(params["pos_embedding"], 1, 6)}
    np.testing.assert_allclose(
        at_24, vit.create_vit("vit_micro", patch_size=4).apply({"params": large}, images, train=False), atol=1e-5
    )
    # Created for a recorded grid (a stage-2 run building the target to restore into).
    shapes = jax.eval_shape(
        lambda: vit.create_vit("vit_micro", patch_size=4, pos_grid=4).init(jax.random.PRNGKey(0), images, train=False)
    )
    assert shapes["params"]["pos_embedding"].shape == (1, 17, 64)


def test_drop_path_is_off_at_evaluation_and_deterministic_per_key_in_training():
    images = np.random.default_rng(0).normal(size=(8, 16, 16, 3)).astype(np.float32)
    plain = vit.create_vit("vit_micro", patch_size=4)
    noisy = vit.create_vit("vit_micro", patch_size=4, drop_path=0.5, dropout=0.2)
    variables = plain.init(jax.random.PRNGKey(0), images, train=False)
    np.testing.assert_array_equal(
        noisy.apply(variables, images, train=False), plain.apply(variables, images, train=False)
    )

    def train(key):
        return noisy.apply(variables, images, train=True, rngs={"dropout": jax.random.PRNGKey(key)})

    np.testing.assert_array_equal(train(1), train(1))
    assert not np.allclose(train(1), train(2))
    with pytest.raises(Exception, match="dropout"):  # training draws from the dropout stream
        noisy.apply(variables, images, train=True)
    # Each example's branch is dropped whole with the given probability; kept ones are rescaled.
    x = jnp.ones((20000, 3, 2))
    out = np.asarray(vit.drop_path(x, 0.25, jax.random.PRNGKey(0)))
    assert set(np.unique(out)) == {0.0, np.float32(1 / 0.75)}
    assert np.all(out.min(axis=(1, 2)) == out.max(axis=(1, 2)))
    assert abs((out[:, 0, 0] == 0).mean() - 0.25) < 0.015


def _stacked(params, depth):
    """A plain model's parameters in the scanned layout (blocks stacked under `blocks`)."""
    blocks = [params[f"block{i}"] for i in range(depth)]
    rest = {k: v for k, v in params.items() if not k.startswith("block")}
    return {**rest, "blocks": jax.tree.map(lambda *xs: jnp.stack(xs), *blocks)}


def test_remat_and_scan_give_the_gradients_of_the_plain_model():
    images = np.random.default_rng(0).normal(size=(4, 16, 16, 3)).astype(np.float32)
    options = dict(width=32, depth=3, num_heads=2, mlp_dim=64, patch_size=4)
    plain = vit.VisionTransformer(**options)
    params = _perturbed(plain.init(jax.random.PRNGKey(0), images, train=False)["params"])

    def gradients(model, params):
        return jax.grad(lambda p: jnp.sum(model.apply({"params": p}, images, train=True) ** 2))(params)

    expected = gradients(plain, params)
    for remat, scan in ((True, False), (False, True), (True, True)):
        model = vit.VisionTransformer(**options, remat=remat, scan=scan)
        got = gradients(model, _stacked(params, 3) if scan else params)
        want = _stacked(expected, 3) if scan else expected
        # float32: the recomputed and scanned programs round differently, by about 1e-6 of the scale
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5 * float(jnp.abs(b).max())), got, want)
    scanned = vit.VisionTransformer(**options, scan=True)
    shapes = jax.eval_shape(lambda: scanned.init(jax.random.PRNGKey(0), images, train=False))
    assert shapes["params"]["blocks"]["fc1"]["kernel"].shape == (3, 32, 64)


def _vit_config(config):
    config = tiny(config)
    config.model.name = "vit_micro"
    config.model.patch_size = 4
    config.model.drop_path = 0.1
    config.model.dropout = 0.1
    config.optimizer.name = "adamw"
    config.optimizer.learning_rate = 1e-3
    config.optimizer.weight_decay = 0.05
    config.augment.recipe = "none"  # not what is compared; saves compiling it twice
    return config


def test_a_tiny_vit_pretraining_step_is_the_same_on_one_and_eight_devices(pretrain_config):
    """With dropout and stochastic depth on: their keys, like the augmentation's, depend on the
    run's key and the step only, not on how the batch is split over devices."""
    config = _vit_config(pretrain_config)
    config.batch_size = 32

    def losses(mesh):
        from jax_supcon.train import inputs

        cfg, train, state, step = compiled_pretraining(config, mesh)
        out = []
        for batch in itertools.islice(inputs.training_batches(train, cfg, state, mesh, views=2), 4):
            state, metrics = step(state, batch)
            out.append((float(metrics["loss"]), float(metrics["grad_norm"])))
        return np.array(out)

    one = losses(parallel.create_mesh(jax.devices()[:1]))
    eight = losses(parallel.create_mesh())
    assert np.all(np.isfinite(one)) and len(set(one[:, 0])) == 4
    np.testing.assert_allclose(eight, one, rtol=2e-5)


def test_weight_decay_mask_is_chosen_by_parameter_path():
    encoder = vit.create_vit("vit_micro", patch_size=4)
    model = models.ContrastiveModel(encoder=encoder, head=models.ProjectionHead(), probe_classes=3)
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 3)), train=False)["params"]
    mask = optim._decay_mask(params)
    flat = {"/".join(str(k.key) for k in path): value for path, value in jax.tree_util.tree_leaves_with_path(mask)}
    decayed = {name for name, value in flat.items() if value}
    assert decayed == {name for name in flat if name.endswith("/kernel")}
    for name in ("encoder/pos_embedding", "encoder/cls_token", "encoder/norm/scale", "encoder/block0/attn/qkv/bias"):
        assert flat[name] is False
    assert flat["encoder/block0/attn/qkv/kernel"] and flat["encoder/patch_embed/kernel"] and flat["head/out/kernel"]
    # For a ResNet the rule is the rank > 1 rule it replaced (convolution and dense kernels).
    resnet = models.create_resnet("resnet_tiny", width=0.125)
    variables = resnet.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 3)), train=False)
    assert optim._decay_mask(variables["params"]) == jax.tree.map(lambda p: p.ndim > 1, variables["params"])


@pytest.mark.parametrize("scan", [False, True])
def test_layer_decay_scales_each_block_by_its_formula(scan):
    model = models.SupervisedModel(
        encoder=vit.create_vit("vit_micro", patch_size=4, scan=scan), classifier=models.LinearClassifier(3)
    )
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 3)), train=False)["params"]
    ones = jax.tree.map(jnp.ones_like, params)
    tx = optim.scale_by_layer_decay(0.5)
    scaled, _ = tx.update(ones, tx.init(params))
    # depth 2: the classifier and final norm at 1, block 1 at 0.5, block 0 at 0.25, embeddings at 0.125
    enc = scaled["encoder"]
    assert float(scaled["classifier"]["linear"]["kernel"].min()) == 1.0 and float(enc["norm"]["scale"].max()) == 1.0
    for name in ("patch_embed", "pos_embedding", "cls_token"):
        assert set(np.unique(jax.tree.leaves(enc[name])[0])) == {0.125}
    if scan:
        np.testing.assert_array_equal(enc["blocks"]["fc1"]["kernel"][:, 0, 0], [0.25, 0.5])
    else:
        assert (
            float(enc["block0"]["fc1"]["kernel"].max()) == 0.25
            and float(enc["block1"]["attn"]["qkv"]["bias"].min()) == 0.5
        )
    resnet = models.SupervisedModel(
        encoder=models.create_resnet("resnet_tiny", width=0.125), classifier=models.LinearClassifier(3)
    )
    resnet_params = resnet.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 3)), train=False)["params"]
    with pytest.raises(ValueError, match=r"optimizer.layer_decay=0.5 needs a ViT encoder"):
        tx.update(resnet_params, tx.init(resnet_params))


def test_vit_stage_one_then_linear_evaluation_and_fine_tuning_at_another_size(tmp_path):
    """A ViT pretraining at 8 px records the size its position embeddings are made for; linear
    evaluation at 12 px and fine-tuning with layer decay restore it (the CLI path of stage 2 is
    the same `train_and_evaluate`; its bad-input cases are in test_train.py)."""
    from configs import digits_finetune, digits_linear, digits_supcon
    from jax_supcon.jobs import finetune, linear_eval, pretrain

    mesh = parallel.create_mesh(jax.devices()[:2])
    config = _vit_config(digits_supcon.get_config())
    config.total_steps = 2
    pre = tmp_path / "pre"
    pretrain.train_and_evaluate(config, str(pre), mesh=mesh)
    saved = json.loads((pre / "config.json").read_text())
    assert saved["model"]["pos_image_size"] == 8 and saved["model"]["name"] == "vit_micro"
    for job, module, stage2 in ((linear_eval, digits_linear, {}), (finetune, digits_finetune, {"layer_decay": 0.65})):
        config = tiny(module.get_config())
        config.total_steps = 2
        config.data.image_size = 12
        config.pretrained_workdir = str(pre)
        for key, value in stage2.items():
            config.optimizer[key] = value
        workdir = tmp_path / module.__name__.rpartition(".")[2]
        summary = job.train_and_evaluate(config, str(workdir), mesh=mesh)
        assert 0 <= summary["test_top1"] <= 1
        recorded = json.loads((workdir / "config.json").read_text())
        assert recorded["model"]["pos_image_size"] == 8 and recorded["data"]["image_size"] == 12
    assert recorded["optimizer"]["layer_decay"] == 0.65


@pytest.mark.parametrize("pool", vit.POOLS)
def test_analytic_flops_agree_with_xla_cost_analysis(pool):
    """The step benchmark's MFU for a ViT uses `forward_flops`; XLA counts the same matrix and
    attention products plus the norms, softmax and GELU it leaves out (a few percent)."""
    model = vit.VisionTransformer(width=192, depth=2, num_heads=3, mlp_dim=768, patch_size=4, pool=pool)
    images = jnp.zeros((2, 32, 32, 3))
    variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), images, train=False))
    compiled = jax.jit(lambda v, x: model.apply(v, x, train=False)).lower(variables, images).compile()
    cost = compiled.cost_analysis()
    xla = float((cost[0] if isinstance(cost, list) else cost)["flops"])
    analytic = 2 * vit.forward_flops(model, 32)
    assert 1.0 <= xla / analytic < 1.1, (xla, analytic)
