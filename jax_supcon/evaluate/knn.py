"""Weighted k-nearest-neighbour classification on embeddings (Wu et al. 2018).

Each query votes with its k most cosine-similar reference items, weighted by exp(sim / T). Queries
go through in blocks on the accelerator, so only a `[block, reference]` similarity matrix is
ever live.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np


def normalize(x: np.ndarray | jax.Array) -> jax.Array:
    x = jnp.asarray(x, jnp.float32)
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


@functools.partial(jax.jit, static_argnames=("k", "num_classes"))
def _vote(queries, reference, reference_labels, query_index, *, k, temperature, num_classes, exclude_self):
    similarity = queries @ reference.T
    is_self = query_index[:, None] == jnp.arange(reference.shape[0])[None, :]
    similarity = jnp.where(exclude_self & is_self, -jnp.inf, similarity)
    top_similarity, top_index = jax.lax.top_k(similarity, k)
    weights = jnp.where(jnp.isfinite(top_similarity), jnp.exp(top_similarity / temperature), 0.0)
    votes = jax.nn.one_hot(reference_labels[top_index], num_classes) * weights[..., None]
    return jnp.argmax(votes.sum(axis=1), axis=-1)


def knn_predict(
    queries: np.ndarray,
    reference: np.ndarray,
    reference_labels: np.ndarray,
    *,
    k: int = 200,
    temperature: float = 0.1,
    num_classes: int | None = None,
    exclude_self: bool = False,
    block_size: int = 1024,
) -> np.ndarray:
    """Predicted class of every query. `exclude_self`: queries are the reference (leave-one-out)."""
    if not temperature > 0:
        raise ValueError(f"knn temperature={temperature} must be > 0")
    if k < 1:
        raise ValueError(f"knn k={k} must be >= 1")
    reference_labels = np.asarray(reference_labels)
    if reference.shape[0] - int(exclude_self) < 1:
        raise ValueError(f"knn needs at least one reference item besides the query; got {reference.shape[0]}")
    num_classes = int(reference_labels.max()) + 1 if num_classes is None else num_classes
    k = min(k, reference.shape[0] - int(exclude_self))
    queries, reference = normalize(queries), normalize(reference)
    labels = jnp.asarray(reference_labels)
    predictions = []
    for start in range(0, queries.shape[0], block_size):
        block = queries[start : start + block_size]
        index = jnp.arange(start, start + block.shape[0])
        predictions.append(
            _vote(
                block,
                reference,
                labels,
                index,
                k=k,
                temperature=temperature,
                num_classes=num_classes,
                exclude_self=exclude_self,
            )
        )
    return np.asarray(jnp.concatenate(predictions))


def knn_accuracy(queries, query_labels, reference, reference_labels, **kwargs) -> float:
    """Top-1 accuracy of `knn_predict` against `query_labels`."""
    predictions = knn_predict(queries, reference, reference_labels, **kwargs)
    return float(np.mean(predictions == np.asarray(query_labels)))
