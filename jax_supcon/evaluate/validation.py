"""Validation without a classifier, for pretraining runs: kNN accuracy and retrieval/clustering
metrics of the test split, on encoder features and on projection-head outputs."""

from __future__ import annotations

import numpy as np
from absl import logging

from jax_supcon.evaluate.knn import knn_accuracy
from jax_supcon.evaluate.retrieval import retrieval_metrics

SPACES = {"encoder": "encoder", "head": "projection"}  # metric prefix -> embeddings key
RECALL_AT = (1, 2, 4, 8)  # Recall@K as metric-learning papers report it
RETRIEVAL_KEYS = (
    "precision_at_1",
    "r_precision",
    "mean_average_precision_at_r",
    *(f"recall_at_{k}" for k in RECALL_AT),
    "nmi",
    "ami",
)
PROBE_METRIC = "val/probe_top1"  # the online linear probe's test top-1 (pretrain with online_probe)
VALIDATION_METRICS = (
    *(f"val/{space}/{name}" for space in SPACES for name in ("knn_top1", *RETRIEVAL_KEYS)),
    PROBE_METRIC,
)


def validate_validation_config(config) -> None:
    """One-line errors for the validation settings of a run (`best_metric`, `knn_k`, ...)."""
    validating = config.job == "pretrain" and config.eval_every_steps > 0 and config.best_metric
    if validating and config.best_metric not in VALIDATION_METRICS:
        raise ValueError(f"best_metric={config.best_metric!r}; allowed: '' or one of {VALIDATION_METRICS}")
    if config.knn_k < 1 or not config.knn_temperature > 0:
        raise ValueError(f"knn_k={config.knn_k} must be >= 1 and knn_temperature={config.knn_temperature} > 0")
    if config.eval_every_steps < 0:
        raise ValueError(f"eval_every_steps={config.eval_every_steps} must be >= 0 (0: no validation)")


def linear_accuracy(features: np.ndarray, labels: np.ndarray, *, kernel: np.ndarray, bias: np.ndarray) -> float:
    """Top-1 accuracy of the linear classifier `features @ kernel + bias` (the online probe)."""
    logits = np.asarray(features, np.float32) @ np.asarray(kernel, np.float32) + np.asarray(bias, np.float32)
    return float(np.mean(np.argmax(logits, axis=-1) == labels))


def embedding_metrics(
    train: dict[str, np.ndarray],
    test: dict[str, np.ndarray],
    *,
    k: int,
    temperature: float,
    num_classes: int,
    seed: int = 0,
) -> dict[str, float]:
    """`val/{encoder,head}/knn_top1` (test queries, train reference) and the retrieval metrics of
    the test split against itself, for both spaces. Metrics the test split cannot define (see
    `retrieval_metrics`: a split too small to retrieve or cluster anything) are left out, said
    once in a logged line; they are never reported as 0."""
    metrics: dict[str, float | None] = {}
    for prefix, key in SPACES.items():
        metrics[f"val/{prefix}/knn_top1"] = knn_accuracy(
            test[key],
            test["labels"],
            train[key],
            train["labels"],
            k=k,
            temperature=temperature,
            num_classes=num_classes,
        )
        retrieval = retrieval_metrics(test[key], test["labels"], seed=seed, recall_at=RECALL_AT)
        metrics |= {f"val/{prefix}/{name}": retrieval[name] for name in RETRIEVAL_KEYS}
    undefined = sorted({key.rsplit("/", 1)[-1] for key, value in metrics.items() if value is None})
    if undefined:
        labels = np.asarray(test["labels"])
        logging.log_first_n(
            logging.WARNING,
            "validation: %s undefined on this test split (%d images, %d classes, %d without another image "
            "of their class); not logged",
            1,
            ", ".join(undefined),
            len(labels),
            len(np.unique(labels)),
            retrieval["queries_without_match"],
        )
    return {key: value for key, value in metrics.items() if value is not None}
