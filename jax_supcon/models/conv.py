"""Strided convolutions whose backward pass suits XLA:CPU; the same numbers as `lax.conv_general_dilated`.

XLA differentiates a strided convolution into an input-gradient convolution with a dilated
(zero-interleaved) input, which XLA:CPU runs with its own slow kernel: in the ResNet-18 CIFAR step
the three stride-2 3x3 convolutions' input gradients took about 200 ms of 2.4 s. Here, on CPU:

- a strided k x k convolution keeps its forward pass, and its input gradient becomes one stride-1
  convolution of the output gradient with a sub-pixel kernel (each of the s*s output phases reads
  the taps of the kernel that land on it) followed by depth-to-space, which XLA hands to YNNPACK;
- a strided 1x1 convolution without padding is a strided slice and a 1x1 convolution, so its weight
  gradient transposes a quarter of the activations and its input gradient is a zero-interleaving pad.

Parameters keep their layout (HWIO), so checkpoints do not depend on the backend. Anything else
(other layouts, dilation, groups, accelerators) goes to `lax.conv_general_dilated` unchanged.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import lax

_LAYOUT = ("NHWC", "HWIO", "NHWC")


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
        jax.default_backend() != "cpu"
        or lhs.ndim != 4
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
    """d(conv(x, w))/dx applied to `dy`, as a stride-1 convolution of `dy` plus depth-to-space.

    With x padded to xp, y[i] = sum_a xp[s*i + a] w[a], so the gradient at padded position
    p = s*m + r is sum_t dy[m - t] w[r + s*t]: for each phase r a stride-1 convolution of dy
    with the taps w[r], w[r + s], ... All s*s phases are one convolution with s*s*C_in outputs.
    """
    (sh, sw), (kh, kw, c_in, c_out) = strides, w.shape
    (lo_h, hi_h), (lo_w, hi_w) = padding
    n, h, width = x_shape[0], x_shape[1], x_shape[2]
    taps_h, taps_w = -(-kh // sh), -(-kw // sw)
    phases_h, phases_w = -(-(h + lo_h + hi_h) // sh), -(-(width + lo_w + hi_w) // sw)
    # kernel[u, v, o, (rh, rw, i)] = w[rh + sh * (taps_h - 1 - u), rw + sw * (taps_w - 1 - v), i, o]
    padded = jnp.pad(w, ((0, sh * taps_h - kh), (0, sw * taps_w - kw), (0, 0), (0, 0)))
    padded = padded.reshape(taps_h, sh, taps_w, sw, c_in, c_out)[::-1, :, ::-1]
    kernel = padded.transpose(0, 2, 5, 1, 3, 4).reshape(taps_h, taps_w, c_out, sh * sw * c_in)
    dy = jnp.pad(
        dy,
        (
            (0, 0),
            (taps_h - 1, max(0, phases_h - dy.shape[1])),
            (taps_w - 1, max(0, phases_w - dy.shape[2])),
            (0, 0),
        ),
    )
    out = _conv(dy, kernel.astype(dy.dtype), (1, 1), ((0, 0), (0, 0)), precision)[:, :phases_h, :phases_w]
    out = out.reshape(n, phases_h, phases_w, sh, sw, c_in).transpose(0, 1, 3, 2, 4, 5)
    out = out.reshape(n, phases_h * sh, phases_w * sw, c_in)
    return out[:, lo_h : lo_h + h, lo_w : lo_w + width]
