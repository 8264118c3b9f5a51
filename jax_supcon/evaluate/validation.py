"""Validation without a classifier, for pretraining runs: the metric names, the `config.eval`
section, open-set retrieval metrics and the probe's accuracy, which the evaluators
(`evaluate/evaluators.py`) compute on the validation images (`data.validation_fraction`, else the
test split), on encoder features and on projection-head outputs; the same metrics of the test
split, read once at the end of a run, carry `test/` for `val/`."""

from __future__ import annotations

import ml_collections
import numpy as np
from absl import logging
from ml_collections.config_dict import placeholder

from jax_supcon.evaluate.retrieval import query_gallery_split, retrieval_metrics

SPACES = {"encoder": "encoder", "head": "projection"}  # metric prefix -> embeddings key
RECALL_AT = (1, 2, 4, 8)  # Recall@K as metric-learning papers report it (config.eval.recall_at)
PROBE_METRIC = "val/probe_top1"  # the online linear probe's validation top-1 (pretrain with online_probe)
CLOSED_SET_BEST = "val/encoder/knn_top1"  # best_metric "auto" when every class is trained on
OPEN_SET_BEST = "val/encoder/mean_average_precision_at_r"  # ... and when classes are held out


def retrieval_keys(recall_at: tuple[int, ...] = RECALL_AT) -> tuple[str, ...]:
    """The retrieval and clustering metrics validation logs per space."""
    recall = tuple(f"recall_at_{k}" for k in recall_at)
    return ("precision_at_1", "r_precision", "mean_average_precision_at_r", *recall, "nmi", "ami")


def validation_metrics(recall_at: tuple[int, ...] = RECALL_AT, *, open_set: bool = False) -> tuple[str, ...]:
    """Every metric validation logs: with held-out classes retrieval on them only (kNN accuracy
    against the training classes means nothing there), plus the probe on the training classes."""
    names = retrieval_keys(recall_at) if open_set else ("knn_top1", *retrieval_keys(recall_at))
    return (*(f"val/{space}/{name}" for space in SPACES for name in names), PROBE_METRIC)


VALIDATION_METRICS = validation_metrics()


def as_test_metrics(metrics: dict[str, float]) -> dict[str, float]:
    """Validation metrics (`val/...`) renamed as the test split's (`test/...`)."""
    return {f"test/{key.removeprefix('val/')}": value for key, value in metrics.items() if key.startswith("val/")}


def resolve_best_metric(best_metric: str, *, open_set: bool) -> str:
    """`best_metric` with "auto" resolved; a metric open-set validation does not compute (kNN
    accuracy, the probe) is a one-line error when classes are held out."""
    if best_metric == "auto":
        return OPEN_SET_BEST if open_set else CLOSED_SET_BEST
    if open_set and best_metric and (best_metric.endswith("/knn_top1") or best_metric == PROBE_METRIC):
        raise ValueError(
            f"best_metric={best_metric!r} is not measured when classes are held out (data.train_classes): "
            f"validation then scores retrieval of the held-out classes; use 'auto' ({OPEN_SET_BEST}) or another "
            "val/{encoder,head}/ retrieval metric"
        )
    return best_metric


def validate_validation_config(config) -> None:
    """One-line errors for the validation settings of a run (`best_metric`, `knn_k`, `eval.*`)."""
    recall_at = tuple(config.eval.recall_at) if "eval" in config else RECALL_AT
    if not recall_at or not all(isinstance(k, int) and not isinstance(k, bool) and k >= 1 for k in recall_at):
        raise ValueError(f"eval.recall_at={recall_at!r} must be a non-empty tuple of integers >= 1, e.g. (1, 2, 4, 8)")
    allowed = validation_metrics(recall_at)
    validating = config.job == "pretrain" and config.eval_every_steps > 0 and config.best_metric
    if validating and config.best_metric != "auto" and config.best_metric not in allowed:
        raise ValueError(f"best_metric={config.best_metric!r}; allowed: '', 'auto' or one of {allowed}")
    fraction = config.eval.get("gallery_fraction") if "eval" in config else None
    if fraction is not None:
        if not 0 < fraction < 1:
            raise ValueError(f"eval.gallery_fraction={fraction} must be in (0, 1) (or unset: every image a query)")
        if config.job != "embed" and not config.data.get("train_classes", "").strip():  # embed: stage 1's
            raise ValueError(
                f"eval.gallery_fraction={fraction} needs held-out classes: set data.train_classes "
                "(e.g. '0-4' or 'first_half')"
            )
    if config.knn_k < 1 or not config.knn_temperature > 0:
        raise ValueError(f"knn_k={config.knn_k} must be >= 1 and knn_temperature={config.knn_temperature} > 0")
    if config.eval_every_steps < 0:
        raise ValueError(f"eval_every_steps={config.eval_every_steps} must be >= 0 (0: no validation)")


def linear_accuracy(features: np.ndarray, labels: np.ndarray, *, kernel: np.ndarray, bias: np.ndarray) -> float:
    """Top-1 accuracy of the linear classifier `features @ kernel + bias` (the online probe)."""
    logits = np.asarray(features, np.float32) @ np.asarray(kernel, np.float32) + np.asarray(bias, np.float32)
    return float(np.mean(np.argmax(logits, axis=-1) == labels))


def open_set_metrics(
    held_out: dict[str, np.ndarray],
    *,
    recall_at: tuple[int, ...] = RECALL_AT,
    gallery_fraction: float | None = None,
    seed: int = 0,
    spaces: dict[str, str] = SPACES,
) -> dict[str, float]:
    """`val/{encoder,head}/...` retrieval metrics of the held-out classes' evaluation embeddings:
    each image a query against the others (self excluded), or with `gallery_fraction` the
    fixed per-class query/gallery split of `retrieval.query_gallery_split`."""
    labels = np.asarray(held_out["labels"])
    if gallery_fraction is None:
        queries = gallery = None
    else:
        queries, gallery = query_gallery_split(labels, gallery_fraction)
    metrics: dict[str, float | None] = {}
    for prefix, key in spaces.items():
        if gallery_fraction is None:
            retrieval = retrieval_metrics(held_out[key], labels, seed=seed, recall_at=recall_at)
        else:
            retrieval = retrieval_metrics(
                held_out[key][queries],
                labels[queries],
                reference=held_out[key][gallery],
                reference_labels=labels[gallery],
                seed=seed,
                recall_at=recall_at,
            )
        metrics |= {f"val/{prefix}/{name}": retrieval[name] for name in retrieval_keys(recall_at)}
    return defined(metrics, labels, retrieval["queries_without_match"])


def defined(metrics: dict[str, float | None], labels: np.ndarray, without_match: int | None = None) -> dict[str, float]:
    """The metrics that are defined; the others (see `retrieval_metrics`: a split too small to
    retrieve or cluster anything) said once in a logged line, never reported as 0.
    `without_match`: queries with no other image of their class (default: counted in `labels`)."""
    undefined = sorted({key.rsplit("/", 1)[-1] for key, value in metrics.items() if value is None})
    if undefined:
        labels = np.asarray(labels)
        if without_match is None:
            classes, counts = np.unique(labels, return_counts=True)
            without_match = int(counts[counts == 1].sum())
        logging.log_first_n(
            logging.WARNING,
            "validation: %s undefined on this test split (%d images, %d classes, %d without another image "
            "of their class); not logged",
            1,
            ", ".join(undefined),
            len(labels),
            len(np.unique(labels)),
            without_match,
        )
    return {key: value for key, value in metrics.items() if value is not None}


def eval_config() -> ml_collections.ConfigDict:
    """The `config.eval` section's defaults (validated by `validate_validation_config`)."""
    section = ml_collections.ConfigDict()
    section.recall_at = (1, 2, 4, 8)  # Recall@K (CMC@K) reported by validation and embed
    # Open-set retrieval (classes held out): None: every held-out evaluation image is a query and
    # the others its gallery (self excluded); f in (0, 1): a fixed per-class fraction f of the
    # images is the gallery and the rest are the queries (Catalyst's query/gallery protocol).
    section.gallery_fraction = placeholder(float)
    # Pretraining's evaluators (evaluate/evaluators.py), names separated by commas: knn,
    # retrieval, open_set, probe; "auto": knn,retrieval,probe, or open_set,probe with held-out classes.
    section.evaluators = "auto"
    return section
