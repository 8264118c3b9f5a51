"""Strided convolutions whose backward pass suits XLA:CPU; the same numbers as `lax.conv_general_dilated`.

XLA differentiates a strided convolution into an input-gradient convolution with a dilated
(zero-interleaved) input, which XLA:CPU runs with its own slow kernel: in the ResNet-18 CIFAR step
the three stride-2 3x3 convolutions' input gradients took about 200 ms of 2.4 s. Here, on CPU:

- a strided k x k convolution keeps its forward pass, and its input gradient becomes s*s stride-1
  convolutions of the output gradient, one per output phase (every s-th row and column) with the
  kernel taps that land on it, interleaved afterwards; YNNPACK runs them, and together they do
  exactly the forward pass's work. The input gradients of ResNet-18 CIFAR's three 3x3/2
  convolutions (batch 128, 2 cores): 42/29/21 ms with XLA's kernel, 42/44/48 with one sub-pixel
  convolution (the previous formulation, which computes a padded kernel on padded positions),
  31/20/20 per phase. Inputs with fewer than MIN_PHASE_CHANNELS channels keep XLA's kernel;
- a strided 1x1 convolution without padding is a strided slice and a 1x1 convolution, so its weight
  gradient transposes a quarter of the activations and its input gradient is a zero-interleaving pad.

Parameters keep their layout (HWIO), so checkpoints do not depend on the backend. Anything else
(other layouts, dilation, groups) goes to `lax.conv_general_dilated` unchanged. A ResNet uses
this function only when built with `cpu_convolutions=True`, which `models.create_encoder` chooses
where `jax_supcon.platform.configure()` was called and JAX runs on the CPU.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import lax

_LAYOUT = ("NHWC", "HWIO", "NHWC")

# Below this many input channels each phase's convolution is too thin for YNNPACK to pay off, and
# XLA's own kernel is faster (3x3/2 from 8 channels on 16 x 56 x 56: 1.5 against 2.5 ms).
MIN_PHASE_CHANNELS = 16


def conv_general_dilated(
    lhs: jax.Array,
    rhs: jax.Array,
    window_strides: Sequence[int],
    padding,
    lhs_dilation: Sequence[int] | None = None,
    rhs_dilation: Sequence[int] | None = None,
    dimension_numbers=None,
    feature_group_count: int = 1,
    precision=None,
    **kwargs,
) -> jax.Array:
    """`lax.conv_general_dilated` with a CPU-friendly backward pass for strided 2-D NHWC convolutions."""
    strides = tuple(window_strides)
    dilations = tuple(lhs_dilation or (1, 1)) + tuple(rhs_dilation or (1, 1))
    if (
        lhs.ndim != 4
        or strides == (1, 1)
        or feature_group_count != 1
        or kwargs
        or dilations != (1, 1, 1, 1)
        or lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
        != lax.conv_dimension_numbers(lhs.shape, rhs.shape, _LAYOUT)
    ):
        return lax.conv_general_dilated(
            lhs,
            rhs,
            window_strides,
            padding,
            lhs_dilation=lhs_dilation,
            rhs_dilation=rhs_dilation,
            dimension_numbers=dimension_numbers,
            feature_group_count=feature_group_count,
            precision=precision,
            **kwargs,
        )
    if isinstance(padding, str):
        padding = lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], strides, padding)
    padding = tuple((int(lo), int(hi)) for lo, hi in padding)
    if rhs.shape[:2] == (1, 1) and padding == ((0, 0), (0, 0)):
        return _conv(lhs[:, :: strides[0], :: strides[1], :], rhs, (1, 1), padding, precision)
    if lhs.shape[-1] < MIN_PHASE_CHANNELS:
        return _conv(lhs, rhs, strides, padding, precision)  # lax differentiates it with its own kernel
    return _strided_conv(lhs, rhs, strides, padding, precision)


def _conv(x, w, strides, padding, precision):
    return lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=_LAYOUT, precision=precision)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _strided_conv(x, w, strides, padding, precision):
    return _conv(x, w, strides, padding, precision)


def _strided_conv_fwd(x, w, strides, padding, precision):
    return _conv(x, w, strides, padding, precision), (x, w)


def _strided_conv_bwd(strides, padding, precision, residuals, dy):
    x, w = residuals
    _, weight_vjp = jax.vjp(lambda kernel: _conv(x, kernel, strides, padding, precision), w)
    (dw,) = weight_vjp(dy)
    dx = strided_input_gradient(dy, w, x.shape, strides, padding, precision)
    return dx.astype(x.dtype), dw


_strided_conv.defvjp(_strided_conv_fwd, _strided_conv_bwd)


def strided_input_gradient(dy, w, x_shape, strides, padding, precision=None) -> jax.Array:
    """d(conv(x, w))/dx applied to `dy`, as one stride-1 convolution of `dy` per output phase.

    With x padded by `lo` to xp, y[m] = sum_a xp[s*m + a] w[a], so the gradient at padded position
    p = s*m + r is sum_t dy[m - t] w[r + s*t]: the inputs of one phase (every s-th row and column)
    take a stride-1 convolution of dy with the taps w[r], w[r + s], ... (flipped, in and out
    swapped). The s*s phase results interleave into dx. Each phase computes exactly its own
    positions, so the work equals the forward convolution's.
    """
    (sh, sw), c_in = strides, w.shape[2]
    (lo_h, _), (lo_w, _) = padding
    n, h, width = x_shape[0], x_shape[1], x_shape[2]
    rows_per_phase, cols_per_phase = -(-h // sh), -(-width // sw)
    rows = []
    for qh in range(sh):  # x rows qh, qh + sh, ... sit at padded positions of phase (qh + lo_h) % sh
        rh = (qh + lo_h) % sh
        phases = []
        for qw in range(sw):
            rw = (qw + lo_w) % sw
            taps = w[rh::sh, rw::sw]
            if taps.shape[0] == 0 or taps.shape[1] == 0:  # stride larger than the kernel: no tap reaches
                phases.append(jnp.zeros((n, rows_per_phase, cols_per_phase, c_in), dy.dtype))
                continue
            window, pad_h = _phase_window(dy, 1, taps.shape[0], (qh + lo_h - rh) // sh, rows_per_phase)
            window, pad_w = _phase_window(window, 2, taps.shape[1], (qw + lo_w - rw) // sw, cols_per_phase)
            kernel = taps[::-1, ::-1].transpose(0, 1, 3, 2).astype(dy.dtype)
            phases.append(_conv(window, kernel, (1, 1), (pad_h, pad_w), precision))
        rows.append(jnp.stack(phases, axis=3))
    dx = jnp.stack(rows, axis=2).reshape(n, rows_per_phase * sh, cols_per_phase * sw, c_in)
    return dx[:, :h, :width]


def _phase_window(dy, axis: int, num_taps: int, first: int, length: int):
    """The part of `dy` along `axis`, and its padding, whose VALID convolution with `num_taps` taps
    gives outputs m = first, ..., first + length - 1 (output m reads dy[m - num_taps + 1 : m + 1]).

    Negative padding is applied as a crop: XLA:CPU convolutions with negative low padding read
    outside their input (openxla/xla#48713, open for jaxlib 0.10.2).
    """
    before = num_taps - 1 - first
    after = length + num_taps - 1 - dy.shape[axis] - before
    window = lax.slice_in_dim(dy, max(0, -before), dy.shape[axis] - max(0, -after), axis=axis)
    return window, (max(0, before), max(0, after))
