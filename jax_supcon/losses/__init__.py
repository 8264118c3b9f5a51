"""Contrastive and metric-learning losses on the global batch.

Every feature loss takes `features` `[batch, views, dim]` (L2-normalised for the contrastive
ones) and either integer `labels` `[batch]`, a positive `mask` `[batch, batch]`, or neither
(then only the other views of the same example are positives: SimCLR). The `batch * views`
samples, ordered view-major (row `v * batch + i` is view `v` of example `i`), form the contrast
set; the anchors are all of them (`contrast_mode="all"`) or the first view of each example
(`"one"`).

All of them lay out anchors and contrast set the same way (`layout.anchor_layout`) and sum per-row terms over
blocks of anchors (`layout.sum_over_blocks`):
- `chunk_size` evaluates the anchors in blocks of that many rows, so the largest live tensor is
  `[chunk, batch * views]` in the forward and the backward pass instead of `[batch * views]^2`
  (the generic path recomputes each block under `jax.checkpoint`; the default SupCon options
  use a custom VJP that keeps one log-sum-exp per row, see `supcon._default_supcon_sums`, and when
  every sample is an anchor, one gradient matmul per block instead of two, see
  `supcon._symmetric_logsumexp_sum`);
- `axis_name` (set by `sharded`, which wraps the loss in `jax.shard_map`) makes each device
  take its own anchor rows against the all-gathered contrast set and `psum` the per-row sums:
  memory per device O(N^2 / devices), gradients exact (the all-gather's transpose is a
  reduce-scatter).
Computation is in float32 (float64 stays float64) whatever the input dtype.

The package: `layout` (checks, anchor / contrast layout, the row-block driver), `supcon` (SupCon,
NT-Xent and their engines), `metric` (pair, triplet, multi-similarity, cross-entropy), `sharding`
(`sharded`), `config` (the `config.loss` section: names, checks, `from_config`).
"""

from jax_supcon.losses.config import (
    FEATURE_LOSSES,
    QUEUE_VIEWS,
    entries_per_step,
    from_config,
    loss_config,
    loss_options,
    validate_loss_config,
    validate_queue_config,
)
from jax_supcon.losses.layout import CONTRAST_MODES
from jax_supcon.losses.metric import (
    TRIPLET_MINING,
    contrastive_pair_loss,
    cross_entropy_loss,
    multi_similarity_loss,
    triplet_loss,
)
from jax_supcon.losses.sharding import CONTRAST_ARGUMENTS, sharded
from jax_supcon.losses.supcon import DENOMINATORS, LOSS_TYPES, ntxent_loss, supcon_loss

__all__ = [
    "CONTRAST_ARGUMENTS",
    "CONTRAST_MODES",
    "DENOMINATORS",
    "FEATURE_LOSSES",
    "QUEUE_VIEWS",
    "LOSS_TYPES",
    "TRIPLET_MINING",
    "contrastive_pair_loss",
    "cross_entropy_loss",
    "entries_per_step",
    "from_config",
    "loss_config",
    "loss_options",
    "multi_similarity_loss",
    "ntxent_loss",
    "sharded",
    "supcon_loss",
    "triplet_loss",
    "validate_loss_config",
    "validate_queue_config",
]
