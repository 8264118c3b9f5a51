"""Training health: figures of a pretraining step's own projections and encoder features, computed
inside the jitted step, and the rule that calls a run collapsed.

A contrastive run can fail without diverging: every projection becomes the same vector, the
loss sits at its collapsed value (log(2B - 1) for SupCon and SimCLR with B examples of two views)
and nothing is learned from then on. The figures (logged with the loss as `health/...`):

- `health/wang_isola/alignment`: mean squared distance between the views of one image, and
  `health/wang_isola/uniformity`: log of the mean Gaussian potential exp(-2 ||z_i - z_j||^2) over
  pairs of projections (Wang and Isola 2020; t = 2). Collapse: alignment 0 and uniformity 0.
- `health/effective_rank/projection` and `health/effective_rank/encoder`: RankMe (Garrido et al.
  2023), exp of the entropy of the normalised singular values of the batch's projections and of
  its encoder features. Collapse: 1.
- `health/cosine/positive` and `health/cosine/negative`: mean cosine similarity of positive pairs
  (same label; SimCLR: the same image) and of negative pairs. Collapse: both 1.
- `health/loss_below_collapse`: the loss's distance below the value it takes when every
  projection is one vector (computed with the loss itself, so it holds for every loss, queue
  and option). Collapse: 0.

`CollapseWatch` reads every step's figures (not only the logged means) and applies the rule
stated in `COLLAPSE_RULE`.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

PREFIX = "health/"
ALIGNMENT = "health/wang_isola/alignment"
UNIFORMITY = "health/wang_isola/uniformity"
RANK_PROJECTION = "health/effective_rank/projection"
RANK_ENCODER = "health/effective_rank/encoder"
POSITIVE_COSINE = "health/cosine/positive"
NEGATIVE_COSINE = "health/cosine/negative"
LOSS_BELOW_COLLAPSE = "health/loss_below_collapse"

# The pairwise figures (uniformity, cosines) use the first examples of the batch up to this many
# projections: a [rows, rows] similarity matrix, whatever the global batch.
MAX_PAIR_ROWS = 1024
UNIFORMITY_T = 2.0  # Wang and Isola's t
RANKME_EPSILON = 1e-7  # Garrido et al.'s epsilon in p_k = sigma_k / ||sigma||_1 + epsilon


def effective_rank(x: jax.Array) -> jax.Array:
    """RankMe of the rows of `x` `[N, D]`: exp(-sum_k p_k log p_k), p_k = sigma_k / sum(sigma) +
    epsilon over the singular values sigma of `x` (not centred, as in the paper). Between 1 (every
    row a multiple of one vector) and min(N, D)."""
    return rank_of_gram(gram_matrix(x))


def gram_matrix(x: jax.Array) -> jax.Array:
    """`x.T @ x` `[D, D]` in float32: its eigenvalues are the squared singular values of `x`. A
    batch-sharded `x` is reduced across devices here, so what `rank_of_gram` gets is replicated."""
    x = x.astype(jnp.float32)
    return x.T @ x


def rank_of_gram(gram: jax.Array) -> jax.Array:
    """RankMe from the Gram matrix of the rows (see `effective_rank`); no cross-device work, so it
    may sit in a `lax.cond`."""
    # LAPACK reads one triangle; jnp's default symmetrisation (an elementwise fusion in the
    # eigensolver's column-major layout) is refused by XLA:CPU's YNNPACK fusion (jaxlib 0.10.2).
    eigenvalues = jnp.linalg.eigvalsh(gram, symmetrize_input=False)
    # Eigenvalues within float32 rounding of zero (numpy.linalg.matrix_rank's tolerance) are zero:
    # their square roots would otherwise add rank to a collapsed batch (1.005 instead of 1).
    tolerance = jnp.max(eigenvalues) * gram.shape[0] * jnp.finfo(jnp.float32).eps
    singular = jnp.sqrt(jnp.where(eigenvalues > tolerance, eigenvalues, 0.0))
    p = singular / jnp.maximum(jnp.sum(singular), 1e-30) + RANKME_EPSILON
    return jnp.exp(-jnp.sum(p * jnp.log(p)))


def _masked_mean(values: jax.Array, where: jax.Array) -> jax.Array:
    """Mean of `values` where `where` holds; NaN (undefined) when it holds nowhere."""
    count = jnp.sum(where)
    return jnp.where(count > 0, jnp.sum(jnp.where(where, values, 0.0)) / jnp.maximum(count, 1), jnp.nan)


def _effective_ranks(grams: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
    return rank_of_gram(grams[0]), rank_of_gram(grams[1])


def _not_measured(grams: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
    return jnp.array(jnp.nan, jnp.float32), jnp.array(jnp.nan, jnp.float32)


def health_figures(
    projections: jax.Array,
    features: jax.Array,
    positive_ids: jax.Array,
    loss: jax.Array,
    collapsed_loss: jax.Array,
    *,
    with_ranks: bool | jax.Array = True,
) -> dict[str, jax.Array]:
    """The health figures of one step (see the module docstring), with no gradient.

    Args:
      projections: `[batch, views, dim]` normalised projections, as the loss sees them.
      features: `[batch * views, width]` encoder features of the same views, example-major.
      positive_ids: `[batch]` ids whose equality makes two examples positives: the labels, or
        `arange(batch)` for SimCLR (only the views of one image are positives).
      loss: the step's loss; `collapsed_loss`: the loss on collapsed projections.
      with_ranks: whether to compute the effective ranks (a traced bool: a `lax.cond`); NaN
        (not measured) otherwise. They need an eigendecomposition of a matrix as large as the
        encoder's width (2048 for a ResNet-50), so steps that are not logged skip them.
    """
    z = jax.lax.stop_gradient(projections).astype(jnp.float32)
    features = jax.lax.stop_gradient(features)
    batch, views, dim = z.shape
    # The Gram matrices (their cross-device reduction included) are formed at every step, outside
    # the `lax.cond`: a collective inside a conditional can run in another order on each device
    # and deadlock XLA:CPU's in-process collectives (seen on 2 fake devices, jaxlib 0.10.2).
    grams = (gram_matrix(z.reshape(batch * views, dim)), gram_matrix(features))
    if isinstance(with_ranks, bool):
        ranks = (_effective_ranks if with_ranks else _not_measured)(grams)
    else:
        ranks = jax.lax.cond(with_ranks, _effective_ranks, _not_measured, grams)
    figures = {
        RANK_PROJECTION: ranks[0],
        RANK_ENCODER: ranks[1],
        LOSS_BELOW_COLLAPSE: jax.lax.stop_gradient(collapsed_loss - loss),
    }
    if views > 1:
        first, second = jnp.triu_indices(views, 1)
        figures[ALIGNMENT] = jnp.mean(jnp.sum((z[:, first] - z[:, second]) ** 2, axis=-1))
    else:
        figures[ALIGNMENT] = jnp.array(jnp.nan, jnp.float32)
    examples = max(1, min(batch, MAX_PAIR_ROWS // views))
    rows = z[:examples].reshape(examples * views, dim)
    ids = jnp.repeat(positive_ids[:examples], views)
    cosine = rows @ rows.T
    other = ~jnp.eye(rows.shape[0], dtype=bool)
    same = ids[:, None] == ids[None, :]
    squared_distance = jnp.maximum(2.0 - 2.0 * cosine, 0.0)
    pairs = max(rows.shape[0] * (rows.shape[0] - 1), 1)
    potential = jnp.where(other, -UNIFORMITY_T * squared_distance, -jnp.inf)
    figures[UNIFORMITY] = jax.nn.logsumexp(potential) - math.log(pairs)
    figures[POSITIVE_COSINE] = _masked_mean(cosine, other & same)
    figures[NEGATIVE_COSINE] = _masked_mean(cosine, ~same)
    return figures


def collapsed_like(x: jax.Array) -> jax.Array:
    """`x` `[..., dim]` with every row the same unit vector: the projections of a collapsed run.

    Materialised behind an optimisation barrier: with the YNNPACK fusions `jax_supcon.platform`
    turns on, XLA:CPU (jaxlib 0.10.2) computed garbage (1e29, or a negative loss) from a matrix
    product whose operand is a broadcast constant."""
    return jax.lax.optimization_barrier(jnp.full(x.shape, 1.0 / math.sqrt(x.shape[-1]), jnp.float32))


def collapsed_contrast(contrast: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """The loss's `contrast_*` / `key_features` arguments of a collapsed run: every feature the
    same unit vector, labels and masks unchanged."""
    return {k: collapsed_like(v) if k in ("contrast_features", "key_features") else v for k, v in contrast.items()}


# The collapse rule, measured on digits (README, Training health): a step's projections have
# collapsed when the mean cosine between negative pairs is at least COLLAPSE_COSINE (every
# projection within about 8 degrees of one direction; collapsed runs sit above 0.9998, healthy ones
# stayed below 0.92). A run has collapsed when COLLAPSE_PATIENCE consecutive steps have, and the
# warm-up is over (a run may hover near the collapsed value while its learning rate is still low).
COLLAPSE_COSINE = 0.99
COLLAPSE_PATIENCE = 50
COLLAPSE_RULE = (
    f"the mean cosine between negative pairs of projections is >= {COLLAPSE_COSINE} at every step for "
    f"{COLLAPSE_PATIENCE} consecutive steps, checked after the warm-up"
)


class Collapse(NamedTuple):
    """A detected collapse: the first step of the collapsed stretch, the step it was detected at,
    and that step's health figures (and loss)."""

    since: int
    step: int
    figures: dict[str, float]

    def describe(self) -> str:
        """One sentence: when, and the figures that show it."""
        f = self.figures
        parts = [
            f"mean negative cosine {f[NEGATIVE_COSINE]:.4f}",
            f"effective rank of the projections {f[RANK_PROJECTION]:.2f}",
        ]
        if LOSS_BELOW_COLLAPSE in f and "loss" in f:
            parts.append(f"loss {f['loss']:.4g}, {f[LOSS_BELOW_COLLAPSE]:.2g} below its collapsed value")
        return (
            f"the projections collapsed to one vector at step {self.since} and stayed so to step {self.step} "
            f"({', '.join(parts)})"
        )

    def summary(self) -> dict:
        """What a run's summary records of it."""
        return {"collapsed_at_step": self.since, "collapse_detected_at_step": self.step}


def step_collapsed(metrics: dict[str, float]) -> bool:
    """Whether one step's figures say its projections have collapsed (undefined figures: no)."""
    cosine = metrics.get(NEGATIVE_COSINE)
    return cosine is not None and bool(cosine >= COLLAPSE_COSINE)


class CollapseWatch:
    """Applies the collapse rule to every step's figures as the step loop fetches them."""

    def __init__(self, warmup_steps: int, patience: int = COLLAPSE_PATIENCE):
        self.warmup_steps = warmup_steps
        self.patience = patience
        self.detected: Collapse | None = None  # the first collapse found (set by the step loop)
        self._since: int | None = None

    def update(self, steps: list[tuple[int, dict[str, float]]]) -> Collapse | None:
        """Feed `(step, metrics)` in step order; returns the collapse when the rule is met at the last step."""
        for step, metrics in steps:
            if step_collapsed(metrics):
                self._since = step if self._since is None else self._since
            else:
                self._since = None
        if not steps or self._since is None:
            return None
        step, metrics = steps[-1]
        if step - self._since + 1 < self.patience or step <= self.warmup_steps:
            return None
        return Collapse(self._since, step, {k: float(v) for k, v in metrics.items()})


def collapse_advice(config) -> str:
    """What to change, most likely first for this config."""
    changes = []
    if config.model.get("zero_init_residual", False):
        changes.append("model.zero_init_residual=False")
    if config.loss.name in ("supcon", "simclr"):
        changes.append(f"a higher loss.temperature (now {config.loss.temperature})")
    changes.append("a longer optimizer.warmup_steps or a lower optimizer.learning_rate")
    return "try " + ", ".join(changes)
