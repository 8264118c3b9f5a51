"""Pretraining's evaluators, registered by name and chosen by `config.eval.evaluators` (the model is
big_vision's `config.evals`): each takes the embeddings of one evaluation and returns `val/...`
metrics; the job asks for the configured ones and logs what they return.

- `knn`: weighted kNN top-1 of the validation images against the training split
  (`val/{encoder,head}/knn_top1`; `knn_k`, `knn_temperature`).
- `retrieval`: precision@1, R-precision, MAP@R, Recall@K, NMI and AMI of the validation images
  against each other (`eval.recall_at`).
- `open_set`: the same retrieval metrics on the held-out classes only (`data.train_classes`;
  `eval.gallery_fraction` splits them into queries and gallery).
- `probe`: the online linear probe's top-1 on the training classes' validation images
  (`val/probe_top1`; needs `online_probe`).

`auto` (the default) is `knn,retrieval,probe` when every class is trained on and `open_set,probe`
when classes are held out. A new evaluator is a function `(Embedded, config) -> metrics` added
with `register`, with the names it logs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import ml_collections
import numpy as np

from jax_supcon.evaluate import validation
from jax_supcon.evaluate.knn import knn_accuracy
from jax_supcon.evaluate.retrieval import retrieval_metrics

Embeddings = dict[str, np.ndarray]  # "encoder", "projection", "labels"


@dataclasses.dataclass
class Embedded:
    """What one evaluation sees. `queries`: the validation images' embeddings (the held-out
    classes' in an open-set run). The others are computed on first use, at most once: `gallery`
    (the training split's embeddings), `seen` (the training classes' validation images; in a
    closed-set run the queries themselves) and `probe` (the online probe's `kernel` and `bias`,
    None without one)."""

    queries: Embeddings
    gallery: Callable[[], Embeddings]
    seen: Callable[[], Embeddings | None]
    probe: Callable[[], dict[str, np.ndarray] | None]
    num_classes: int


@dataclasses.dataclass(frozen=True)
class Evaluator:
    """An evaluator: `run(embedded, config) -> metrics`, the metric names it can log
    (`names(config)`, before any evaluation: best_metric is checked against them), and whether it
    applies to closed-set runs, open-set runs or both."""

    run: Callable[[Embedded, ml_collections.ConfigDict], dict[str, float | None]]
    names: Callable[[ml_collections.ConfigDict], tuple[str, ...]]
    closed_set: bool = True
    open_set: bool = True


EVALUATORS: dict[str, Evaluator] = {}
AUTO = {False: ("knn", "retrieval", "probe"), True: ("open_set", "probe")}  # by open_set


def register(name: str, evaluator: Evaluator) -> None:
    """Make `evaluator` selectable as `config.eval.evaluators=...,name`."""
    EVALUATORS[name] = evaluator


def _recall_at(config: ml_collections.ConfigDict) -> tuple[int, ...]:
    return tuple(config.eval.recall_at)


def _per_space(names: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(f"val/{prefix}/{name}" for prefix in validation.SPACES for name in names)


def _knn(embedded: Embedded, config: ml_collections.ConfigDict) -> dict[str, float | None]:
    gallery, queries = embedded.gallery(), embedded.queries
    return {
        f"val/{prefix}/knn_top1": knn_accuracy(
            queries[key],
            queries["labels"],
            gallery[key],
            gallery["labels"],
            k=config.knn_k,
            temperature=config.knn_temperature,
            num_classes=embedded.num_classes,
        )
        for prefix, key in validation.SPACES.items()
    }


def _retrieval(embedded: Embedded, config: ml_collections.ConfigDict) -> dict[str, float | None]:
    queries, recall_at, metrics = embedded.queries, _recall_at(config), {}
    for prefix, key in validation.SPACES.items():
        found = retrieval_metrics(queries[key], queries["labels"], seed=config.seed, recall_at=recall_at)
        metrics |= {f"val/{prefix}/{name}": found[name] for name in validation.retrieval_keys(recall_at)}
    return metrics


def _open_set(embedded: Embedded, config: ml_collections.ConfigDict) -> dict[str, float | None]:
    return validation.open_set_metrics(
        embedded.queries,
        recall_at=_recall_at(config),
        gallery_fraction=config.eval.gallery_fraction,
        seed=config.seed,
    )


def _probe(embedded: Embedded, config: ml_collections.ConfigDict) -> dict[str, float | None]:
    probe, seen = embedded.probe(), None
    if probe is not None:
        seen = embedded.seen()
    if probe is None or seen is None:
        return {}
    return {validation.PROBE_METRIC: validation.linear_accuracy(seen["encoder"], seen["labels"], **probe)}


register("knn", Evaluator(_knn, lambda config: _per_space(("knn_top1",)), open_set=False))
register(
    "retrieval",
    Evaluator(_retrieval, lambda config: _per_space(validation.retrieval_keys(_recall_at(config))), open_set=False),
)
register(
    "open_set",
    Evaluator(_open_set, lambda config: _per_space(validation.retrieval_keys(_recall_at(config))), closed_set=False),
)
register("probe", Evaluator(_probe, lambda config: (validation.PROBE_METRIC,)))


def selected(config: ml_collections.ConfigDict, *, open_set: bool) -> tuple[str, ...]:
    """The evaluators `config.eval.evaluators` names ("auto", or names separated by commas); a
    one-line ValueError for an unknown one or one that does not apply to the run (kNN accuracy
    with held-out classes, open-set retrieval without)."""
    spec = str(config.eval.get("evaluators", "auto")).strip()
    names = AUTO[open_set] if spec == "auto" else tuple(n.strip() for n in spec.split(",") if n.strip())
    for name in names:
        if name not in EVALUATORS:
            raise ValueError(f"eval.evaluators names {name!r}; allowed: 'auto' or some of {tuple(EVALUATORS)}")
        evaluator = EVALUATORS[name]
        if not (evaluator.open_set if open_set else evaluator.closed_set):
            kind = "held-out classes (data.train_classes)" if open_set else "every class trained on"
            raise ValueError(f"eval.evaluators: {name!r} does not apply to a run with {kind}; use 'auto'")
    if not names:
        raise ValueError(f"eval.evaluators={spec!r} names no evaluator; allowed: 'auto' or some of {tuple(EVALUATORS)}")
    return names


def metric_names(config: ml_collections.ConfigDict, *, open_set: bool) -> tuple[str, ...]:
    """Every metric the selected evaluators can log, in order."""
    return tuple(
        dict.fromkeys(n for name in selected(config, open_set=open_set) for n in EVALUATORS[name].names(config))
    )


def evaluate(config: ml_collections.ConfigDict, embedded: Embedded, *, open_set: bool) -> dict[str, float]:
    """The metrics of the selected evaluators; those the validation images cannot define (a
    split too small to retrieve or cluster anything) are left out, said once in a logged line."""
    metrics: dict[str, float | None] = {}
    for name in selected(config, open_set=open_set):
        metrics |= EVALUATORS[name].run(embedded, config)
    return validation.defined(metrics, embedded.queries["labels"])


def validate_evaluators_config(config: ml_collections.ConfigDict) -> None:
    """One-line errors for `eval.evaluators` and for a `best_metric` they would never log."""
    open_set = bool(config.data.get("train_classes", "").strip())
    names = metric_names(config, open_set=open_set)
    validating = config.job == "pretrain" and config.eval_every_steps > 0 and config.best_metric
    if validating:
        best = validation.resolve_best_metric(config.best_metric, open_set=open_set)
        if best not in names:
            raise ValueError(
                f"best_metric={config.best_metric!r} ({best}) is not logged by eval.evaluators="
                f"{config.eval.evaluators!r}; set best_metric to one of {names} (or '' for none)"
            )
