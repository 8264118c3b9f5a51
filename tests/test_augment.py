"""On-device augmentation: each op, the named recipes, per-view overrides, host-cropped input, validation."""

import collections
import functools
import itertools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageOps
from scipy import ndimage

from jax_supcon.config import AUGMENT_RECIPES, augment_config, base_config, validate_config
from jax_supcon.data import augment, augment_ops
from jax_supcon.data import randaugment as randaugment_module

KEY = jax.random.PRNGKey(0)


def uint8_images(shape, seed=0):
    return jnp.asarray(np.random.default_rng(seed).integers(0, 256, shape), jnp.uint8)


def float_image(size=16, seed=0):
    """A smooth colour image with some texture, values in [0, 1] on the 0..255 grid."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 1, size)
    image = np.stack(
        [ramp[None, :] * np.ones((size, 1)), ramp[:, None] * np.ones(size), np.full((size, size), 0.3)], -1
    )
    image = np.clip(0.7 * image + 0.3 * rng.random((size, size, 3)), 0, 1)
    return jnp.asarray(np.round(image * 255) / 255, jnp.float32)


def unit_norm(**overrides):
    """Everything off (identity crop, all probabilities 0), mean 0 and std 1: the view is the [0, 1] image."""
    fields = dict(
        crop_scale=(1.0, 1.0),
        crop_ratio=(1.0, 1.0),
        flip_prob=0.0,
        jitter_prob=0.0,
        grayscale_prob=0.0,
        mean=(0.0, 0.0, 0.0),
        std=(1.0, 1.0, 1.0),
    )
    return augment_config("none", **(fields | overrides))


@functools.cache
def recipe_views(recipe):
    """The jitted `augment_views` of a named recipe with 2 views, compiled once per test session."""
    return jax.jit(functools.partial(augment.augment_views, cfg=augment_config(recipe), num_views=2))


def denormalise(views, cfg):
    return np.asarray(views) * np.asarray(cfg.std) + np.asarray(cfg.mean)


RANDOM_OPS = {
    "crop": lambda key, x: augment_ops.random_resized_crop(key, x, (0.08, 1.0)),
    "flip": lambda key, x: augment_ops.random_apply(jax.random.uniform(key), 0.5, augment.pix.flip_left_right, x),
    "jitter": lambda key, x: augment_ops.color_jitter(key, x, 0.8, 0.8, 0.8, 0.2),
    "grayscale": lambda key, x: augment_ops.random_apply(jax.random.uniform(key), 0.5, augment_ops.grayscale, x),
    "blur": lambda key, x: augment_ops.gaussian_blur(key, x, (0.1, 2.0)),
    "solarize": lambda key, x: augment_ops.random_apply(jax.random.uniform(key), 0.5, augment_ops.solarize, x),
    "randaugment": lambda key, x: randaugment_module.randaugment(key, x, 2, 9.0),
}


@pytest.mark.parametrize("name", sorted(RANDOM_OPS))
def test_each_op_keeps_shape_and_range_is_deterministic_per_key_and_jit_matches_eager(name):
    images = jnp.stack([float_image(seed=s) for s in range(4)])
    eager = jax.vmap(RANDOM_OPS[name])
    fn = jax.jit(eager)
    keys = jax.random.split(KEY, 4)
    out = np.asarray(fn(keys, images))
    np.testing.assert_allclose(out, eager(keys, images), atol=1e-5)  # eager and jitted agree
    assert out.shape == images.shape and out.dtype == np.float32
    assert out.min() >= -1e-6 and out.max() <= 1 + 1e-6
    np.testing.assert_array_equal(out, fn(keys, images))
    others = [np.asarray(fn(jax.random.split(jax.random.PRNGKey(seed), 4), images)) for seed in (1, 2, 3)]
    assert any(not np.allclose(out, other) for other in others)


def test_randaugment_ops_keep_range_and_are_the_identity_at_magnitude_zero():
    image = float_image(16)  # 256 pixels: enough for equalize to move levels
    fixed_at_zero = set(randaugment_module.RANDAUGMENT_OPS) - {"autocontrast", "equalize"}

    @jax.jit
    def all_ops(x):  # one compile: every op with both signs at magnitude 9, and at magnitude 0
        signs = jnp.array([-1.0, 1.0])
        return {
            name: (
                jax.vmap(lambda sign, name=name: randaugment_module.randaugment_op(name, x, 9.0, sign))(signs),
                randaugment_module.randaugment_op(name, x, 0.0),
            )
            for name in randaugment_module.RANDAUGMENT_OPS
        }

    for name, (strong, zero) in all_ops(image).items():
        for out in np.asarray(strong):
            assert out.shape == image.shape and out.min() >= 0 and out.max() <= 1, name
            if name != "identity":
                assert not np.allclose(out, image, atol=1e-3), name
        if name in fixed_at_zero:
            np.testing.assert_allclose(zero, image, atol=1e-5, err_msg=name)


def to_pil(image):
    return Image.fromarray(np.round(np.asarray(image) * 255).astype(np.uint8))


def from_pil(image):
    return np.asarray(image, np.float32) / 255


def test_randaugment_ops_match_pil():
    """Independent reference: PIL's ImageOps / ImageEnhance, as timm's RandAugment applies them."""
    image = float_image(16, seed=3)
    pil = to_pil(image)
    m = 0.6  # magnitude 6 of 10
    expected = {
        "autocontrast": ImageOps.autocontrast(pil),
        "equalize": ImageOps.equalize(pil),
        "solarize": ImageOps.solarize(pil, 256 - int(m * 256)),
        "posterize": ImageOps.posterize(pil, 8 - int(m * 4)),
        "color": ImageEnhance.Color(pil).enhance(1 + 0.9 * m),
        "contrast": ImageEnhance.Contrast(pil).enhance(1 - 0.9 * m),
        "brightness": ImageEnhance.Brightness(pil).enhance(1 + 0.9 * m),
        "sharpness": ImageEnhance.Sharpness(pil).enhance(1 + 0.9 * m),
    }
    signs = {"contrast": -1.0}
    for name, reference in expected.items():
        out = randaugment_module.randaugment_op(name, image, 10 * m, signs.get(name, 1.0))
        np.testing.assert_allclose(out, from_pil(reference), atol=1.5 / 255, err_msg=name)


def test_randaugment_rotate_matches_dm_pix_rotate():
    image = float_image(16)
    angle = 0.6 * np.radians(30.0)
    ours, expected = jax.jit(
        lambda x: (
            randaugment_module.randaugment_op("rotate", x, 6.0),
            augment.pix.rotate(x, angle, mode="constant", cval=randaugment_module.GEOMETRIC_FILL),
        )
    )(image)
    np.testing.assert_allclose(ours, expected, atol=1e-5)


def test_solarize_and_grayscale_match_their_definitions():
    image = np.asarray(float_image(8))
    np.testing.assert_allclose(augment_ops.solarize(jnp.asarray(image)), np.where(image < 0.5, image, 1 - image))
    luma = image @ np.array([0.2989, 0.587, 0.114])
    np.testing.assert_allclose(augment_ops.grayscale(jnp.asarray(image)), np.repeat(luma[..., None], 3, -1), atol=1e-6)


def test_blur_matches_a_scipy_gaussian_convolution():
    image = float_image(32)
    sigma = 1.3
    size = augment_ops.blur_kernel_size(32)
    assert size % 2 == 1 and size == 5  # ~10% of 32, odd
    radius = size // 2
    x = np.arange(-radius, radius + 1)
    kernel = np.exp(-(x**2) / (2 * sigma**2))
    kernel /= kernel.sum()
    expected = ndimage.correlate1d(np.asarray(image, np.float64), kernel, axis=0, mode="mirror")
    expected = ndimage.correlate1d(expected, kernel, axis=1, mode="mirror")
    np.testing.assert_allclose(augment_ops.gaussian_blur(KEY, image, (sigma, sigma)), expected, atol=1e-5)


def test_ops_at_zero_strength_or_probability_are_the_identity():
    image = float_image(16)
    cases = {
        "blur p=0": unit_norm(blur_prob=0.0),
        "solarize p=0": unit_norm(solarize_prob=0.0),
        "jitter strengths 0": unit_norm(jitter_prob=1.0, brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0),
        "randaugment N=0": unit_norm(randaugment_num_ops=0, randaugment_magnitude=10.0),
        "grayscale and flip p=0": unit_norm(grayscale_prob=0.0, flip_prob=0.0),
    }
    for name, cfg in cases.items():
        np.testing.assert_array_equal(
            augment.augment_image(KEY, image, augment.view_config(cfg, 0)), image, err_msg=name
        )
    np.testing.assert_array_equal(randaugment_module.randaugment(KEY, image, 0), image)
    np.testing.assert_array_equal(augment_ops.color_jitter(KEY, image, 0.0, 0.0, 0.0, 0.0), image)


def test_recipe_none_equals_preprocess_eval():
    cfg = augment_config("none")
    images = uint8_images((4, 16, 16, 3))
    views = augment.augment_views(KEY, images, cfg, 2)
    for view in range(2):
        np.testing.assert_array_equal(views[:, view], augment.preprocess_eval(images, cfg))


@pytest.mark.parametrize("recipe", sorted(AUGMENT_RECIPES))
def test_every_recipe_runs_under_jit_and_stays_in_range(recipe):
    cfg = augment_config(recipe)
    views = recipe_views(recipe)(KEY, uint8_images((4, 16, 16, 3)))
    assert views.shape == (4, 2, 16, 16, 3) and views.dtype == jnp.float32
    pixels = denormalise(views, cfg)
    assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5
    assert cfg.recipe == recipe


def test_byol_view_overrides_change_only_their_view():
    off = dict(blur_prob=0.0, solarize_prob=0.0)
    cfg = unit_norm(view1=off, view2=off | dict(solarize_prob=1.0))
    image = float_image(16)
    views = np.asarray(augment.augment_views(KEY, jnp.round(image * 255).astype(jnp.uint8)[None], cfg, 3))[0]
    np.testing.assert_allclose(views[0], image, atol=1e-6)  # view 1: solarize p=0
    np.testing.assert_allclose(views[1], np.where(image < 0.5, image, 1 - image), atol=1e-6)  # view 2: p=1
    np.testing.assert_allclose(views[2], image, atol=1e-6)  # view 3: no override, the flat fields

    byol = augment_config("byol")
    assert augment.view_config(byol, 0).blur_prob == 1.0 and augment.view_config(byol, 0).solarize_prob == 0.0
    assert augment.view_config(byol, 1).blur_prob == 0.1 and augment.view_config(byol, 1).solarize_prob == 0.2
    assert augment.view_config(byol, 2).blur_prob == 0.5 and "view1" not in augment.view_config(byol, 2)
    images = uint8_images((4, 16, 16, 3))
    stronger = augment_config("byol", view2=dict(solarize_prob=1.0))
    a = recipe_views("byol")(KEY, images)
    b = jax.jit(lambda key, x: augment.augment_views(key, x, stronger, 2))(KEY, images)
    np.testing.assert_array_equal(a[:, 0], b[:, 0])  # view 1 untouched by view 2's override
    assert not np.allclose(a[:, 1], b[:, 1])


def test_host_cropped_views_skip_the_device_crop():
    cfg = unit_norm(crop_scale=(0.08, 1.0), crop_ratio=(3 / 4, 4 / 3))  # a crop that would change the image
    images = uint8_images((3, 2, 8, 8, 3))
    views = augment.augment_views(KEY, images, cfg, 2)
    np.testing.assert_allclose(views, augment_ops.to_float(images), atol=1e-6)
    cropped = augment.augment_views(KEY, images[:, 0], cfg, 2)  # rank 4: cropped on device
    assert not np.allclose(cropped[:, 0], augment_ops.to_float(images[:, 0]))
    with pytest.raises(ValueError, match="3 views .*num_views=2"):
        augment.augment_views(KEY, uint8_images((2, 3, 8, 8, 3)), cfg, 2)
    with pytest.raises(ValueError, match=r"\[B, H, W, C\] or \[B, V, H, W, C\]"):
        augment.augment_views(KEY, uint8_images((8, 8, 3)), cfg, 2)


def test_view_config_merges_one_override():
    cfg = augment_config("simclr", view2=dict(blur_prob=0.0))
    assert augment.view_config(cfg, 0).blur_prob == 0.5 and augment.view_config(cfg, 1).blur_prob == 0.0
    assert augment.view_config(cfg, 1).crop_scale == (0.08, 1.0)
    cfg.view2 = ml_collections.ConfigDict(dict(mean=(0.0, 0.0, 0.0)))
    with pytest.raises(ValueError, match="augment.view2.mean is not a per-view op field"):
        augment.view_config(cfg, 1)


def test_recipe_switched_on_the_command_line_keeps_the_fields_set_on_top():
    config = augment_config("supcon_cifar")
    config.blur_prob = 0.3  # --config.augment.blur_prob=0.3
    config.recipe = "byol"  # --config.augment.recipe=byol
    config.view2.solarize_prob = 0.05  # --config.augment.view2.solarize_prob=0.05
    view1, view2 = augment.view_config(config, 0), augment.view_config(config, 1)
    assert view1.crop_scale == (0.08, 1.0) and view1.saturation == 0.2  # byol's values ...
    assert view1.blur_prob == view2.blur_prob == 0.3  # ... under the field set for every view
    assert (view1.solarize_prob, view2.solarize_prob) == (0.0, 0.05)


def test_augment_config_recipes_and_errors():
    assert augment_config().recipe == "supcon_cifar"
    assert augment.view_config(augment_config(), 0).crop_scale == (0.2, 1.0)
    simclr = augment.view_config(augment_config("simclr"), 1)
    assert (simclr.brightness, simclr.contrast, simclr.saturation, simclr.hue) == (0.8, 0.8, 0.8, 0.2)
    assert augment.view_config(augment_config("randaugment"), 0).randaugment_num_ops == 2
    merged = augment.view_config(augment_config("byol", view2=dict(solarize_prob=0.1)), 1)
    assert (merged.blur_prob, merged.solarize_prob) == (0.1, 0.1)  # merged with the recipe's view, not replaced
    keys = set(augment_config())
    assert all(set(augment_config(r)) == keys for r in AUGMENT_RECIPES)
    with pytest.raises(ValueError, match=r"augment.recipe='x'; allowed: \('supcon_cifar'"):
        augment_config("x")
    with pytest.raises(ValueError, match="augment.blur_porb is not an augment field"):
        augment_config(blur_porb=0.3)


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("recipe", "x", r"augment.recipe='x'; allowed: \("),
        ("blur_prob", 1.5, r"augment.blur_prob=1.5 must be in \[0, 1\]"),
        ("flip_prob", -0.1, r"augment.flip_prob=-0.1 must be in \[0, 1\]"),
        ("crop_scale", (0.0, 1.0), r"augment.crop_scale=\(0.0, 1.0\) must be \(lo, hi\) with 0 < lo <= hi <= 1"),
        ("crop_scale", (0.5, 0.2), "augment.crop_scale"),
        ("randaugment_magnitude", 11.0, r"augment.randaugment_magnitude=11.0 must be in \[0, 10\]"),
        ("randaugment_num_ops", -1, "augment.randaugment_num_ops=-1 must be >= 0"),
        ("hue", 0.7, r"augment.hue=0.7 must be in \[0, 0.5\]"),
        ("view2", {"solarize_prob": 2.0}, r"augment.view2.solarize_prob=2.0 must be in \[0, 1\]"),
        ("view2", {"blur_porb": 0.1}, "augment.view2.blur_porb is not a per-view op field; allowed: "),
        ("views", {"blur_prob": 0.1}, "augment.views is not an augment field"),
    ],
)
def test_validate_config_rejects_bad_augment_values(path, value, message):
    config = base_config()
    validate_config(config)
    config.augment[path] = ml_collections.ConfigDict(value) if isinstance(value, dict) else value
    with pytest.raises(ValueError, match=message):
        validate_config(config)


@pytest.mark.parametrize("recipe", sorted(AUGMENT_RECIPES))
def test_every_recipe_validates(recipe):
    config = base_config()
    config.augment = augment_config(recipe)
    validate_config(config)


# Moved from tests/test_data.py.


def test_augmented_views_shapes_range_and_determinism():
    cfg = augment_config()
    images = uint8_images((4, 16, 16, 3))
    fn = recipe_views(cfg.recipe)
    views = fn(jax.random.PRNGKey(0), images)
    assert views.shape == (4, 2, 16, 16, 3) and views.dtype == jnp.float32
    pixels = denormalise(views, cfg)
    assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5
    np.testing.assert_array_equal(views, fn(jax.random.PRNGKey(0), images))
    assert not np.allclose(views[:, 0], views[:, 1])
    assert not np.allclose(views, fn(jax.random.PRNGKey(1), images))


def test_identity_recipe_returns_the_normalised_image():
    cfg = augment_config(
        crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), flip_prob=0.0, jitter_prob=0.0, grayscale_prob=0.0
    )
    images = uint8_images((4, 16, 16, 3))
    views = augment.augment_views(jax.random.PRNGKey(0), images, cfg, 1)[:, 0]
    np.testing.assert_allclose(views, augment.preprocess_eval(images, cfg), atol=1e-5)


def test_random_resized_crop_zooms_into_the_image():
    image = jnp.zeros((16, 16, 3)).at[:8].set(1.0)  # top half white
    crop = jax.jit(jax.vmap(lambda k: augment_ops.random_resized_crop(k, image, scale=(0.1, 0.1), ratio=(1.0, 1.0))))
    crops = crop(jax.random.split(jax.random.PRNGKey(0), 64))
    means = np.asarray(crops.mean(axis=(1, 2, 3)))
    assert means.min() < 0.05 and means.max() > 0.95  # small crops land fully in one half or the other


def test_flip_and_grayscale_are_applied_at_their_probabilities():
    image = jnp.tile(jnp.linspace(0, 1, 8)[None, :, None], (8, 1, 3)) * jnp.array([1.0, 0.5, 0.2])
    cfg = unit_norm(flip_prob=1.0, grayscale_prob=1.0)
    out = augment.augment_image(jax.random.PRNGKey(0), image, augment.view_config(cfg, 0))
    assert float(out[0, 0, 0]) > float(out[0, -1, 0])  # mirrored: the bright side is now on the left
    np.testing.assert_allclose(out[..., 0], out[..., 1], atol=1e-6)  # grey: channels equal


# ----------------------------------------------------------------------------- statistics and
# equality with the libraries' ops: the fast formulations draw and compute what the ops define.


def _is_subsequence(order, sequence):
    remaining = iter(sequence)
    return all(any(op == entry for entry in remaining) for op in order)


@pytest.mark.parametrize("count", [1, 2, 3, 4])
def test_jitter_sequence_spells_every_order_exactly_once(count):
    sequence = augment_ops.JITTER_SEQUENCE[count]
    assert len(sequence) == {1: 1, 2: 3, 3: 7, 4: 12}[count]  # n^2 - 2n + 4 for n >= 3: the shortest
    orders = list(itertools.permutations(range(count)))
    assert all(_is_subsequence(order, sequence) for order in orders)
    positions = jax.jit(lambda order: jnp.stack(augment_ops.sequence_positions(order, sequence)))
    for order in orders:
        active = np.asarray(positions(jnp.asarray(order)))
        assert [sequence[i] for i in np.flatnonzero(active)] == list(order)


def test_jitter_orders_are_uniform():
    draws = jax.random.uniform(jax.random.PRNGKey(1), (24 * 500, 4))
    orders = np.asarray(jax.vmap(augment_ops.jitter_order)(draws))
    counts = collections.Counter(map(tuple, orders))
    assert len(counts) == 24
    # 500 expected per order, sd ~22: every count within 5 sd
    assert min(counts.values()) > 390 and max(counts.values()) < 610, counts


def test_color_jitter_equals_its_adjustments_applied_in_the_drawn_order():
    """Reference: draw as the docstring says and apply dm-pix's four adjustments one after another."""
    image = float_image(16, seed=5)
    strengths = (0.8, 0.8, 0.8, 0.2)
    jitter = jax.jit(lambda key: augment_ops.color_jitter(key, image, *strengths))
    for seed in range(12):
        key = jax.random.PRNGKey(seed)
        u = np.asarray(jax.random.uniform(key, (8,)))
        adjustments = [
            (augment.pix.adjust_brightness, -0.8 + 1.6 * u[0]),
            (augment.pix.adjust_contrast, 0.2 + 1.6 * u[1]),
            (augment.pix.adjust_saturation, 0.2 + 1.6 * u[2]),
            (augment.pix.adjust_hue, -0.2 + 0.4 * u[3]),
        ]
        expected = image
        for index in np.argsort(u[4:8]):
            adjust, amount = adjustments[index]
            expected = jnp.clip(adjust(expected, amount), 0.0, 1.0)
        np.testing.assert_allclose(jitter(key), expected, atol=2e-6, err_msg=f"seed {seed}")


def test_adjust_saturation_equals_dm_pix():
    image = jax.random.uniform(KEY, (16, 16, 3)).at[:2].set(0.0).at[2:4].set(0.5).at[4:6, :, 0].set(1.0)
    for factor in (0.0, 0.3, 1.0, 1.7, 5.0):
        np.testing.assert_allclose(
            augment_ops.adjust_saturation(image, factor), augment.pix.adjust_saturation(image, factor), atol=1e-6
        )


def test_randaugment_draws_every_op_and_sign_equally_often():
    indices, signs = jax.vmap(lambda key: randaugment_module.randaugment_draws(key, 2))(jax.random.split(KEY, 7000))
    counts = np.bincount(np.asarray(indices).ravel(), minlength=len(randaugment_module.RANDAUGMENT_OPS))
    assert len(counts) == 14 and counts.sum() == 14000
    assert counts.min() > 870 and counts.max() < 1130, counts  # 1000 expected, sd ~31
    assert set(np.unique(signs)) == {-1.0, 1.0} and abs(float(np.mean(signs == 1.0)) - 0.5) < 0.02


def test_randaugment_equals_its_drawn_ops_applied_one_after_another():
    image = float_image(16, seed=2)
    randaugment = jax.jit(lambda key: randaugment_module.randaugment(key, image, 3, 7.0))
    op = jax.jit(randaugment_module.randaugment_op, static_argnums=(0, 2))
    drawn = set()
    for seed in range(24):
        key = jax.random.PRNGKey(seed)
        indices, signs = randaugment_module.randaugment_draws(key, 3)
        expected = image
        for index, sign in zip(np.asarray(indices), np.asarray(signs), strict=True):
            expected = op(randaugment_module.RANDAUGMENT_OPS[index], expected, 7.0, sign)
            drawn.add(randaugment_module.RANDAUGMENT_OPS[index])
        np.testing.assert_allclose(randaugment(key), expected, atol=1e-5, err_msg=f"seed {seed}")
    assert {"rotate", "equalize"} & drawn and len(drawn) >= 10  # pixel and geometric layers both checked


@pytest.mark.parametrize("name", ["rotate", "shear_x", "shear_y", "translate_x", "translate_y"])
def test_affine_warp_equals_dm_pix_affine_transform(name):
    image = jnp.asarray(np.random.default_rng(4).random((12, 20, 3)), jnp.float32)  # not square
    for sign in (-1.0, 1.0):
        matrix, offset = randaugment_module._GEOMETRIC_OPS[name](image.shape, 0.7, jnp.asarray(sign))
        expected = augment.pix.affine_transform(image, matrix, offset=offset, mode="constant", cval=0.5)
        np.testing.assert_allclose(
            randaugment_module.affine_warp(image, matrix, offset), expected, atol=1e-5, err_msg=name
        )


@pytest.mark.parametrize("shape", [(32, 32, 3), (24, 40, 3), (3, 3, 1)])
def test_banded_blur_equals_dm_pix_on_the_reflect_padded_image(shape):
    image = jnp.asarray(np.random.default_rng(6).random(shape), jnp.float32)
    size = augment_ops.blur_kernel_size(min(shape[:2]))
    radius = size // 2
    padded = jnp.pad(image, ((radius, radius), (radius, radius), (0, 0)), mode="reflect")
    for sigma in (0.1, 1.0, 2.0):
        expected = augment.pix.gaussian_blur(padded, sigma, size, padding="VALID")
        np.testing.assert_allclose(augment_ops.gaussian_blur(KEY, image, (sigma, sigma)), expected, atol=1e-5)
