"""On-device augmentation with dm-pix, run inside the jitted step.

Each example and view gets its own key (split from the step's key), and the per-example recipe is
vmapped, so the views depend only on (key, global example index), not on the device count.

Random-apply is a `jnp.where` on a drawn coin and a RandAugment layer a `lax.switch` on a drawn
index; under `vmap` both compute every branch and select, so there is no data-dependent control
flow. What that costs is kept small where it matters: the jitter's random order is a fixed
sequence of 12 adjustments (not 4 positions x 4 adjustments), each applied where the image's
order puts it (`JITTER_SEQUENCE`); the five geometric RandAugment ops share one bilinear warp per
layer (`affine_warp`: 4 gathers per pixel); the Gaussian blur is two matmuls with a per-image
banded matrix (`gaussian_blur`) instead of a grouped convolution. Probabilities and strengths
are Python numbers from the config, so an op at probability 0 (or strength 0) is left out of the
program and is exactly the identity.

A view is: random-resized crop (skipped for host-cropped `[B, V, H, W, 3]` input), horizontal
flip, RandAugment, colour jitter (random order), grayscale, Gaussian blur, solarize, normalise.
The config's flat fields describe every view; `view1`, `view2`, ... sub-configs override some of
them for one view (`view_config`). Recipes and field defaults: `jax_supcon.config.augment_config`.
"""

from __future__ import annotations

import functools

import dm_pix as pix
import jax
import jax.numpy as jnp
import ml_collections

from jax_supcon.data.augment_ops import (
    Image,
    color_jitter,
    gaussian_blur,
    grayscale,
    normalize,
    random_apply,
    random_resized_crop,
    solarize,
    to_float,
)
from jax_supcon.data.randaugment import randaugment
from jax_supcon.data.recipes import resolve_view as view_config  # one view's concrete config


def _identity_crop(cfg: ml_collections.ConfigDict) -> bool:
    return tuple(cfg.crop_scale) == (1.0, 1.0) and tuple(cfg.crop_ratio) == (1.0, 1.0)


def augment_image(key: jax.Array, image: Image, cfg: ml_collections.ConfigDict, *, crop: bool = True) -> Image:
    """One random view of one float image in [0, 1], normalised, with one view's (flat) config.

    Order: crop (unless `crop=False` or scale and ratio are both (1, 1)), flip, RandAugment,
    colour jitter, grayscale, blur, solarize, normalise. Every op and coin has its own key or
    draw whether or not it is enabled, so turning one op on or off leaves the others' draws alone.
    """
    k_crop, k_randaug, k_jitter, k_blur, k_coins = jax.random.split(key, 5)
    flip_coin, jitter_coin, gray_coin, blur_coin, solarize_coin = jax.random.uniform(k_coins, (5,))
    if crop and not _identity_crop(cfg):
        image = random_resized_crop(k_crop, image, tuple(cfg.crop_scale), tuple(cfg.crop_ratio))
    image = random_apply(flip_coin, cfg.flip_prob, pix.flip_left_right, image)
    image = randaugment(k_randaug, image, cfg.randaugment_num_ops, cfg.randaugment_magnitude)
    jitter = functools.partial(
        color_jitter,
        k_jitter,
        brightness=cfg.brightness,
        contrast=cfg.contrast,
        saturation=cfg.saturation,
        hue=cfg.hue,
    )
    image = random_apply(jitter_coin, cfg.jitter_prob, jitter, image)
    image = random_apply(gray_coin, cfg.grayscale_prob, grayscale, image)
    blur = functools.partial(gaussian_blur, k_blur, sigma=tuple(cfg.blur_sigma))
    image = random_apply(blur_coin, cfg.blur_prob, blur, image)
    image = random_apply(solarize_coin, cfg.solarize_prob, solarize, image)
    return normalize(image, cfg)


def augment_views(key: jax.Array, images: jax.Array, cfg: ml_collections.ConfigDict, num_views: int) -> jax.Array:
    """uint8 images -> `[batch, views, H, W, C]` float32 augmented, normalised views.

    `images` is `[batch, H, W, C]` (each view is random-resized-cropped here) or
    `[batch, num_views, H, W, C]` (views already randomly cropped on the host: no crop here).
    View `v` uses `view_config(cfg, v)`; example `b` and view `v` use key `split(key)[b * num_views + v]`.
    """
    if images.ndim == 5:
        if images.shape[1] != num_views:
            raise ValueError(
                f"host-cropped images have {images.shape[1]} views (axis 1), expected num_views={num_views}"
            )
        crop = False
    elif images.ndim == 4:
        crop = True
    else:
        raise ValueError(f"images must be [B, H, W, C] or [B, V, H, W, C], got shape {images.shape}")
    batch = images.shape[0]
    keys = jax.random.split(key, batch * num_views)
    keys = keys.reshape((batch, num_views) + keys.shape[1:])
    images = to_float(images)
    configs = [view_config(cfg, view) for view in range(num_views)]
    per_image = functools.partial(augment_image, crop=crop)
    if all(c == configs[0] for c in configs):  # one program over examples and views
        over_views = jax.vmap(functools.partial(per_image, cfg=configs[0]), in_axes=(0, None if crop else 0))
        return jax.vmap(over_views)(keys, images)
    views = [
        jax.vmap(functools.partial(per_image, cfg=view_cfg))(keys[:, view], images[:, view] if not crop else images)
        for view, view_cfg in enumerate(configs)
    ]
    return jnp.stack(views, axis=1)


def preprocess_eval(images: jax.Array, cfg: ml_collections.ConfigDict) -> jax.Array:
    """Deterministic evaluation view: scale to [0, 1] and normalise."""
    return normalize(to_float(images), cfg)
