"""On-device augmentation with dm-pix, run inside the jitted step.

Each example and view gets its own key (split from the step's key), and the per-example recipe is
vmapped, so the views depend only on (key, global example index), not on the device count.
Random-apply is a `jnp.where` on a drawn coin: both branches are cheap colour ops.
"""

from __future__ import annotations

import dm_pix as pix
import jax
import jax.numpy as jnp
import ml_collections


def random_resized_crop(
    key: jax.Array,
    image: jax.Array,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> jax.Array:
    """Crop a random area fraction in `scale` with aspect ratio in `ratio`, resized back to HxW.

    dm-pix has no random-resized-crop; `jax.image.scale_and_translate` takes traced scale and
    offset, so the crop is one bilinear resample with no data-dependent shapes.
    """
    height, width = image.shape[0], image.shape[1]
    k_area, k_ratio, k_y, k_x = jax.random.split(key, 4)
    area = height * width * jax.random.uniform(k_area, minval=scale[0], maxval=scale[1])
    log_ratio = jax.random.uniform(k_ratio, minval=jnp.log(ratio[0]), maxval=jnp.log(ratio[1]))
    aspect = jnp.exp(log_ratio)
    crop_w = jnp.clip(jnp.sqrt(area * aspect), 1.0, width)
    crop_h = jnp.clip(jnp.sqrt(area / aspect), 1.0, height)
    y0 = jax.random.uniform(k_y) * (height - crop_h)
    x0 = jax.random.uniform(k_x) * (width - crop_w)
    zoom = jnp.stack([height / crop_h, width / crop_w])
    return jax.image.scale_and_translate(
        image, image.shape, (0, 1), zoom, -jnp.stack([y0, x0]) * zoom, method="linear", antialias=True
    )


def color_jitter(key: jax.Array, image: jax.Array, cfg: ml_collections.ConfigDict) -> jax.Array:
    """Brightness (additive delta), contrast, saturation, hue, as in SimCLR; image in [0, 1]."""
    k_b, k_c, k_s, k_h = jax.random.split(key, 4)
    image = pix.random_brightness(k_b, image, cfg.brightness)
    image = pix.random_contrast(k_c, image, 1 - cfg.contrast, 1 + cfg.contrast)
    image = pix.random_saturation(k_s, image, 1 - cfg.saturation, 1 + cfg.saturation)
    image = pix.random_hue(k_h, image, cfg.hue)
    return jnp.clip(image, 0.0, 1.0)


def normalize(image: jax.Array, cfg: ml_collections.ConfigDict) -> jax.Array:
    return (image - jnp.asarray(cfg.mean, jnp.float32)) / jnp.asarray(cfg.std, jnp.float32)


def to_float(images: jax.Array) -> jax.Array:
    """uint8 [0, 255] -> float32 [0, 1]."""
    return images.astype(jnp.float32) / 255.0


def augment_image(key: jax.Array, image: jax.Array, cfg: ml_collections.ConfigDict) -> jax.Array:
    """One random view of one float image in [0, 1]: crop, flip, jitter, grayscale, normalise."""
    k_crop, k_flip, k_jitter, k_apply_jitter, k_gray = jax.random.split(key, 5)
    image = random_resized_crop(k_crop, image, tuple(cfg.crop_scale), tuple(cfg.crop_ratio))
    image = pix.random_flip_left_right(k_flip, image, probability=cfg.flip_prob)
    jittered = color_jitter(k_jitter, image, cfg)
    image = jnp.where(jax.random.uniform(k_apply_jitter) < cfg.jitter_prob, jittered, image)
    gray = pix.rgb_to_grayscale(image, keep_dims=True) * jnp.ones_like(image)
    image = jnp.where(jax.random.uniform(k_gray) < cfg.grayscale_prob, gray, image)
    return normalize(image, cfg)


def augment_views(key: jax.Array, images: jax.Array, cfg: ml_collections.ConfigDict, num_views: int) -> jax.Array:
    """`[batch, H, W, C]` uint8 -> `[batch, views, H, W, C]` float32 augmented views."""
    batch = images.shape[0]
    keys = jax.random.split(key, batch * num_views).reshape(batch, num_views, -1)
    per_view = jax.vmap(augment_image, in_axes=(0, None, None))
    return jax.vmap(per_view, in_axes=(0, 0, None))(keys, to_float(images), cfg)


def preprocess_eval(images: jax.Array, cfg: ml_collections.ConfigDict) -> jax.Array:
    """Deterministic evaluation view: scale to [0, 1] and normalise."""
    return normalize(to_float(images), cfg)
