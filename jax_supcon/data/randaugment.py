"""RandAugment (Cubuk et al. 2020) on the device, with timm's op set and ranges. A layer's op and
direction are drawn per image: the pixel ops are a `lax.switch` on the drawn index and the five
geometric ops share one bilinear warp (`affine_warp`), so under `vmap` every branch is computed
and selected, with no data-dependent control flow. Used by `augment.augment_image`."""

from __future__ import annotations

import math
from collections.abc import Callable

import dm_pix as pix
import jax
import jax.numpy as jnp

from jax_supcon.data.augment_ops import Image, grayscale

GEOMETRIC_FILL = 0.5  # grey fill outside rotated / sheared / translated images, as timm's (128, 128, 128)
RANDAUGMENT_MAX_MAGNITUDE = 10.0  # magnitudes are on timm's 0..10 scale


# RandAugment ops on [0, 1] images. `m` is the magnitude over its maximum (M / 10, static) and
# `sign` a traced +-1 for the ops whose direction is random. Ranges follow timm's `rand_augment_ops`.


def _autocontrast(image: Image, m: float, sign: jax.Array) -> Image:
    """Stretch each channel to [0, 1] (constant channels are left alone); no magnitude."""
    lo = image.min(axis=(0, 1), keepdims=True)
    hi = image.max(axis=(0, 1), keepdims=True)
    span = hi - lo
    return jnp.where(span > 0, (image - lo) / jnp.where(span > 0, span, 1.0), image)


def _equalize_channel(levels: jax.Array) -> jax.Array:
    """PIL `ImageOps.equalize` of one channel of 0..255 integer levels (any shape)."""
    flat = levels.reshape(-1)
    hist = jnp.zeros(256, jnp.int32).at[flat].add(1)
    step = (flat.size - hist[flat.max()]) // 255
    lut = (jnp.cumsum(hist) - hist + step // 2) // jnp.maximum(step, 1)
    return jnp.where(step > 0, jnp.clip(lut, 0, 255)[flat], flat).reshape(levels.shape)


def equalize(image: Image) -> Image:
    """Histogram equalisation per channel on 256 levels, as PIL's `ImageOps.equalize`."""
    levels = jnp.round(jnp.clip(image, 0.0, 1.0) * 255).astype(jnp.int32)
    out = jax.vmap(_equalize_channel, in_axes=-1, out_axes=-1)(levels)
    return out.astype(image.dtype) / 255.0


def _solarize(image: Image, m: float, sign: jax.Array) -> Image:
    """Solarize at threshold 256 - 256 m on the 0..255 scale (m = 0: identity)."""
    return pix.solarize(image, (1.0 - m) * 256.0 / 255.0)


def _blend(degenerate: Image, image: Image, factor: jax.Array) -> Image:
    """PIL `ImageEnhance`: `degenerate + factor * (image - degenerate)`."""
    return degenerate + factor * (image - degenerate)


def _color(image: Image, m: float, sign: jax.Array) -> Image:
    """PIL Color (saturation), factor 1 +- 0.9 m: blend with the grayscale image."""
    return _blend(grayscale(image), image, 1.0 + sign * 0.9 * m)


def _posterize(image: Image, m: float, sign: jax.Array) -> Image:
    """Keep the 8 - int(4 m) most significant bits of each 0..255 level (8 bits at m = 0)."""
    shift = int(m * 4)
    levels = jnp.round(jnp.clip(image, 0.0, 1.0) * 255).astype(jnp.int32)
    return ((levels >> shift) << shift).astype(image.dtype) / 255.0


def _contrast(image: Image, m: float, sign: jax.Array) -> Image:
    """PIL Contrast, factor 1 +- 0.9 m: blend with the mean grey level."""
    return _blend(jnp.mean(grayscale(image)[..., 0]), image, 1.0 + sign * 0.9 * m)


def _brightness(image: Image, m: float, sign: jax.Array) -> Image:
    """PIL Brightness, factor 1 +- 0.9 m: blend with black."""
    return image * (1.0 + sign * 0.9 * m)


def _sharpness(image: Image, m: float, sign: jax.Array) -> Image:
    """PIL Sharpness, factor 1 +- 0.9 m: blend with the 3x3 smoothed image (border pixels kept)."""
    height, width = image.shape[0], image.shape[1]
    padded = jnp.pad(image, ((1, 1), (1, 1), (0, 0)), mode="edge")
    neighbours = sum(padded[dy : dy + height, dx : dx + width] for dy in range(3) for dx in range(3))
    smooth = (neighbours + 4 * image) / 13.0  # kernel [[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13
    rows = jnp.arange(height)[:, None, None]
    cols = jnp.arange(width)[None, :, None]
    interior = (rows > 0) & (rows < height - 1) & (cols > 0) & (cols < width - 1)
    return _blend(jnp.where(interior, smooth, image), image, 1.0 + sign * 0.9 * m)


# Geometric ops are (matrix, offset) pairs for `dm_pix.affine_transform` (pull resampling: the
# output pixel (row, col, channel) reads the input at matrix @ (row, col, channel) + offset), so a
# RandAugment layer selects one pair and resamples once, whichever geometric op it drew.
Affine = tuple[jax.Array, jax.Array]


def _about_centre(shape: tuple[int, ...], matrix: jax.Array) -> Affine:
    """`matrix` applied about the image centre (as `dm_pix.rotate` does)."""
    centre = (jnp.asarray(shape, jnp.float32) - 1.0) / 2.0
    return matrix, centre - matrix @ centre


def _rotate(shape: tuple[int, ...], m: float, sign: jax.Array) -> Affine:
    """Rotate by +-30 m degrees about the centre (`dm_pix.rotate`'s matrix)."""
    angle = sign * m * math.radians(30.0)
    c, s = jnp.cos(angle), jnp.sin(angle)
    return _about_centre(shape, jnp.array([[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]]))


def _shear_x(shape: tuple[int, ...], m: float, sign: jax.Array) -> Affine:
    """Shear along x (columns) by +-0.3 m about the centre."""
    return _about_centre(shape, jnp.eye(3).at[1, 0].set(sign * 0.3 * m))


def _shear_y(shape: tuple[int, ...], m: float, sign: jax.Array) -> Affine:
    """Shear along y (rows) by +-0.3 m about the centre."""
    return _about_centre(shape, jnp.eye(3).at[0, 1].set(sign * 0.3 * m))


def _translate_x(shape: tuple[int, ...], m: float, sign: jax.Array) -> Affine:
    """Translate along x by +-0.45 m of the width (timm's TranslateXRel)."""
    return jnp.eye(3), jnp.zeros(3).at[1].set(-sign * 0.45 * m * shape[1])


def _translate_y(shape: tuple[int, ...], m: float, sign: jax.Array) -> Affine:
    """Translate along y by +-0.45 m of the height (timm's TranslateYRel)."""
    return jnp.eye(3), jnp.zeros(3).at[0].set(-sign * 0.45 * m * shape[0])


_PIXEL_OPS: dict[str, Callable[[Image, float, jax.Array], Image]] = {
    "identity": lambda image, m, sign: image,
    "autocontrast": _autocontrast,
    "equalize": lambda image, m, sign: equalize(image),
    "solarize": _solarize,
    "color": _color,
    "posterize": _posterize,
    "contrast": _contrast,
    "brightness": _brightness,
    "sharpness": _sharpness,
}
_GEOMETRIC_OPS: dict[str, Callable[[tuple[int, ...], float, jax.Array], Affine]] = {
    "rotate": _rotate,
    "shear_x": _shear_x,
    "shear_y": _shear_y,
    "translate_x": _translate_x,
    "translate_y": _translate_y,
}
RANDAUGMENT_OPS = (*_PIXEL_OPS, *_GEOMETRIC_OPS)


def affine_warp(image: Image, matrix: jax.Array, offset: jax.Array, cval: float = GEOMETRIC_FILL) -> Image:
    """`dm_pix.affine_transform(image, matrix, offset=offset, mode="constant", cval=cval)` for a map
    that leaves the channel axis alone (`matrix[2] = (0, 0, 1)`, `matrix[:2, 2] = 0`, `offset[2] = 0`),
    as every geometric RandAugment op is: the same bilinear pull resampling, and a pixel read
    from outside the image is `cval`. dm-pix interpolates over the channel axis too (8 gathers
    per value); here each output pixel gathers its 4 neighbours' channels.
    """
    height, width, channels = image.shape
    rows, cols = jnp.meshgrid(
        jnp.arange(height, dtype=jnp.float32), jnp.arange(width, dtype=jnp.float32), indexing="ij"
    )
    y = matrix[0, 0] * rows + matrix[0, 1] * cols + offset[0]
    x = matrix[1, 0] * rows + matrix[1, 1] * cols + offset[1]
    y0, x0 = jnp.floor(y), jnp.floor(x)
    wy, wx = (y - y0)[..., None], (x - x0)[..., None]
    y0i, y1i = (jnp.clip(v, 0, height - 1).astype(jnp.int32) for v in (y0, jnp.ceil(y)))
    x0i, x1i = (jnp.clip(v, 0, width - 1).astype(jnp.int32) for v in (x0, jnp.ceil(x)))
    flat = image.reshape(height * width, channels)

    def at(yi, xi):
        return flat[yi * width + xi]

    top = (1 - wx) * at(y0i, x0i) + wx * at(y0i, x1i)
    bottom = (1 - wx) * at(y1i, x0i) + wx * at(y1i, x1i)
    inside = (y >= 0) & (y <= height - 1) & (x >= 0) & (x <= width - 1)
    return jnp.where(inside[..., None], (1 - wy) * top + wy * bottom, cval).astype(image.dtype)


def _affine(image: Image, transform: Affine) -> Image:
    matrix, offset = transform
    return affine_warp(image, matrix, offset)


def randaugment_op(name: str, image: Image, magnitude: float, sign: float | jax.Array = 1.0) -> Image:
    """One RandAugment op (`RANDAUGMENT_OPS`) at `magnitude` (0..10) in direction `sign`, clipped to [0, 1]."""
    m = float(magnitude) / RANDAUGMENT_MAX_MAGNITUDE
    sign = jnp.asarray(sign, image.dtype)
    if name in _GEOMETRIC_OPS:
        out = _affine(image, _GEOMETRIC_OPS[name](image.shape, m, sign))
    else:
        out = _PIXEL_OPS[name](image, m, sign)
    return jnp.clip(out, 0.0, 1.0).astype(image.dtype)


def randaugment_draws(key: jax.Array, num_ops: int) -> tuple[jax.Array, jax.Array]:
    """The ops a RandAugment of `num_ops` layers applies: per layer an index into
    `RANDAUGMENT_OPS`, uniform and with replacement, and a sign of +-1 with probability 1/2 each."""
    draws = jax.random.uniform(key, (num_ops, 2))
    indices = jnp.minimum(jnp.floor(draws[:, 0] * len(RANDAUGMENT_OPS)).astype(jnp.int32), len(RANDAUGMENT_OPS) - 1)
    return indices, jnp.where(draws[:, 1] < 0.5, -1.0, 1.0)


def randaugment(key: jax.Array, image: Image, num_ops: int = 2, magnitude: float = 9.0) -> Image:
    """RandAugment (Cubuk et al. 2020): `num_ops` ops drawn uniformly, with replacement, per image.

    The 14 ops of the paper, every one applied (no per-op coin; identity is one of them) at
    magnitude M = `magnitude` on timm's 0..10 scale, m = M / 10, with a random sign where the
    direction is free: identity; autocontrast; equalize; solarize at threshold 256 - 256m (of
    255); color, contrast, brightness and sharpness with PIL enhance factors 1 +- 0.9m; posterize
    to 8 - int(4m) bits; rotate +-30m degrees; shear x / y +-0.3m; translate x / y +-0.45m of the
    side. Geometric ops turn about the centre and fill with grey (0.5); the image is clipped to
    [0, 1] after each op. `num_ops=0` returns the image unchanged. A layer computes every pixel
    op and selects (they are cheap) and one warp for whichever geometric op it drew.
    """
    if num_ops <= 0:
        return image
    m = float(magnitude) / RANDAUGMENT_MAX_MAGNITUDE
    pixel_ops = [lambda x, sign, op=op: op(x, m, sign).astype(x.dtype) for op in _PIXEL_OPS.values()]
    indices, signs = randaugment_draws(key, num_ops)

    def layer(i: jax.Array, x: Image) -> Image:
        index, sign = indices[i], signs[i].astype(x.dtype)
        pixel = jax.lax.switch(jnp.minimum(index, len(pixel_ops) - 1), pixel_ops, x, sign)
        transforms = [op(x.shape, m, sign) for op in _GEOMETRIC_OPS.values()]
        geometric = jnp.clip(index - len(pixel_ops), 0, len(transforms) - 1)
        matrix = jnp.stack([t[0] for t in transforms])[geometric]
        offset = jnp.stack([t[1] for t in transforms])[geometric]
        out = jnp.where(index < len(pixel_ops), pixel, _affine(x, (matrix, offset)))
        return jnp.clip(out, 0.0, 1.0)

    return jax.lax.fori_loop(0, num_ops, layer, image)  # each op traced once, not once per layer
