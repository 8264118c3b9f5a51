"""Shared by every feature loss: input checks, the anchor / contrast layout of a `[batch, views,
dim]` batch (view-major rows, extra contrast samples of a queue, the all-gathered set under
`shard_map`), and the driver that sums per-row terms over blocks of anchors (`chunk_size`)."""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

CONTRAST_MODES = ("all", "one")


Sums = tuple[jax.Array, ...]


# ----------------------------------------------------------------------------- validation


def check_common(
    features: jax.Array,
    labels: jax.Array | None,
    mask: jax.Array | None,
    contrast_mode: str,
    chunk_size: int | None,
    extra: Extra | None = None,
) -> None:
    """One-line ValueErrors for shapes and options, raised at trace time."""
    if features.ndim != 3:
        raise ValueError(f"features must be [batch, views, dim], got shape {tuple(features.shape)}")
    batch = features.shape[0]
    if labels is not None and mask is not None:
        raise ValueError("give labels or mask, not both")
    if labels is not None and (labels.ndim != 1 or labels.shape[0] != batch):
        raise ValueError(f"labels must be [batch]=[{batch}], got shape {tuple(labels.shape)}")
    if mask is not None and tuple(mask.shape) != (batch, batch):
        raise ValueError(f"mask must be [batch, batch]=[{batch}, {batch}], got shape {tuple(mask.shape)}")
    if contrast_mode not in CONTRAST_MODES:
        raise ValueError(f"contrast_mode={contrast_mode!r}; allowed: {CONTRAST_MODES}")
    if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size <= 0):
        raise ValueError(f"chunk_size={chunk_size!r} must be a positive int or None")
    check_extra(features, labels, mask, extra)


class Extra(NamedTuple):
    """What the contrast set takes from elsewhere, never anchors and without gradient: extra
    samples (a queue of past features) and/or the batch's own samples from another network."""

    features: jax.Array | None  # [K, dim]
    labels: jax.Array | None  # [K]; None for SimCLR (every entry a negative)
    valid: jax.Array | None  # [K] bool; None: all valid
    keys: jax.Array | None = None  # [batch, views, dim]: the batch's contrast samples (momentum keys)


def extra_samples(contrast_features, contrast_labels, contrast_mask, key_features=None) -> Extra | None:
    if contrast_features is None and (contrast_labels is not None or contrast_mask is not None):
        raise ValueError("contrast_labels and contrast_mask need contrast_features")
    if contrast_features is None and key_features is None:
        return None
    return Extra(contrast_features, contrast_labels, contrast_mask, key_features)


def check_extra(features, labels, mask, extra: Extra | None) -> None:
    if extra is None:
        return
    if extra.keys is not None and tuple(extra.keys.shape) != tuple(features.shape):
        shape = tuple(features.shape)
        raise ValueError(f"key_features must have the shape of features {shape}, got {tuple(extra.keys.shape)}")
    if extra.features is None:
        return
    dim = features.shape[-1]
    if extra.features.ndim != 2 or extra.features.shape[1] != dim:
        raise ValueError(f"contrast_features must be [K, dim]=[K, {dim}], got shape {tuple(extra.features.shape)}")
    size = extra.features.shape[0]
    if mask is not None:
        raise ValueError("contrast_features cannot be used with mask=: give labels (or neither, for SimCLR)")
    if (labels is None) != (extra.labels is None):
        raise ValueError("contrast_labels must be given exactly when labels are (SimCLR: neither)")
    if extra.labels is not None and tuple(extra.labels.shape) != (size,):
        raise ValueError(f"contrast_labels must be [K]=[{size}], got shape {tuple(extra.labels.shape)}")
    if extra.valid is not None and (tuple(extra.valid.shape) != (size,) or extra.valid.dtype != jnp.bool_):
        raise ValueError(f"contrast_mask must be bool [K]=[{size}], got {extra.valid.dtype} {tuple(extra.valid.shape)}")


def static_value(value) -> float | None:
    """A Python float for a concrete scalar (Python, numpy or a concrete jax array); None when traced."""
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, (np.ndarray, jax.Array)) and value.shape == () and not isinstance(value, jax.core.Tracer):
        return float(value)
    return None


def check_positive(name: str, value) -> None:
    static = static_value(value)
    if static is not None and not static > 0:
        raise ValueError(f"{name}={value} must be > 0")


def check_choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name}={value!r}; allowed: {allowed}")


# ----------------------------------------------------------------------------- row-block driver


def masked_logsumexp(x: jax.Array, where: jax.Array) -> jax.Array:
    """log-sum-exp over the last axis of the entries where `where`; -inf (with zero, not NaN,
    gradient) for a row with none."""
    row_max = jax.lax.stop_gradient(jnp.max(jnp.where(where, x, -jnp.inf), axis=-1, keepdims=True))
    row_max = jnp.where(jnp.isfinite(row_max), row_max, 0.0)
    total = jnp.sum(jnp.exp(jnp.where(where, x - row_max, -jnp.inf)), axis=-1)
    safe = jnp.where(total > 0, total, 1.0)
    return jnp.where(total > 0, jnp.log(safe) + row_max[..., 0], -jnp.inf)


def safe_sqrt(x: jax.Array) -> jax.Array:
    """sqrt with a zero (not infinite) gradient at 0."""
    positive = x > 1e-12
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, x, 1.0)), 0.0)


def squared_distances(anchors: jax.Array, contrast: jax.Array) -> jax.Array:
    """Squared Euclidean distances `[rows, contrast]` from one matmul."""
    cross = anchors @ contrast.T
    norms_a = jnp.sum(anchors * anchors, axis=-1)[:, None]
    norms_c = jnp.sum(contrast * contrast, axis=-1)[None, :]
    return jnp.maximum(norms_a + norms_c - 2.0 * cross, 0.0)


RowFn = Callable[[jax.Array, jax.Array, jax.Array, jax.Array], Sums]


class Layout(NamedTuple):
    """Who is where: the (gathered) contrast set and this device's anchors."""

    contrast: jax.Array  # [views * batch (+ K), dim], view-major, whole batch, then the extra samples
    contrast_ids: jax.Array | None  # [views * batch (+ K)] label (or example) ids; None with a mask
    ids: jax.Array | None  # [local_batch] ids of this device's examples
    anchors: jax.Array  # [num_anchors, dim]
    anchor_example: jax.Array  # [num_anchors] local example index
    anchor_column: jax.Array  # [num_anchors] the anchor's own row in `contrast`
    views: int
    contrast_valid: jax.Array | None = None  # [views * batch + K] bool with extra samples; None: all valid


def gathered(x, axis_name):
    return x if axis_name is None else jax.lax.all_gather(x, axis_name, axis=0, tiled=True)


def with_extra(lay: Layout, extra: Extra | None, axis_name: str | None) -> Layout:
    """`lay` with the extra samples appended to its contrast set (gathered over the devices, as
    the batch): positives of the anchors with their label, never of SimCLR's (negative ids)."""
    if extra is None or extra.features is None:
        return lay
    features = jax.lax.stop_gradient(gathered(extra.features, axis_name).astype(lay.contrast.dtype))
    size = features.shape[0]
    ids = -1 - jnp.arange(size) if extra.labels is None else gathered(extra.labels, axis_name)
    valid = jnp.ones((size,), bool) if extra.valid is None else gathered(extra.valid, axis_name)
    return lay._replace(
        contrast=jnp.concatenate([lay.contrast, features]),
        contrast_ids=jnp.concatenate([lay.contrast_ids, ids.astype(lay.contrast_ids.dtype)]),
        contrast_valid=jnp.concatenate([jnp.ones((lay.contrast.shape[0],), bool), valid]),
    )


def anchor_layout(features, labels, mask, contrast_mode, axis_name, extra: Extra | None = None) -> Layout:
    local = features.astype(jnp.promote_types(features.dtype, jnp.float32))
    local_batch, views, dim = local.shape
    if axis_name is None:
        full, offset = local, 0
    else:
        full = jax.lax.all_gather(local, axis_name, axis=0, tiled=True)
        offset = jax.lax.axis_index(axis_name) * local_batch
    batch = full.shape[0]
    if extra is not None and extra.keys is not None:  # the batch's contrast samples come from another network
        full = jax.lax.stop_gradient(gathered(extra.keys, axis_name).astype(local.dtype))
    contrast = jnp.transpose(full, (1, 0, 2)).reshape(views * batch, dim)
    ids = contrast_ids = None
    if mask is None:
        ids = offset + jnp.arange(local_batch) if labels is None else labels
        all_ids = ids if axis_name is None else jax.lax.all_gather(ids, axis_name, axis=0, tiled=True)
        contrast_ids = jnp.tile(all_ids, views)
    anchor_views = views if contrast_mode == "all" else 1
    anchors = jnp.transpose(local[:, :anchor_views], (1, 0, 2)).reshape(anchor_views * local_batch, dim)
    anchor_example = jnp.tile(jnp.arange(local_batch), anchor_views)
    anchor_column = jnp.repeat(jnp.arange(anchor_views), local_batch) * batch + offset + anchor_example
    lay = Layout(contrast, contrast_ids, ids, anchors, anchor_example, anchor_column, views)
    return with_extra(lay, extra, axis_name)


def row_blocks(per_row: tuple[jax.Array, ...], chunk_size: int) -> tuple[jax.Array, ...]:
    """Each array's rows as `[num_blocks, chunk_size, ...]`, the last block padded with zeros."""
    num_blocks = math.ceil(per_row[0].shape[0] / chunk_size)
    pad = num_blocks * chunk_size - per_row[0].shape[0]
    return tuple(
        jnp.pad(x, [(0, pad)] + [(0, 0)] * (x.ndim - 1)).reshape((num_blocks, chunk_size) + x.shape[1:])
        for x in per_row
    )


def sum_over_blocks(block_fn, per_anchor: tuple[jax.Array, ...], chunk_size: int | None, remat: bool) -> Sums:
    """`block_fn(*per_anchor_block, valid)` summed over blocks of `chunk_size` anchors (one block
    when None); `valid` marks the padding of the last block. `remat` recomputes each block in the
    backward pass (jax.checkpoint) instead of keeping its `[chunk, N]` intermediates."""
    num_anchors = per_anchor[0].shape[0]
    valid = jnp.ones((num_anchors,), bool)
    if chunk_size is None or chunk_size >= num_anchors:
        return block_fn(*per_anchor, valid)
    fn = jax.checkpoint(block_fn) if remat else block_fn

    def body(totals, block):
        return jax.tree.map(jnp.add, totals, fn(*block)), None

    xs = row_blocks((*per_anchor, valid), chunk_size)
    zeros = jax.tree.map(jnp.zeros_like, jax.eval_shape(block_fn, *(x[0] for x in xs)))
    return jax.lax.scan(body, zeros, xs)[0]


def anchor_sums(
    row_fn: RowFn,
    features: jax.Array,
    labels: jax.Array | None,
    mask: jax.Array | None,
    *,
    contrast_mode: str,
    chunk_size: int | None,
    axis_name: str | None,
    extra: Extra | None = None,
) -> Sums:
    """Sum `row_fn(anchor_z, contrast_z, positive, negative)` over anchor row blocks.

    `features`, `labels` and the rows of `mask` are this device's examples when `axis_name` is
    set (inside `shard_map`), the whole batch otherwise. The per-block sums are added over blocks
    and, when sharded, over devices (`psum`).
    """
    lay = anchor_layout(features, labels, mask, contrast_mode, axis_name, extra)
    num_contrast = lay.contrast.shape[0]

    def block_sums(block_anchors, block_example, block_column, block_valid):
        not_self = block_column[:, None] != jnp.arange(num_contrast)[None, :]
        if mask is None:
            related = lay.ids[block_example][:, None] == lay.contrast_ids[None, :]
        else:
            related = jnp.tile(mask[block_example] != 0, (1, lay.views))
        usable = not_self & block_valid[:, None]
        if lay.contrast_valid is not None:
            usable &= lay.contrast_valid[None, :]
        return row_fn(block_anchors, lay.contrast, related & usable, ~related & usable)

    sums = sum_over_blocks(block_sums, (lay.anchors, lay.anchor_example, lay.anchor_column), chunk_size, remat=True)
    return reduce_sums(sums, axis_name)


def reduce_sums(sums: Sums, axis_name: str | None) -> Sums:
    return sums if axis_name is None else jax.lax.psum(sums, axis_name)


def safe_mean(total: jax.Array, count: jax.Array) -> jax.Array:
    """total / count, and 0 (with zero gradient) when nothing was counted."""
    return jnp.where(count > 0, total / jnp.maximum(count, 1), 0.0)
