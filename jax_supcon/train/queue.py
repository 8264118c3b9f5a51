"""A labelled cross-batch memory: a FIFO of the last `loss.queue_size` projected, normalised
features and their labels, kept in the train state and used as extra contrast samples.

Many negatives (and same-class positives) per anchor without the cost of a huge batch's forward
and backward passes: each step contrasts its batch against the queue (entries from earlier steps
only) and then writes its own features into it, as MoCo does with its keys and
pytorch-metric-learning's CrossBatchMemory with labels.

The queue is `{"features": [K, dim] float32, "labels": [K] int32}`, sharded over the data axis.
Where a step writes and which entries hold features are functions of the step alone: a step
writes `E` entries (`losses.entries_per_step`) at row `(step mod K/E) * E`, and after `step` steps the
first `min(step * E, K)` rows are filled. So nothing else is stored, a restored state continues
exactly, and 1 and 8 devices hold the same global queue.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Queue = dict[str, jax.Array]


def init_queue(size: int, dim: int) -> Queue:
    """An empty queue of `size` entries (`{}` when 0: no queue)."""
    if size == 0:
        return {}
    return {"features": jnp.zeros((size, dim), jnp.float32), "labels": jnp.zeros((size,), jnp.int32)}


def filled(queue: Queue, step: jax.Array, per_step: int) -> jax.Array:
    """`[K]` bool: which entries hold features after `step` steps (the rest are masked)."""
    size = queue["labels"].shape[0]
    return jnp.arange(size) < jnp.minimum(step * per_step, size)


def contrast_arguments(queue: Queue, step: jax.Array, per_step: int, *, with_labels: bool) -> dict[str, jax.Array]:
    """The loss's `contrast_*` arguments for the queue at `step` (`{}` without a queue)."""
    if not queue:
        return {}
    arguments = {"contrast_features": queue["features"], "contrast_mask": filled(queue, step, per_step)}
    if with_labels:
        arguments["contrast_labels"] = queue["labels"]
    return arguments


def enqueue(queue: Queue, step: jax.Array, features: jax.Array, labels: jax.Array, views: str) -> Queue:
    """The queue after step `step` writes `features` `[batch, num_views, dim]` (all views, example
    by example, or the first) and their `labels` `[batch]` over its oldest entries."""
    if not queue:
        return queue
    if views == "one":
        features = features[:, :1]
    batch, num_views, dim = features.shape
    entries = jax.lax.stop_gradient(features).reshape(batch * num_views, dim).astype(jnp.float32)
    entry_labels = jnp.repeat(labels.astype(jnp.int32), num_views)
    size = queue["labels"].shape[0]
    start = (step % (size // entries.shape[0])) * entries.shape[0]
    return {
        "features": jax.lax.dynamic_update_slice(queue["features"], entries, (start, 0)),
        "labels": jax.lax.dynamic_update_slice(queue["labels"], entry_labels, (start,)),
    }
