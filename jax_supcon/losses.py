"""Contrastive losses on the global batch.

`supcon_loss` implements the supervised contrastive loss of Khosla et al. (2020), eq. 2 (L_out),
and its self-supervised special case (SimCLR / NT-Xent) when no labels are given. Features are
`[batch, views, dim]` and already L2-normalised; every view of every example in the (global) batch
is a contrast sample. Computation is in float32 whatever the input dtype.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

CONTRAST_MODES = ("all", "one")


def _check_inputs(features: jax.Array, labels: jax.Array | None, temperature: float, contrast_mode: str) -> None:
    """Raise a one-line ValueError for inputs the loss cannot mean anything for (at trace time)."""
    if features.ndim != 3:
        raise ValueError(f"features must be [batch, views, dim], got shape {tuple(features.shape)}")
    if labels is not None and (labels.ndim != 1 or labels.shape[0] != features.shape[0]):
        raise ValueError(f"labels must be [batch]=[{features.shape[0]}], got shape {tuple(labels.shape)}")
    if contrast_mode not in CONTRAST_MODES:
        raise ValueError(f"contrast_mode={contrast_mode!r}; allowed: {CONTRAST_MODES}")
    if isinstance(temperature, (int, float)) and not temperature > 0:
        raise ValueError(f"temperature={temperature} must be > 0")


def supcon_loss(
    features: jax.Array,
    labels: jax.Array | None = None,
    *,
    temperature: float = 0.1,
    base_temperature: float | None = None,
    contrast_mode: str = "all",
) -> jax.Array:
    """Supervised contrastive loss (L_out), or NT-Xent when `labels` is None.

    Args:
      features: `[batch, views, dim]`, L2-normalised embeddings of every view.
      labels: `[batch]` integer class ids, or None: then only the other views of the same example
        are positives (SimCLR / NT-Xent).
      temperature: softmax temperature tau (> 0).
      base_temperature: if given, the loss is scaled by `temperature / base_temperature` as in the
        reference implementation; None means no rescaling.
      contrast_mode: "all" uses every view as an anchor; "one" only the first view (still
        contrasted against all views).

    Returns:
      Scalar mean over anchors that have at least one positive. Positives stay in the
      denominator (the paper's L_out). An anchor without a positive is left out of the mean; a
      batch with no positive at all gives 0 with zero gradient.
    """
    _check_inputs(features, labels, temperature, contrast_mode)
    batch, views, dim = features.shape
    features = features.astype(jnp.float32)
    # View-major contrast set: row v * batch + i is view v of example i.
    contrast = jnp.transpose(features, (1, 0, 2)).reshape(views * batch, dim)
    ids = jnp.arange(batch) if labels is None else labels
    contrast_ids = jnp.tile(ids, views)
    num_anchors = views * batch if contrast_mode == "all" else batch
    anchors = contrast[:num_anchors]
    anchor_ids = contrast_ids[:num_anchors]

    logits = anchors @ contrast.T / temperature
    is_self = jnp.arange(num_anchors)[:, None] == jnp.arange(views * batch)[None, :]
    positive = (anchor_ids[:, None] == contrast_ids[None, :]) & ~is_self
    # log-sum-exp over every contrast sample except the anchor itself (stable for small tau).
    log_denominator = jax.nn.logsumexp(jnp.where(is_self, -jnp.inf, logits), axis=1)
    log_prob = logits - log_denominator[:, None]

    num_positives = positive.sum(axis=1)
    has_positive = num_positives > 0
    sum_log_prob = jnp.where(positive, log_prob, 0.0).sum(axis=1)
    mean_log_prob_pos = sum_log_prob / jnp.maximum(num_positives, 1)
    scale = 1.0 if base_temperature is None else temperature / base_temperature
    per_anchor = -scale * mean_log_prob_pos
    num_valid = has_positive.sum()
    return jnp.where(has_positive, per_anchor, 0.0).sum() / jnp.maximum(num_valid, 1)


def ntxent_loss(features: jax.Array, *, temperature: float = 0.5) -> jax.Array:
    """SimCLR's NT-Xent: `supcon_loss` without labels (other views of an image are positives)."""
    return supcon_loss(features, None, temperature=temperature)
