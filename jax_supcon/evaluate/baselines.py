"""The trivial baselines a learned embedding has to beat: raw pixels, under the run's own data
protocol (its training classes, `data.train_fraction`, `data.label_fraction`, `data.label_noise`)."""

from __future__ import annotations

import ml_collections
import numpy as np

RAW_PIXEL_NEIGHBOURS = 3


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
