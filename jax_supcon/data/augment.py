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
import math
from collections.abc import Callable

import dm_pix as pix
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jax_supcon.data.recipes import resolve_view as view_config  # one view's concrete config

SOLARIZE_THRESHOLD = 0.5  # on [0, 1] images, as BYOL
BLUR_KERNEL_FRACTION = 0.1  # SimCLR: a kernel ~10% of the image side (23 px at 224)
GEOMETRIC_FILL = 0.5  # grey fill outside rotated / sheared / translated images, as timm's (128, 128, 128)
RANDAUGMENT_MAX_MAGNITUDE = 10.0  # magnitudes are on timm's 0..10 scale

Image = jax.Array


def _between(u: jax.Array, lo: float, hi: float) -> jax.Array:
    """A uniform [0, 1) draw `u` mapped to [lo, hi)."""
    return lo + (hi - lo) * u


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
    u_area, u_ratio, u_y, u_x = jax.random.uniform(key, (4,))
    area = height * width * _between(u_area, *scale)
    aspect = jnp.exp(_between(u_ratio, math.log(ratio[0]), math.log(ratio[1])))
    crop_w = jnp.clip(jnp.sqrt(area * aspect), 1.0, width)
    crop_h = jnp.clip(jnp.sqrt(area / aspect), 1.0, height)
    y0 = u_y * (height - crop_h)
    x0 = u_x * (width - crop_w)
    zoom = jnp.stack([height / crop_h, width / crop_w])
    return jax.image.scale_and_translate(
        image, image.shape, (0, 1), zoom, -jnp.stack([y0, x0]) * zoom, method="linear", antialias=True
    )


def random_apply(coin: jax.Array, prob: float, fn: Callable[[Image], Image], image: Image) -> Image:
    """`fn(image)` if the uniform [0, 1) draw `coin` is below `prob` (a Python number), else `image`.

    At `prob` 0 or 1 the coin is not looked at and only one branch is computed.
    """
    if prob <= 0:
        return image
    if prob >= 1:
        return fn(image)
    return jnp.where(coin < prob, fn(image), image)


def grayscale(image: Image) -> Image:
    """Rec. 601 luma (0.2989 R + 0.587 G + 0.114 B) repeated over the three channels."""
    return pix.rgb_to_grayscale(image, keep_dims=True)


def solarize(image: Image, threshold: float = SOLARIZE_THRESHOLD) -> Image:
    """Invert the pixels at or above `threshold`: `x if x < threshold else 1 - x`."""
    return pix.solarize(image, threshold)


def adjust_saturation(image: Image, factor: jax.Array) -> Image:
    """`dm_pix.adjust_saturation`: HSV saturation times `factor`, clipped to [0, 1], in closed
    form. With hue and value V fixed each channel is linear in the saturation S, so a channel
    `c` becomes `V - (V - c) S' / S` with `S' / S = min(factor, V / (V - min))`: no HSV round trip,
    which is most of what the colour jitter costs."""
    value = jnp.max(image, axis=-1, keepdims=True)
    span = value - jnp.min(image, axis=-1, keepdims=True)
    scale = jnp.minimum(factor, value / jnp.where(span > 0, span, 1.0))
    return value - (value - image) * scale


def color_jitter(
    key: jax.Array,
    image: Image,
    brightness: float = 0.4,
    contrast: float = 0.4,
    saturation: float = 0.4,
    hue: float = 0.1,
) -> Image:
    """Brightness, contrast, saturation and hue in a random order per image, as SimCLR / BYOL.

    Brightness adds a delta in [-brightness, brightness] (dm-pix, BYOL); contrast and saturation
    scale by a factor in [max(0, 1 - s), 1 + s]; hue shifts by a fraction of the colour circle
    in [-hue, hue]. The image is clipped to [0, 1] after each adjustment; a strength of 0 leaves
    its adjustment out.
    """
    # One draw for everything: each threefry call costs XLA compile time under vmap.
    u = jax.random.uniform(key, (8,))
    ops = []
    if brightness > 0:
        delta = _between(u[0], -brightness, brightness)
        ops.append(lambda x: pix.adjust_brightness(x, delta))
    if contrast > 0:
        factor_c = _between(u[1], max(0.0, 1 - contrast), 1 + contrast)
        ops.append(lambda x: pix.adjust_contrast(x, factor_c))
    if saturation > 0:
        factor_s = _between(u[2], max(0.0, 1 - saturation), 1 + saturation)
        ops.append(lambda x: adjust_saturation(x, factor_s))
    if hue > 0:
        shift = _between(u[3], -hue, hue)
        ops.append(lambda x: pix.adjust_hue(x, shift))
    if not ops:
        return image
    order = jitter_order(u[4 : 4 + len(ops)])
    sequence = JITTER_SEQUENCE[len(ops)]
    for op_index, active in zip(sequence, sequence_positions(order, sequence), strict=True):
        adjusted = jnp.clip(ops[op_index](image), 0.0, 1.0).astype(image.dtype)
        image = jnp.where(active, adjusted, image)
    return image


# For n adjustments, a shortest sequence of adjustment indices that holds every order of them as a
# subsequence (n^2 - 2n + 4 long for n >= 3: 12 for 4, against 16 evaluations for a
# switch at each of the 4 positions). An image applies the entries that spell its own order.
JITTER_SEQUENCE = {
    1: (0,),
    2: (0, 1, 0),
    3: (0, 1, 2, 0, 1, 0, 2),
    4: (2, 3, 0, 1, 3, 2, 0, 3, 1, 0, 2, 3),
}


def jitter_order(u: jax.Array) -> jax.Array:
    """The random order of the jitter's adjustments: the argsort of uniform draws, so every
    permutation is equally likely."""
    return jnp.argsort(u)


def sequence_positions(order: jax.Array, sequence: tuple[int, ...]) -> list[jax.Array]:
    """Which entries of `sequence` spell `order`: the greedy, leftmost match of `order` as a
    subsequence (one traced bool per entry; exactly `len(order)` of them are True)."""
    matched = jnp.zeros((), jnp.int32)
    positions = []
    for op_index in sequence:
        wanted = order[jnp.minimum(matched, order.shape[0] - 1)]
        active = (matched < order.shape[0]) & (wanted == op_index)
        positions.append(active)
        matched = matched + active.astype(jnp.int32)
    return positions


def blur_kernel_size(side: int) -> int:
    """Odd Gaussian kernel size, ~`BLUR_KERNEL_FRACTION` of the image side and at least 3."""
    radius = max(1, round(side * BLUR_KERNEL_FRACTION / 2))
    return 2 * radius + 1


def _reflect_taps(length: int, radius: int) -> np.ndarray:
    """`[2 radius + 1, length, length]` 0/1: tap `k` of output `i` reads input `j`, with the
    borders reflected as `jnp.pad(mode="reflect")` does (`-1 -> 1`)."""
    source = np.pad(np.arange(length), radius, mode="reflect")
    taps = np.zeros((2 * radius + 1, length, length), np.float32)
    for k in range(2 * radius + 1):
        taps[k, np.arange(length), source[k : k + length]] = 1.0
    return taps


def gaussian_blur(key: jax.Array, image: Image, sigma: tuple[float, float] = (0.1, 2.0)) -> Image:
    """Separable Gaussian blur, sigma uniform in `sigma` (pixels), reflect-padded borders.

    The kernel size is static (`blur_kernel_size` of the shorter side), the kernel dm-pix's
    (`exp(-x^2 / 2 sigma^2)`, normalised). Each axis is one matmul with a banded `[side, side]`
    matrix holding this image's kernel (borders reflected into it): under `vmap`, batched matmuls
    instead of a grouped convolution with one kernel per image, which XLA runs far slower.
    """
    height, width = image.shape[0], image.shape[1]
    radius = blur_kernel_size(min(height, width)) // 2
    std = _between(jax.random.uniform(key), *sigma)
    x = jnp.arange(-radius, radius + 1, dtype=jnp.float32)
    kernel = jnp.exp(-(x**2) / (2.0 * std**2))
    kernel = kernel / jnp.sum(kernel)
    rows = jnp.tensordot(kernel, _reflect_taps(height, radius), axes=1)
    cols = rows if width == height else jnp.tensordot(kernel, _reflect_taps(width, radius), axes=1)
    blurred = jnp.einsum("ij,jwc->iwc", rows, image.astype(jnp.float32))
    return jnp.einsum("vw,iwc->ivc", cols, blurred).astype(image.dtype)


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


def normalize(image: jax.Array, cfg: ml_collections.ConfigDict) -> jax.Array:
    """`(image - mean) / std` per channel, with the config's `mean` and `std`."""
    return (image - jnp.asarray(cfg.mean, jnp.float32)) / jnp.asarray(cfg.std, jnp.float32)


def to_float(images: jax.Array) -> jax.Array:
    """uint8 [0, 255] -> float32 [0, 1]."""
    return images.astype(jnp.float32) / 255.0


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
