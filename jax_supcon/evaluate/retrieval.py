"""Retrieval and clustering metrics of embeddings (cosine similarity), as metric learning reports them.

- precision_at_1: the nearest reference item has the query's label.
- r_precision: with R the number of reference items sharing the query's label, the fraction of
  the R nearest that do.
- mean_average_precision_at_r (MAP@R, Musgrave et al. 2020): (1/R) sum_{i<=R} P(i) rel(i).
- recall_at_K for K in `recall_at`: any of the K nearest reference items has the query's label
  (Recall@K as the CUB / Cars / SOP papers report it; Catalyst's CMC@K). recall_at_1 equals
  precision_at_1.
- nmi, ami: k-means on the query embeddings with as many clusters as distinct query labels
  (scikit-learn, imported only when clustering runs), scored against the labels.

With no reference the queries are their own reference, each query's self excluded. Ranking ties
go to the lower reference index. Queries whose label no reference item has (R = 0) cannot
retrieve anything: they are left out of the three retrieval means and counted in
`queries_without_match`. A metric that is undefined is None, never 0: the three retrieval means
when no query has a match (one query, or every class once), NMI and AMI when the queries hold
fewer than two classes.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jax_supcon.evaluate.knn import normalize


@functools.partial(jax.jit, static_argnames=("depth", "recall_at"))
def _retrieval_block(
    queries, query_labels, query_index, reference, reference_labels, relevant_counts, *, depth, recall_at, exclude_self
):
    similarity = queries @ reference.T
    is_self = query_index[:, None] == jnp.arange(reference.shape[0])[None, :]
    similarity = jnp.where(exclude_self & is_self, -jnp.inf, similarity)
    values, order = jax.lax.top_k(similarity, depth)  # ties: lower index first
    # An excluded self ranked within `depth` (a reference of depth items) is never relevant.
    relevant = ((reference_labels[order] == query_labels[:, None]) & (values > -jnp.inf)).astype(jnp.float32)
    rank = jnp.arange(1, depth + 1)
    within_r = rank[None, :] <= relevant_counts[:, None]
    precision_at_rank = jnp.cumsum(relevant, axis=1) / rank
    r = jnp.maximum(relevant_counts, 1).astype(jnp.float32)
    found_by = jnp.cumsum(relevant, axis=1) > 0  # [rows, depth]: a match within the first k
    return (
        relevant[:, 0],
        jnp.sum(relevant * within_r, axis=1) / r,
        jnp.sum(precision_at_rank * relevant * within_r, axis=1) / r,
        jnp.stack([found_by[:, min(k, depth) - 1] for k in recall_at], axis=1).astype(jnp.float32),
    )


def query_gallery_split(labels: np.ndarray, gallery_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """(query indices, gallery indices), both sorted, of a query/gallery protocol: in each class a
    fixed random part of `round(gallery_fraction * n)` of its n images (at least one, and at
    least one left for the queries when n >= 2) is the gallery. The draw depends only on the
    class id and its members' positions, never on a run's seed, so every run is scored on the
    same split."""
    if not 0 < gallery_fraction < 1:
        raise ValueError(f"gallery_fraction={gallery_fraction} must be in (0, 1)")
    labels = np.asarray(labels)
    gallery = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        size = 1 if len(members) == 1 else min(max(1, round(gallery_fraction * len(members))), len(members) - 1)
        gallery.append(np.random.default_rng([0, int(label)]).permutation(members)[:size])
    in_gallery = np.zeros(labels.shape[0], bool)
    in_gallery[np.concatenate(gallery) if gallery else []] = True
    return np.flatnonzero(~in_gallery), np.flatnonzero(in_gallery)


def nearest_references(
    queries: np.ndarray, reference: np.ndarray, k: int, *, exclude: np.ndarray | None = None
) -> np.ndarray:
    """int [Q, k]: the `k` reference rows most cosine-similar to each query, nearest first (ties to
    the lower index); `exclude[q]` (a reference row, or -1) is never returned for query q (its self)."""
    similarity = np.array(normalize(queries) @ normalize(reference).T)  # a writable copy
    if exclude is not None:
        rows = np.flatnonzero(exclude >= 0)
        similarity[rows, exclude[rows]] = -np.inf
    return np.argsort(-similarity, axis=1, kind="stable")[:, :k]


@functools.partial(jax.jit, static_argnames=("k",))
def _top_k_block(queries, gallery, *, k):
    return jax.lax.top_k(queries @ gallery.T, k)


def top_k_neighbours(
    queries: np.ndarray, gallery: np.ndarray, k: int, *, block_size: int = 1024
) -> tuple[np.ndarray, np.ndarray]:
    """(indices [Q, k], cosine similarities [Q, k]) of the k most similar gallery rows of each
    query, nearest first (ties to the lower index), on the device in blocks of `block_size`
    queries so only a block x gallery similarity matrix ever exists."""
    k = min(k, gallery.shape[0])
    gallery = normalize(gallery)
    parts = [
        _top_k_block(normalize(queries[start : start + block_size]), gallery, k=k)
        for start in range(0, queries.shape[0], block_size)
    ]
    if not parts:
        return np.zeros((0, k), np.int64), np.zeros((0, k), np.float32)
    return np.concatenate([np.asarray(p[1]) for p in parts]), np.concatenate([np.asarray(p[0]) for p in parts])


def retrieval_examples(
    embeddings: np.ndarray, labels: np.ndarray, *, gallery_fraction: float | None, rows: int = 8, k: int = 6
) -> tuple[np.ndarray, np.ndarray]:
    """(query rows [Q], their k nearest gallery rows [Q, k]) for a picture of retrieval, in the
    protocol validation scores: the first query of up to `rows` classes spread evenly over the
    classes, its gallery the other images (or the `query_gallery_split` gallery)."""
    labels = np.asarray(labels)
    if gallery_fraction is None:
        queries = gallery = np.arange(labels.shape[0])
    else:
        queries, gallery = query_gallery_split(labels, gallery_fraction)
    classes = np.unique(labels[queries])
    shown = classes[np.unique(np.linspace(0, len(classes) - 1, min(rows, len(classes))).round().astype(int))]
    chosen = np.array([queries[labels[queries] == label][0] for label in shown])
    exclude = chosen if gallery_fraction is None else None  # gallery == every row: skip the query itself
    k = min(k, len(gallery) - (1 if exclude is not None else 0))
    nearest = nearest_references(embeddings[chosen], embeddings[gallery], k, exclude=exclude)
    return chosen, gallery[nearest]


def cluster_scores(labels: np.ndarray, clusters: np.ndarray) -> dict[str, float]:
    """NMI and AMI (arithmetic normalisation) of a clustering against the labels."""
    from sklearn.metrics import adjusted_mutual_info_score, normalized_mutual_info_score

    return {
        "nmi": float(normalized_mutual_info_score(labels, clusters)),
        "ami": float(adjusted_mutual_info_score(labels, clusters)),
    }


def kmeans_clusters(embeddings: np.ndarray, num_clusters: int, seed: int = 0) -> np.ndarray:
    """scikit-learn's k-means (10 starts) on the L2-normalised embeddings; loaded only here."""
    from sklearn.cluster import KMeans

    points = np.asarray(normalize(embeddings))
    return KMeans(n_clusters=num_clusters, n_init=10, random_state=seed).fit_predict(points)


def retrieval_metrics(
    embeddings: np.ndarray,
    labels: np.ndarray,
    *,
    reference: np.ndarray | None = None,
    reference_labels: np.ndarray | None = None,
    block_size: int = 1024,
    seed: int = 0,
    recall_at: tuple[int, ...] = (1, 2, 4, 8),
) -> dict[str, float | None]:
    """precision_at_1, r_precision, mean_average_precision_at_r, recall_at_K for each K of
    `recall_at`, nmi, ami and queries_without_match (see module doc; undefined metrics are None)."""
    recall_at = tuple(recall_at)
    if not all(isinstance(k, (int, np.integer)) and k >= 1 for k in recall_at):
        raise ValueError(f"recall_at={recall_at} must be positive integers")
    recall_at = tuple(int(k) for k in recall_at)
    embeddings, labels = np.asarray(embeddings), np.asarray(labels)
    if embeddings.ndim != 2 or labels.shape != (embeddings.shape[0],):
        raise ValueError(f"embeddings must be [N, D] and labels [N], got {embeddings.shape} and {labels.shape}")
    if (reference is None) != (reference_labels is None):
        raise ValueError("give both reference and reference_labels, or neither")
    if reference is not None:
        reference, reference_labels = np.asarray(reference), np.asarray(reference_labels)
        if (
            reference.ndim != 2
            or reference.shape[1] != embeddings.shape[1]
            or reference_labels.shape != reference.shape[:1]
        ):
            raise ValueError(
                f"reference must be [M, {embeddings.shape[1]}] and reference_labels [M], got {reference.shape} "
                f"and {reference_labels.shape}"
            )
    exclude_self = reference is None
    if exclude_self:
        reference, reference_labels = embeddings, labels
    reference_labels = np.asarray(reference_labels)
    classes, class_sizes = np.unique(reference_labels, return_counts=True)
    size_of = dict(zip(classes.tolist(), class_sizes.tolist(), strict=True))
    relevant_counts = np.array([size_of.get(label, 0) for label in labels.tolist()]) - int(exclude_self)
    has_match = relevant_counts > 0
    # Ranks looked at: R for the precision metrics, K for recall, at most the whole reference.
    depth = min(max(int(relevant_counts.max(initial=0)), *recall_at, 1), reference.shape[0])

    queries, gallery = normalize(embeddings), normalize(reference)
    gallery_labels = jnp.asarray(reference_labels)
    parts = []
    for start in range(0, queries.shape[0], block_size):
        stop = min(start + block_size, queries.shape[0])
        parts.append(
            _retrieval_block(
                queries[start:stop],
                jnp.asarray(labels[start:stop]),
                jnp.arange(start, stop),
                gallery,
                gallery_labels,
                jnp.asarray(relevant_counts[start:stop]),
                depth=depth,
                recall_at=recall_at,
                exclude_self=exclude_self,
            )
        )
    p1, r_precision, map_r, recall = (np.concatenate([np.asarray(p[i]) for p in parts]) for i in range(4))

    def matched_mean(values: np.ndarray) -> float | None:
        return float(values[has_match].mean()) if has_match.any() else None

    metrics = {
        "precision_at_1": matched_mean(p1),
        "r_precision": matched_mean(r_precision),
        "mean_average_precision_at_r": matched_mean(map_r),
        **{f"recall_at_{k}": matched_mean(recall[:, i]) for i, k in enumerate(recall_at)},
        "queries_without_match": int((~has_match).sum()),
    }
    num_clusters = len(np.unique(labels))
    if num_clusters > 1:
        metrics |= cluster_scores(labels, kmeans_clusters(embeddings, num_clusters, seed))
    else:
        metrics |= {"nmi": None, "ami": None}
    return metrics
