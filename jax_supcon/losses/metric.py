"""Metric-learning losses on the same layout: contrastive pairs (Hadsell et al. 2006), triplets with
batch-all, batch-hard or semi-hard mining (Schroff et al. 2015), multi-similarity (Wang et al.
2019); and the cross-entropy of the classifiers."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import optax

from jax_supcon.losses.layout import (
    Extra,
    RowFn,
    Sums,
    anchor_sums,
    check_choice,
    check_common,
    check_positive,
    extra_samples,
    masked_logsumexp,
    safe_mean,
    safe_sqrt,
    squared_distances,
)

TRIPLET_MINING = ("batch_all", "batch_hard", "semi_hard")


# ----------------------------------------------------------------------------- metric learning


def _checked_anchor_sums(
    row_fn: RowFn, features, labels, mask, extra: Extra | None, *, contrast_mode, chunk_size, axis_name
) -> Sums:
    """`anchor_sums` of a metric loss, its inputs checked first (once, on the global shapes:
    inside `sharded`'s shard_map they were checked before it)."""
    if axis_name is None:
        check_common(features, labels, mask, contrast_mode, chunk_size, extra)
    return anchor_sums(
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
    distances_sq = squared_distances(anchors, contrast)
    hinge = jnp.maximum(margin - safe_sqrt(distances_sq), 0.0)
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
    extra = extra_samples(contrast_features, contrast_labels, contrast_mask, key_features)
    check_positive("margin", margin)
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
    return safe_mean(pos_total, pos_count) + safe_mean(neg_total, neg_count)


def _triplet_rows(anchors, contrast, positive, negative, *, margin, mining) -> Sums:
    distances = safe_sqrt(squared_distances(anchors, contrast))
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
    extra = extra_samples(contrast_features, contrast_labels, contrast_mask, key_features)
    check_positive("margin", margin)
    check_choice("mining", mining, TRIPLET_MINING)
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
    return safe_mean(*sums)


def _multi_similarity_rows(anchors, contrast, positive, negative, *, alpha, beta, base, margin) -> Sums:
    similarity = anchors @ contrast.T
    hardest_positive = jnp.min(jnp.where(positive, similarity, jnp.inf), axis=1, keepdims=True)
    hardest_negative = jnp.max(jnp.where(negative, similarity, -jnp.inf), axis=1, keepdims=True)
    # The paper's pair mining: negatives closer than the least similar positive + margin, positives
    # less similar than the most similar negative + margin.
    kept_negative = negative & (similarity + margin > hardest_positive)
    kept_positive = positive & (similarity - margin < hardest_negative)
    log_positive = masked_logsumexp(-alpha * (similarity - base), kept_positive)
    log_negative = masked_logsumexp(beta * (similarity - base), kept_negative)
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
    extra = extra_samples(contrast_features, contrast_labels, contrast_mask, key_features)
    for name, value in (("alpha", alpha), ("beta", beta), ("margin", margin)):
        check_positive(name, value)
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
    return safe_mean(*sums)


def cross_entropy_loss(logits: jax.Array, labels: jax.Array, *, label_smoothing: float = 0.0) -> jax.Array:
    """Mean softmax cross-entropy with integer labels and optional label smoothing, in float32."""
    if logits.ndim != 2 or labels.shape != logits.shape[:1]:
        raise ValueError(f"logits must be [batch, classes] and labels [batch], got {logits.shape} and {labels.shape}")
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing={label_smoothing} must be in [0, 1)")
    logits = logits.astype(jnp.promote_types(logits.dtype, jnp.float32))
    targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1], dtype=logits.dtype), label_smoothing)
    return optax.softmax_cross_entropy(logits, targets).mean()
