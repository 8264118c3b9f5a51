"""The trivial baselines a learned embedding has to beat: raw pixels, under the run's own data
protocol (its training classes, `data.train_fraction`, `data.label_fraction`, `data.label_noise`)."""

from __future__ import annotations

import json
from collections.abc import Iterable

import ml_collections
import numpy as np

RAW_PIXEL_NEIGHBOURS = 3
ORDER_ONLY_DATA_KEYS = ("shuffle_buffer",)  # change the order of the batches, not the images or labels


def _pixels(images: np.ndarray) -> np.ndarray:
    return images.reshape(images.shape[0], -1).astype(np.float32) / 255.0


def raw_pixel_metrics(config: ml_collections.ConfigDict) -> dict[str, float] | None:
    """`test_top1` (and `val_top1` on the validation images) of a 3-nearest-neighbour classifier
    (Euclidean, scikit-learn) on the raw pixels of the training split as the run sees it, and with
    held-out classes the open-set retrieval metrics (cosine, the run's protocol) of their raw
    pixels: `test/encoder/...` on the test split's, `val/encoder/...` on the validation side's.
    None for data not held in memory (tfds, folders): too large to compare pixel by pixel."""
    from sklearn.neighbors import KNeighborsClassifier

    from jax_supcon.evaluate import validation
    from jax_supcon.train import inputs

    data = inputs.load_training_data(config)
    if data.train.images is None or (data.test is not None and data.test.images is None):
        return None
    metrics = {}
    knn = KNeighborsClassifier(n_neighbors=RAW_PIXEL_NEIGHBOURS).fit(_pixels(data.train.images), data.train.labels)
    if data.test is not None:
        metrics["test_top1"] = float(np.mean(knn.predict(_pixels(data.test.images)) == data.test.labels))
    if data.validation is not None and data.validation.images is not None:  # the test split when none is kept
        metrics["val_top1"] = float(np.mean(knn.predict(_pixels(data.validation.images)) == data.validation.labels))
    if data.held_out is not None and data.held_out.images is not None:

        def retrieval_of(source) -> dict[str, float]:
            return validation.open_set_metrics(
                {"encoder": _pixels(source.images), "labels": source.labels},
                recall_at=tuple(config.eval.recall_at),
                gallery_fraction=config.eval.gallery_fraction,
                spaces={"encoder": "encoder"},
            )

        tested = retrieval_of(data.held_out)
        metrics |= validation.as_test_metrics(tested)
        metrics |= tested if data.validation_is_test else retrieval_of(data.validation_held_out)
    return metrics


def raw_pixel_rows(runs: Iterable[tuple[tuple[tuple[str, str], ...], int, ml_collections.ConfigDict]]) -> list[dict]:
    """The raw-pixel baseline of each distinct data setting among `runs` ((grid assignments, seed,
    config) of a sweep's first stages): one row per setting, `{"name", "seeds", "summaries"}`,
    evaluated per seed only where the seed changes the data (label noise). Data not held in memory
    (tfds, folders) and data its runs cannot load either get no row."""
    from jax_supcon.data.sources import BUILTIN_SOURCES
    from jax_supcon.train.workdir import OPERATIONAL_DATA_KEYS

    ignored = (*OPERATIONAL_DATA_KEYS, *ORDER_ONLY_DATA_KEYS)
    groups: dict[str, dict] = {}
    for assignments, seed, config in runs:
        if config.data.name not in BUILTIN_SOURCES:  # pixel by pixel only where the data is small
            continue
        data = {k: v for k, v in config.data.to_dict().items() if k not in ignored}
        data_key = json.dumps(data, sort_keys=True, default=str)
        described = [f"{k}={v}" for k, v in assignments if k.startswith("data.")]
        group = groups.setdefault(data_key, {"label": ", ".join(described), "configs": {}})
        if config.data.label_noise or not group["configs"]:  # only the noise is drawn per seed
            group["configs"].setdefault(seed, config)
    rows = []
    for group in groups.values():
        try:
            summaries = [raw_pixel_metrics(config) for config in group["configs"].values()]
        except Exception:  # noqa: BLE001 (data its runs cannot use either: reported as their failure)
            continue
        if any(s is None for s in summaries):
            continue
        name = f"raw pixels ({group['label']})" if group["label"] else "raw pixels"
        rows.append({"name": name, "seeds": sorted(group["configs"]), "summaries": summaries})
    return rows
