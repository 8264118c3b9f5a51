"""Contrastive and metric-learning losses on the global batch.

Every feature loss takes `features` `[batch, views, dim]` (L2-normalised for the contrastive
ones) and either integer `labels` `[batch]`, a positive `mask` `[batch, batch]`, or neither
(then only the other views of the same example are positives: SimCLR). The `batch * views`
samples, ordered view-major (row `v * batch + i` is view `v` of example `i`), form the contrast
set; the anchors are all of them (`contrast_mode="all"`) or the first view of each example
(`"one"`).

All of them lay out anchors and contrast set the same way (`_layout`) and sum per-row terms over
blocks of anchors (`_sum_over_blocks`):
- `chunk_size` evaluates the anchors in blocks of that many rows, so the largest live tensor is
  `[chunk, batch * views]` in the forward and the backward pass instead of `[batch * views]^2`
  (the generic path recomputes each block under `jax.checkpoint`; the default SupCon options
  use a custom VJP that keeps one log-sum-exp per row, see `_default_supcon_sums`, and when
  every sample is an anchor, one gradient matmul per block instead of two, see
  `_symmetric_logsumexp_sum`);
- `axis_name` (set by `sharded`, which wraps the loss in `jax.shard_map`) makes each device
  take its own anchor rows against the all-gathered contrast set and `psum` the per-row sums:
  memory per device O(N^2 / devices), gradients exact (the all-gather's transpose is a
  reduce-scatter).
Computation is in float32 (float64 stays float64) whatever the input dtype.
"""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

CONTRAST_MODES = ("all", "one")
LOSS_TYPES = ("out", "in")
DENOMINATORS = ("all", "one_positive", "negatives_only")
TRIPLET_MINING = ("batch_all", "batch_hard", "semi_hard")

Sums = tuple[jax.Array, ...]


# ----------------------------------------------------------------------------- validation


def _check_common(
    features: jax.Array,
    labels: jax.Array | None,
    mask: jax.Array | None,
    contrast_mode: str,
    chunk_size: int | None,
    extra: _Extra | None = None,
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
    _check_extra(features, labels, mask, extra)


class _Extra(NamedTuple):
    """What the contrast set takes from elsewhere, never anchors and without gradient: extra
    samples (a queue of past features) and/or the batch's own samples from another network."""

    features: jax.Array | None  # [K, dim]
    labels: jax.Array | None  # [K]; None for SimCLR (every entry a negative)
    valid: jax.Array | None  # [K] bool; None: all valid
    keys: jax.Array | None = None  # [batch, views, dim]: the batch's contrast samples (momentum keys)


def _extra(contrast_features, contrast_labels, contrast_mask, key_features=None) -> _Extra | None:
    if contrast_features is None and (contrast_labels is not None or contrast_mask is not None):
        raise ValueError("contrast_labels and contrast_mask need contrast_features")
    if contrast_features is None and key_features is None:
        return None
    return _Extra(contrast_features, contrast_labels, contrast_mask, key_features)


def _check_extra(features, labels, mask, extra: _Extra | None) -> None:
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


def _static_value(value) -> float | None:
    """A Python float for a concrete scalar (Python, numpy or a concrete jax array); None when traced."""
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, (np.ndarray, jax.Array)) and value.shape == () and not isinstance(value, jax.core.Tracer):
        return float(value)
    return None


def _check_positive(name: str, value) -> None:
    static = _static_value(value)
    if static is not None and not static > 0:
        raise ValueError(f"{name}={value} must be > 0")


def _check_choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name}={value!r}; allowed: {allowed}")


# ----------------------------------------------------------------------------- row-block driver


def _masked_logsumexp(x: jax.Array, where: jax.Array) -> jax.Array:
    """log-sum-exp over the last axis of the entries where `where`; -inf (with zero, not NaN,
    gradient) for a row with none."""
    row_max = jax.lax.stop_gradient(jnp.max(jnp.where(where, x, -jnp.inf), axis=-1, keepdims=True))
    row_max = jnp.where(jnp.isfinite(row_max), row_max, 0.0)
    total = jnp.sum(jnp.exp(jnp.where(where, x - row_max, -jnp.inf)), axis=-1)
    safe = jnp.where(total > 0, total, 1.0)
    return jnp.where(total > 0, jnp.log(safe) + row_max[..., 0], -jnp.inf)


def _safe_sqrt(x: jax.Array) -> jax.Array:
    """sqrt with a zero (not infinite) gradient at 0."""
    positive = x > 1e-12
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, x, 1.0)), 0.0)


def _squared_distances(anchors: jax.Array, contrast: jax.Array) -> jax.Array:
    """Squared Euclidean distances `[rows, contrast]` from one matmul."""
    cross = anchors @ contrast.T
    norms_a = jnp.sum(anchors * anchors, axis=-1)[:, None]
    norms_c = jnp.sum(contrast * contrast, axis=-1)[None, :]
    return jnp.maximum(norms_a + norms_c - 2.0 * cross, 0.0)


RowFn = Callable[[jax.Array, jax.Array, jax.Array, jax.Array], Sums]


class _Layout(NamedTuple):
    """Who is where: the (gathered) contrast set and this device's anchors."""

    contrast: jax.Array  # [views * batch (+ K), dim], view-major, whole batch, then the extra samples
    contrast_ids: jax.Array | None  # [views * batch (+ K)] label (or example) ids; None with a mask
    ids: jax.Array | None  # [local_batch] ids of this device's examples
    anchors: jax.Array  # [num_anchors, dim]
    anchor_example: jax.Array  # [num_anchors] local example index
    anchor_column: jax.Array  # [num_anchors] the anchor's own row in `contrast`
    views: int
    contrast_valid: jax.Array | None = None  # [views * batch + K] bool with extra samples; None: all valid


def _gathered(x, axis_name):
    return x if axis_name is None else jax.lax.all_gather(x, axis_name, axis=0, tiled=True)


def _with_extra(lay: _Layout, extra: _Extra | None, axis_name: str | None) -> _Layout:
    """`lay` with the extra samples appended to its contrast set (gathered over the devices, as
    the batch): positives of the anchors with their label, never of SimCLR's (negative ids)."""
    if extra is None or extra.features is None:
        return lay
    features = jax.lax.stop_gradient(_gathered(extra.features, axis_name).astype(lay.contrast.dtype))
    size = features.shape[0]
    ids = -1 - jnp.arange(size) if extra.labels is None else _gathered(extra.labels, axis_name)
    valid = jnp.ones((size,), bool) if extra.valid is None else _gathered(extra.valid, axis_name)
    return lay._replace(
        contrast=jnp.concatenate([lay.contrast, features]),
        contrast_ids=jnp.concatenate([lay.contrast_ids, ids.astype(lay.contrast_ids.dtype)]),
        contrast_valid=jnp.concatenate([jnp.ones((lay.contrast.shape[0],), bool), valid]),
    )


def _layout(features, labels, mask, contrast_mode, axis_name, extra: _Extra | None = None) -> _Layout:
    local = features.astype(jnp.promote_types(features.dtype, jnp.float32))
    local_batch, views, dim = local.shape
    if axis_name is None:
        full, offset = local, 0
    else:
        full = jax.lax.all_gather(local, axis_name, axis=0, tiled=True)
        offset = jax.lax.axis_index(axis_name) * local_batch
    batch = full.shape[0]
    if extra is not None and extra.keys is not None:  # the batch's contrast samples come from another network
        full = jax.lax.stop_gradient(_gathered(extra.keys, axis_name).astype(local.dtype))
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
    lay = _Layout(contrast, contrast_ids, ids, anchors, anchor_example, anchor_column, views)
    return _with_extra(lay, extra, axis_name)


def _row_blocks(per_row: tuple[jax.Array, ...], chunk_size: int) -> tuple[jax.Array, ...]:
    """Each array's rows as `[num_blocks, chunk_size, ...]`, the last block padded with zeros."""
    num_blocks = math.ceil(per_row[0].shape[0] / chunk_size)
    pad = num_blocks * chunk_size - per_row[0].shape[0]
    return tuple(
        jnp.pad(x, [(0, pad)] + [(0, 0)] * (x.ndim - 1)).reshape((num_blocks, chunk_size) + x.shape[1:])
        for x in per_row
    )


def _sum_over_blocks(block_fn, per_anchor: tuple[jax.Array, ...], chunk_size: int | None, remat: bool) -> Sums:
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

    xs = _row_blocks((*per_anchor, valid), chunk_size)
    zeros = jax.tree.map(jnp.zeros_like, jax.eval_shape(block_fn, *(x[0] for x in xs)))
    return jax.lax.scan(body, zeros, xs)[0]


def _anchor_sums(
    row_fn: RowFn,
    features: jax.Array,
    labels: jax.Array | None,
    mask: jax.Array | None,
    *,
    contrast_mode: str,
    chunk_size: int | None,
    axis_name: str | None,
    extra: _Extra | None = None,
) -> Sums:
    """Sum `row_fn(anchor_z, contrast_z, positive, negative)` over anchor row blocks.

    `features`, `labels` and the rows of `mask` are this device's examples when `axis_name` is
    set (inside `shard_map`), the whole batch otherwise. The per-block sums are added over blocks
    and, when sharded, over devices (`psum`).
    """
    lay = _layout(features, labels, mask, contrast_mode, axis_name, extra)
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

    sums = _sum_over_blocks(block_sums, (lay.anchors, lay.anchor_example, lay.anchor_column), chunk_size, remat=True)
    return _reduce(sums, axis_name)


@functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
def _block_logsumexp_sum(anchors, contrast, weights, self_column, contrast_valid, temperature):
    """sum_i weights_i * log sum_{j != self_i, valid_j} exp(a_i . c_j / tau) for one block of
    anchors (`contrast_valid` None: every column valid).

    The backward pass keeps only the per-row log-sum-exp and recomputes the block's logits, so a
    block costs `[chunk, N]` memory once, with one elementwise pass and two matmuls for its gradient.
    """
    return _block_lse_forward(anchors, contrast, weights, self_column, contrast_valid, temperature)[0]


def _block_logits(anchors, contrast, self_column, temperature, contrast_valid=None):
    logits = (anchors @ contrast.T) / temperature
    excluded = self_column[:, None] == jnp.arange(contrast.shape[0])[None, :]
    if contrast_valid is not None:
        excluded |= ~contrast_valid[None, :]
    return jnp.where(excluded, -jnp.inf, logits)


def _block_lse_forward(anchors, contrast, weights, self_column, contrast_valid, temperature):
    lse = jax.nn.logsumexp(_block_logits(anchors, contrast, self_column, temperature, contrast_valid), axis=1)
    total = jnp.sum(jnp.where(weights > 0, weights * lse, 0.0))
    return total, (anchors, contrast, weights, self_column, contrast_valid, lse)


def _weighted_softmax(logits, lse, coefficient):
    """`coefficient_i * exp(logits_ij - lse_i)` over rows (broadcast `lse` and `coefficient` as
    `[rows, 1]`) or columns (`[1, cols]`); 0 where the coefficient is 0, so a row without positives
    (whose log-sum-exp is unused) cannot overflow into inf * 0."""
    used = coefficient > 0
    return jnp.where(used, jnp.exp(logits - jnp.where(used, lse, 0.0)) * coefficient, 0.0)


def _block_lse_backward(temperature, residuals, cotangent):
    anchors, contrast, weights, self_column, contrast_valid, lse = residuals
    logits = _block_logits(anchors, contrast, self_column, temperature, contrast_valid)
    softmax = _weighted_softmax(logits, lse[:, None], (weights * cotangent / temperature)[:, None])
    return softmax @ contrast, softmax.T @ anchors, None, None, None


_block_logsumexp_sum.defvjp(_block_lse_forward, _block_lse_backward)


def _map_over_blocks(fn, per_row: tuple[jax.Array, ...], chunk_size: int | None) -> jax.Array:
    """`fn(*rows)` for blocks of `chunk_size` rows (one block when None), concatenated over rows;
    the last block is padded with zeros (and rows past the end), the padding's output dropped."""
    num_rows = per_row[0].shape[0]
    if chunk_size is None or chunk_size >= num_rows:
        return fn(*per_row)
    out = jax.lax.map(lambda xs: fn(*xs), _row_blocks(per_row, chunk_size))
    return out.reshape((-1,) + out.shape[2:])[:num_rows]


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _symmetric_logsumexp_sum(contrast, weights, temperature, chunk_size):
    """sum_i weights_i * log sum_{j != i} exp(c_i . c_j / tau) when every sample is an anchor.

    The logits are then symmetric, so the gradient `G Z + G^T Z` of the row softmaxes `G` is one
    matmul `H Z` with `H_ij = G_ij + G_ji` computed elementwise from the same block of logits
    (`G_ji = w_j exp(s_ij - lse_j)`): no transposed `[N, N]` operand, which XLA runs at half the
    rate of a plain one. The backward keeps only the per-row log-sum-exp and recomputes each
    block's logits (XLA shares them with the forward pass when there is one block).
    """
    return _symmetric_lse_forward(contrast, weights, temperature, chunk_size)[0]


def _symmetric_lse_forward(contrast, weights, temperature, chunk_size):
    rows = jnp.arange(contrast.shape[0])

    def block_lse(block, block_rows):
        return jax.nn.logsumexp(_block_logits(block, contrast, block_rows, temperature), axis=1)

    lse = _map_over_blocks(block_lse, (contrast, rows), chunk_size)
    total = jnp.sum(jnp.where(weights > 0, weights * lse, 0.0))
    return total, (contrast, weights, lse)


def _symmetric_lse_backward(temperature, chunk_size, residuals, cotangent):
    contrast, weights, lse = residuals
    coefficient = weights * cotangent / temperature

    def block_gradient(block, block_rows, block_coefficient, block_lse):
        logits = _block_logits(block, contrast, block_rows, temperature)
        rows = _weighted_softmax(logits, block_lse[:, None], block_coefficient[:, None])
        columns = _weighted_softmax(logits, lse[None, :], coefficient[None, :])
        return (rows + columns) @ contrast

    rows = jnp.arange(contrast.shape[0])
    return _map_over_blocks(block_gradient, (contrast, rows, coefficient, lse), chunk_size), None


_symmetric_logsumexp_sum.defvjp(_symmetric_lse_forward, _symmetric_lse_backward)


def _default_supcon_sums(features, labels, *, temperature, contrast_mode, chunk_size, axis_name, extra=None) -> Sums:
    """(sum of L_out terms, anchors counted) for denominator "all" with labels (or SimCLR), any
    anchors, chunked and/or sharded: the same sums as `_supcon_rows`, computed faster.

    L_out(i) = LSE_{j != i}(s_ij) - (1/|P_i|) sum_p s_ip. The positive part needs no `[N, N]`
    work: sum_p z_i . z_p = z_i . (class_sum - z_i). Only the log-sum-exp runs over blocks.
    """
    lay = _layout(features, labels, None, contrast_mode, axis_name, extra)
    num_contrast = lay.contrast.shape[0]
    group = jnp.unique(lay.contrast_ids, return_inverse=True, size=num_contrast, fill_value=lay.contrast_ids.min())[1]
    group = group.reshape(num_contrast)
    counts = jnp.ones((num_contrast,), lay.contrast.dtype)
    if lay.contrast_valid is not None:
        counts = lay.contrast_valid.astype(lay.contrast.dtype)
    class_sum = jax.ops.segment_sum(lay.contrast * counts[:, None], group, num_segments=num_contrast)
    class_size = jax.ops.segment_sum(counts, group, num_segments=num_contrast)
    anchor_group = group[lay.anchor_column]
    num_positives = class_size[anchor_group] - 1
    counted = num_positives > 0
    # The anchor's own sample in the contrast set is itself, or its key with key_features.
    positive_dot = jnp.sum(lay.anchors * (class_sum[anchor_group] - lay.contrast[lay.anchor_column]), axis=1)
    mean_positive_logit = jnp.where(counted, positive_dot / (temperature * jnp.maximum(num_positives, 1)), 0.0)

    def block(anchors, column, weight, valid):
        return (_block_logsumexp_sum(anchors, lay.contrast, weight * valid, column, lay.contrast_valid, temperature),)

    weights = counted.astype(lay.contrast.dtype)
    if contrast_mode == "all" and axis_name is None and extra is None:  # the anchors are the contrast set
        lse_total = _symmetric_logsumexp_sum(lay.contrast, weights, temperature, chunk_size)
    else:
        (lse_total,) = _sum_over_blocks(block, (lay.anchors, lay.anchor_column, weights), chunk_size, remat=False)
    return _reduce((lse_total - mean_positive_logit.sum(), weights.sum()), axis_name)


def _reduce(sums: Sums, axis_name: str | None) -> Sums:
    return sums if axis_name is None else jax.lax.psum(sums, axis_name)


def _mean(total: jax.Array, count: jax.Array) -> jax.Array:
    """total / count, and 0 (with zero gradient) when nothing was counted."""
    return jnp.where(count > 0, total / jnp.maximum(count, 1), 0.0)


# ----------------------------------------------------------------------------- SupCon family


def _supcon_rows(anchors, contrast, positive, negative, *, temperature, loss_type, denominator) -> Sums:
    """Per-anchor SupCon terms of one row block: (sum of losses, number of anchors counted)."""
    logits = (anchors @ contrast.T) / temperature
    num_positives = positive.sum(axis=1)
    if denominator == "all":
        log_denominator = _masked_logsumexp(logits, positive | negative)[:, None]
    elif denominator == "one_positive":
        log_denominator = jnp.logaddexp(logits, _masked_logsumexp(logits, negative)[:, None])
    else:  # negatives_only
        log_denominator = _masked_logsumexp(logits, negative)[:, None]
    # An anchor with nothing in its denominator (no negative for "negatives_only") is not counted;
    # a finite stand-in keeps its +inf log-probabilities from turning the gradient into NaN.
    log_denominator = jnp.where(jnp.isfinite(log_denominator), log_denominator, 0.0)
    log_prob = jnp.where(positive, logits - log_denominator, 0.0)
    counted = num_positives > 0
    if denominator == "negatives_only":
        counted &= negative.any(axis=1)
    safe_count = jnp.maximum(num_positives, 1)
    if loss_type == "out":  # -1/|P| sum_p log(exp(s_p) / D_p)
        per_anchor = -jnp.sum(log_prob, axis=1) / safe_count
    else:  # -log(1/|P| sum_p exp(s_p) / D_p)
        per_anchor = -(_masked_logsumexp(log_prob, positive) - jnp.log(safe_count.astype(log_prob.dtype)))
    per_anchor = jnp.where(counted, per_anchor, 0.0)
    return per_anchor.sum(), counted.sum().astype(per_anchor.dtype)


def supcon_loss(
    features: jax.Array,
    labels: jax.Array | None = None,
    *,
    mask: jax.Array | None = None,
    temperature: float = 0.1,
    base_temperature: float | None = None,
    contrast_mode: str = "all",
    loss_type: str = "out",
    denominator: str = "all",
    chunk_size: int | None = None,
    axis_name: str | None = None,
    contrast_features: jax.Array | None = None,
    contrast_labels: jax.Array | None = None,
    contrast_mask: jax.Array | None = None,
    key_features: jax.Array | None = None,
) -> jax.Array:
    """Supervised contrastive loss (Khosla et al. 2020), or NT-Xent without labels and mask.

    Args:
      features: `[batch, views, dim]`, L2-normalised.
      labels: `[batch]` ints; samples with the anchor's label are its positives.
      mask: `[batch, batch]`, instead of labels: `mask[i, j] != 0` makes every view of example `j`
        a positive of every view of example `i` (asymmetric allowed; `mask[i, i] = 0` makes the
        other views of `i` negatives). Neither labels nor mask: SimCLR positives.
      temperature: tau > 0.
      base_temperature: scale the loss by `temperature / base_temperature` (the reference
        implementations use 0.07); None: no scaling.
      contrast_mode: "all" views are anchors, or only the first ("one").
      loss_type: "out" (the paper's L_out, the mean over positives outside the log) or "in"
        (L_in, inside the log).
      denominator: which samples the softmax of each positive `p` runs over, as in the official
        TF implementation: "all" (every sample but the anchor), "one_positive" (`p` and the
        negatives), "negatives_only" (the negatives).
      chunk_size: anchors per row block (memory O(chunk * N)); None: one block.
      axis_name: set by `sharded`: `features` are this device's rows of a batch sharded over it.
      contrast_features: `[K, dim]` extra contrast samples (a queue of past features, normalised
        like `features`): never anchors and no gradient; each is a positive of the anchors with
        its label and a negative of the others (always a negative without labels: SimCLR).
      contrast_labels: `[K]` their labels; required exactly when `labels` is given. Not with `mask`.
      contrast_mask: `[K]` bool; False entries are ignored (a queue still filling). None: all used.
      key_features: `[batch, views, dim]`, the batch's samples in the contrast set from another
        network (a momentum encoder's keys, as MoCo): anchors come from `features`, and each
        anchor's own key is excluded as the anchor itself is. No gradient flows into them.

    Returns:
      The mean over anchors that have at least one positive (and, for "negatives_only", one
      negative); 0 with zero gradient if none has.
    """
    extra = _extra(contrast_features, contrast_labels, contrast_mask, key_features)
    if axis_name is None:
        _check_common(features, labels, mask, contrast_mode, chunk_size, extra)
    _check_positive("temperature", temperature)
    _check_choice("loss_type", loss_type, LOSS_TYPES)
    _check_choice("denominator", denominator, DENOMINATORS)
    # The default options take the fast path; a traced temperature takes the general one.
    if (mask, loss_type, denominator) == (None, "out", "all") and _static_value(temperature) is not None:
        total, count = _default_supcon_sums(
            features,
            labels,
            temperature=_static_value(temperature),
            contrast_mode=contrast_mode,
            chunk_size=chunk_size,
            axis_name=axis_name,
            extra=extra,
        )
    else:
        row_fn = functools.partial(_supcon_rows, temperature=temperature, loss_type=loss_type, denominator=denominator)
        total, count = _anchor_sums(
            row_fn,
            features,
            labels,
            mask,
            contrast_mode=contrast_mode,
            chunk_size=chunk_size,
            axis_name=axis_name,
            extra=extra,
        )
    scale = 1.0 if base_temperature is None else temperature / base_temperature
    return scale * _mean(total, count)


def ntxent_loss(features: jax.Array, *, temperature: float = 0.5, **kwargs) -> jax.Array:
    """SimCLR's NT-Xent: `supcon_loss` with only the other views of an image as positives."""
    return supcon_loss(features, None, temperature=temperature, **kwargs)


# ----------------------------------------------------------------------------- metric learning


def _checked_anchor_sums(
    row_fn: RowFn, features, labels, mask, extra: _Extra | None, *, contrast_mode, chunk_size, axis_name
) -> Sums:
    """`_anchor_sums` of a metric loss, its inputs checked first (once, on the global shapes:
    inside `sharded`'s shard_map they were checked before it)."""
    if axis_name is None:
        _check_common(features, labels, mask, contrast_mode, chunk_size, extra)
    return _anchor_sums(
        row_fn,
        features,
        labels,
        mask,
        contrast_mode=contrast_mode,
        chunk_size=chunk_size,
        axis_name=axis_name,
        extra=extra,
    )


def _pair_rows(anchors, contrast, positive, negative, *, margin) -> Sums:
    distances_sq = _squared_distances(anchors, contrast)
    hinge = jnp.maximum(margin - _safe_sqrt(distances_sq), 0.0)
    return (
        jnp.sum(jnp.where(positive, distances_sq, 0.0)),
        positive.sum().astype(anchors.dtype),
        jnp.sum(jnp.where(negative, hinge * hinge, 0.0)),
        negative.sum().astype(anchors.dtype),
    )


def contrastive_pair_loss(
    features: jax.Array,
    labels: jax.Array | None = None,
    *,
    mask: jax.Array | None = None,
    margin: float = 1.0,
    contrast_mode: str = "all",
    chunk_size: int | None = None,
    axis_name: str | None = None,
    contrast_features: jax.Array | None = None,
    contrast_labels: jax.Array | None = None,
    contrast_mask: jax.Array | None = None,
    key_features: jax.Array | None = None,
) -> jax.Array:
    """Margin contrastive loss (Hadsell et al. 2006) over every ordered in-batch pair:

    mean over positive pairs of d^2 + mean over negative pairs of max(0, margin - d)^2,
    with d the Euclidean distance. Each mean is 0 when its set is empty. `contrast_*`: extra
    samples paired with every anchor, as in `supcon_loss`.
    """
    extra = _extra(contrast_features, contrast_labels, contrast_mask, key_features)
    _check_positive("margin", margin)
    sums = _checked_anchor_sums(
        functools.partial(_pair_rows, margin=margin),
        features,
        labels,
        mask,
        extra,
        contrast_mode=contrast_mode,
        chunk_size=chunk_size,
        axis_name=axis_name,
    )
    pos_total, pos_count, neg_total, neg_count = sums
    return _mean(pos_total, pos_count) + _mean(neg_total, neg_count)


def _triplet_rows(anchors, contrast, positive, negative, *, margin, mining) -> Sums:
    distances = _safe_sqrt(_squared_distances(anchors, contrast))
    if mining == "batch_hard":
        hardest_positive = jnp.max(jnp.where(positive, distances, -jnp.inf), axis=1)
        hardest_negative = jnp.min(jnp.where(negative, distances, jnp.inf), axis=1)
        counted = positive.any(axis=1) & negative.any(axis=1)
        gap = jnp.where(counted, hardest_positive - hardest_negative, 0.0)
        loss = jnp.where(counted, jnp.maximum(gap + margin, 0.0), 0.0)
        return loss.sum(), counted.sum().astype(loss.dtype)
    if mining == "semi_hard":  # TensorFlow Addons' triplet_semihard_loss, one (anchor, positive) at a time
        farther = negative[:, None, :] & (distances[:, None, :] > distances[:, :, None])  # [rows, p, n]
        nearest_farther = jnp.min(jnp.where(farther, distances[:, None, :], jnp.inf), axis=2)
        # No negative farther than the positive: the farthest negative (none at all: 0, TFA's self distance).
        farthest = jnp.max(jnp.where(negative, distances, -jnp.inf), axis=1, keepdims=True)
        farthest = jnp.where(negative.any(axis=1, keepdims=True), farthest, 0.0)
        chosen = jnp.where(farther.any(axis=2), nearest_farther, farthest)
        losses = jnp.where(positive, jnp.maximum(distances - chosen + margin, 0.0), 0.0)
        return losses.sum(), positive.sum().astype(losses.dtype)
    # batch_all: every (anchor, positive, negative); mean over the triplets with a non-zero loss.
    gaps = distances[:, :, None] - distances[:, None, :] + margin
    valid = positive[:, :, None] & negative[:, None, :]
    losses = jnp.where(valid, jnp.maximum(gaps, 0.0), 0.0)
    return losses.sum(), (losses > 0).sum().astype(losses.dtype)


def triplet_loss(
    features: jax.Array,
    labels: jax.Array | None = None,
    *,
    mask: jax.Array | None = None,
    margin: float = 0.2,
    mining: str = "batch_hard",
    contrast_mode: str = "all",
    chunk_size: int | None = None,
    axis_name: str | None = None,
    contrast_features: jax.Array | None = None,
    contrast_labels: jax.Array | None = None,
    contrast_mask: jax.Array | None = None,
    key_features: jax.Array | None = None,
) -> jax.Array:
    """Triplet loss max(0, d(a, p) - d(a, n) + margin) with in-batch mining (Hermans et al. 2017).

    "batch_hard": per anchor, its farthest positive and nearest negative; mean over anchors with
    both. "batch_all": every valid triplet; mean over the triplets with a non-zero loss.
    "semi_hard" (FaceNet; TensorFlow Addons' `triplet_semihard_loss`): for every (anchor,
    positive) pair the nearest negative farther than the positive, or where there is none the
    farthest negative; mean over all positive pairs. Memory of "batch_all" and "semi_hard" is
    O(chunk * N^2): set `chunk_size` for large batches. `contrast_*`: extra
    positives and negatives to mine from, as in `supcon_loss`.
    """
    extra = _extra(contrast_features, contrast_labels, contrast_mask, key_features)
    _check_positive("margin", margin)
    _check_choice("mining", mining, TRIPLET_MINING)
    sums = _checked_anchor_sums(
        functools.partial(_triplet_rows, margin=margin, mining=mining),
        features,
        labels,
        mask,
        extra,
        contrast_mode=contrast_mode,
        chunk_size=chunk_size,
        axis_name=axis_name,
    )
    return _mean(*sums)


def _multi_similarity_rows(anchors, contrast, positive, negative, *, alpha, beta, base, margin) -> Sums:
    similarity = anchors @ contrast.T
    hardest_positive = jnp.min(jnp.where(positive, similarity, jnp.inf), axis=1, keepdims=True)
    hardest_negative = jnp.max(jnp.where(negative, similarity, -jnp.inf), axis=1, keepdims=True)
    # The paper's pair mining: negatives closer than the least similar positive + margin, positives
    # less similar than the most similar negative + margin.
    kept_negative = negative & (similarity + margin > hardest_positive)
    kept_positive = positive & (similarity - margin < hardest_negative)
    log_positive = _masked_logsumexp(-alpha * (similarity - base), kept_positive)
    log_negative = _masked_logsumexp(beta * (similarity - base), kept_negative)
    counted = kept_positive.any(axis=1) & kept_negative.any(axis=1)
    per_anchor = jnp.logaddexp(0.0, log_positive) / alpha + jnp.logaddexp(0.0, log_negative) / beta
    anchors_present = (positive | negative).any(axis=1)
    return jnp.where(counted, per_anchor, 0.0).sum(), anchors_present.sum().astype(similarity.dtype)


def multi_similarity_loss(
    features: jax.Array,
    labels: jax.Array | None = None,
    *,
    mask: jax.Array | None = None,
    alpha: float = 2.0,
    beta: float = 50.0,
    base: float = 0.5,
    margin: float = 0.1,
    contrast_mode: str = "all",
    chunk_size: int | None = None,
    axis_name: str | None = None,
    contrast_features: jax.Array | None = None,
    contrast_labels: jax.Array | None = None,
    contrast_mask: jax.Array | None = None,
    key_features: jax.Array | None = None,
) -> jax.Array:
    """Multi-similarity loss with its pair mining (Wang et al. 2019, eq. 12 and Sec. 3.3), on
    cosine similarities S of L2-normalised features. Per anchor, positives with S_p - margin <
    max S_n and negatives with S_n + margin > min S_p are kept, and

      (1/alpha) log(1 + sum_p exp(-alpha (S_p - base))) + (1/beta) log(1 + sum_n exp(beta (S_n - base)))

    An anchor with no kept positive or no kept negative contributes 0; the loss is the mean over
    all anchors, as the authors' implementation divides by the batch. Defaults are the paper's
    (alpha 2, beta 50, base lambda 0.5, margin epsilon 0.1).
    """
    extra = _extra(contrast_features, contrast_labels, contrast_mask, key_features)
    for name, value in (("alpha", alpha), ("beta", beta), ("margin", margin)):
        _check_positive(name, value)
    row_fn = functools.partial(_multi_similarity_rows, alpha=alpha, beta=beta, base=base, margin=margin)
    sums = _checked_anchor_sums(
        row_fn,
        features,
        labels,
        mask,
        extra,
        contrast_mode=contrast_mode,
        chunk_size=chunk_size,
        axis_name=axis_name,
    )
    return _mean(*sums)


def cross_entropy_loss(logits: jax.Array, labels: jax.Array, *, label_smoothing: float = 0.0) -> jax.Array:
    """Mean softmax cross-entropy with integer labels and optional label smoothing, in float32."""
    if logits.ndim != 2 or labels.shape != logits.shape[:1]:
        raise ValueError(f"logits must be [batch, classes] and labels [batch], got {logits.shape} and {labels.shape}")
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing={label_smoothing} must be in [0, 1)")
    logits = logits.astype(jnp.promote_types(logits.dtype, jnp.float32))
    targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1], dtype=logits.dtype), label_smoothing)
    return optax.softmax_cross_entropy(logits, targets).mean()


# ----------------------------------------------------------------------------- sharding

CONTRAST_ARGUMENTS = ("contrast_features", "contrast_labels", "contrast_mask", "key_features")

FEATURE_LOSSES = {
    "supcon": supcon_loss,
    "simclr": ntxent_loss,
    "pair": contrastive_pair_loss,
    "triplet": triplet_loss,
    "multi_similarity": multi_similarity_loss,
}


def sharded(loss_fn: Callable[..., jax.Array], mesh: Mesh, axis_name: str = "data") -> Callable[..., jax.Array]:
    """`loss_fn(features, labels=None, *, mask=None, **kwargs)` on a batch sharded over
    `axis_name`: each device computes its anchor rows against the all-gathered contrast set.

    Inputs are validated on their global shapes before the `shard_map`; the result is the same
    scalar (and gradient) as the unsharded loss. Extra contrast samples (`contrast_features`,
    `contrast_labels`, `contrast_mask`) are sharded like the batch: each device holds a slice of
    the queue, gathered into the contrast set with the batch; `key_features` like the batch.
    """

    def wrapped(features, labels=None, *, mask=None, **kwargs):
        inputs = {"features": features, "labels": labels, "mask": mask}
        inputs |= {name: kwargs.pop(name, None) for name in CONTRAST_ARGUMENTS}
        inputs = {k: v for k, v in inputs.items() if v is not None}
        if mesh.shape[axis_name] == 1:  # nothing to shard: skip the all-gather
            return loss_fn(**inputs, **kwargs)
        extra = _extra(*(inputs.get(name) for name in CONTRAST_ARGUMENTS))
        _check_common(features, labels, mask, kwargs.get("contrast_mode", "all"), kwargs.get("chunk_size"), extra)
        devices = mesh.shape[axis_name]
        batch = features.shape[0]
        if batch % devices:
            raise ValueError(f"batch={batch} must divide by the {devices} devices of axis {axis_name!r}")
        if extra is not None and extra.features is not None and extra.features.shape[0] % devices:
            size = extra.features.shape[0]
            raise ValueError(f"contrast_features has {size} rows; it must divide by the {devices} devices")
        specs = {"features": P(axis_name), "labels": P(axis_name), "mask": P(axis_name, None)}
        specs |= {name: P(axis_name) for name in CONTRAST_ARGUMENTS}  # each device: a slice of the queue
        specs = {k: v for k, v in specs.items() if k in inputs}

        def local(args):
            rest = {k: v for k, v in args.items() if k != "features"}
            return loss_fn(args["features"], axis_name=axis_name, **rest, **kwargs)

        return jax.shard_map(local, mesh=mesh, in_specs=(specs,), out_specs=P())(inputs)

    return wrapped


def validate_loss_config(loss) -> None:
    """One-line errors for a bad `config.loss` section (name, temperature, options, views)."""
    if loss.name not in FEATURE_LOSSES:
        raise ValueError(f"loss.name={loss.name!r}; allowed: {tuple(FEATURE_LOSSES)}")
    if not loss.temperature > 0:
        raise ValueError(f"loss.temperature={loss.temperature} must be > 0")
    choices = {"contrast_mode": CONTRAST_MODES, "loss_type": LOSS_TYPES, "denominator": DENOMINATORS}
    for key, allowed in (choices | {"mining": TRIPLET_MINING}).items():
        if loss[key] not in allowed:
            raise ValueError(f"loss.{key}={loss[key]!r}; allowed: {allowed}")
    if loss.chunk_size is not None and loss.chunk_size <= 0:
        raise ValueError(f"loss.chunk_size={loss.chunk_size} must be > 0 (or unset)")
    if loss.margin is not None and not loss.margin > 0:
        raise ValueError(f"loss.margin={loss.margin} must be > 0 (or unset)")
    for key in ("ms_alpha", "ms_beta"):
        if not loss.get(key, 1.0) > 0:
            raise ValueError(f"loss.{key}={loss[key]} must be > 0")
    if loss.num_views < 1 or (loss.name == "simclr" and loss.num_views < 2):
        raise ValueError(f"loss.num_views={loss.num_views}; needs >= 2 for simclr, >= 1 for supcon")
