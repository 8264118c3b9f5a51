"""SupCon (Khosla et al. 2020) and SimCLR's NT-Xent: every option of the reference implementation
(contrast mode, loss_type out / in, denominators, base temperature, 2+ views, masks, queue entries),
and the engines of the default options (a custom VJP keeping one log-sum-exp per row; one gradient
matmul per block when every sample is an anchor)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jax_supcon.losses.layout import (
    Sums,
    anchor_layout,
    anchor_sums,
    check_choice,
    check_common,
    check_positive,
    extra_samples,
    masked_logsumexp,
    reduce_sums,
    row_blocks,
    safe_mean,
    static_value,
    sum_over_blocks,
)

LOSS_TYPES = ("out", "in")
DENOMINATORS = ("all", "one_positive", "negatives_only")


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
    out = jax.lax.map(lambda xs: fn(*xs), row_blocks(per_row, chunk_size))
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
    lay = anchor_layout(features, labels, None, contrast_mode, axis_name, extra)
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
        (lse_total,) = sum_over_blocks(block, (lay.anchors, lay.anchor_column, weights), chunk_size, remat=False)
    return reduce_sums((lse_total - mean_positive_logit.sum(), weights.sum()), axis_name)


# ----------------------------------------------------------------------------- SupCon family


def _supcon_rows(anchors, contrast, positive, negative, *, temperature, loss_type, denominator) -> Sums:
    """Per-anchor SupCon terms of one row block: (sum of losses, number of anchors counted)."""
    logits = (anchors @ contrast.T) / temperature
    num_positives = positive.sum(axis=1)
    if denominator == "all":
        log_denominator = masked_logsumexp(logits, positive | negative)[:, None]
    elif denominator == "one_positive":
        log_denominator = jnp.logaddexp(logits, masked_logsumexp(logits, negative)[:, None])
    else:  # negatives_only
        log_denominator = masked_logsumexp(logits, negative)[:, None]
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
        per_anchor = -(masked_logsumexp(log_prob, positive) - jnp.log(safe_count.astype(log_prob.dtype)))
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
    extra = extra_samples(contrast_features, contrast_labels, contrast_mask, key_features)
    if axis_name is None:
        check_common(features, labels, mask, contrast_mode, chunk_size, extra)
    check_positive("temperature", temperature)
    check_choice("loss_type", loss_type, LOSS_TYPES)
    check_choice("denominator", denominator, DENOMINATORS)
    # The default options take the fast path; a traced temperature takes the general one.
    if (mask, loss_type, denominator) == (None, "out", "all") and static_value(temperature) is not None:
        total, count = _default_supcon_sums(
            features,
            labels,
            temperature=static_value(temperature),
            contrast_mode=contrast_mode,
            chunk_size=chunk_size,
            axis_name=axis_name,
            extra=extra,
        )
    else:
        row_fn = functools.partial(_supcon_rows, temperature=temperature, loss_type=loss_type, denominator=denominator)
        total, count = anchor_sums(
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
    return scale * safe_mean(total, count)


def ntxent_loss(features: jax.Array, *, temperature: float = 0.5, **kwargs) -> jax.Array:
    """SimCLR's NT-Xent: `supcon_loss` with only the other views of an image as positives."""
    return supcon_loss(features, None, temperature=temperature, **kwargs)
