"""The device ops a view is made of, each on one float image in [0, 1] (vmapped by
`augment.augment_views`): random-resized crop, random apply, colour jitter in a random order (a
fixed sequence of 12 adjustments, `JITTER_SEQUENCE`), grayscale, Gaussian blur (two banded
matmuls), solarize; and normalisation. RandAugment's ops are in `randaugment`."""

from __future__ import annotations

import math
from collections.abc import Callable

import dm_pix as pix
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

SOLARIZE_THRESHOLD = 0.5  # on [0, 1] images, as BYOL
BLUR_KERNEL_FRACTION = 0.1  # SimCLR: a kernel ~10% of the image side (23 px at 224)

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


def normalize(image: jax.Array, cfg: ml_collections.ConfigDict) -> jax.Array:
    """`(image - mean) / std` per channel, with the config's `mean` and `std`."""
    return (image - jnp.asarray(cfg.mean, jnp.float32)) / jnp.asarray(cfg.std, jnp.float32)


def to_float(images: jax.Array) -> jax.Array:
    """uint8 [0, 255] -> float32 [0, 1]."""
    return images.astype(jnp.float32) / 255.0
