"""Embeddings of a whole split (encoder features and projections), gathered on the host."""

from __future__ import annotations

import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from jax_supcon import models, parallel
from jax_supcon.data import augment, pipeline
from jax_supcon.data.sources import Source
from jax_supcon.report.progress import progress


def embedding_forward(model: models.ContrastiveModel, augment_config: ml_collections.ConfigDict):
    """The jitted (variables, uint8 images) -> (features, projections) map; build it once per run
    so repeated evaluations reuse one compiled program."""

    @jax.jit
    def forward(variables, images):
        return model.apply(variables, augment.preprocess_eval(images, augment_config), method=model.embed)

    return forward


def compute_embeddings(
    forward,
    variables: dict,
    source: Source,
    mesh: Mesh,
    *,
    batch_size: int,
    names: tuple[str, ...] = ("encoder", "projection"),
) -> dict[str, np.ndarray]:
    """`encoder` [N, F], `projection` [N, P], `labels` [N], `ids` [N] (position in the split), in
    split order, from `forward = embedding_forward(...)` (or any jitted (variables, uint8 images)
    -> tuple of arrays, named by `names`). A collective: every process calls it and gets it all."""
    parts: dict[str, list[np.ndarray]] = {key: [] for key in (*names, "labels", "ids", "mask")}
    batches = pipeline.eval_batches(
        source, global_batch=batch_size, process_index=jax.process_index(), process_count=jax.process_count()
    )
    for batch in progress(batches, total=-(-source.num_examples // batch_size), desc=f"embed {source.split}"):
        batch = parallel.to_global(batch, mesh)
        outputs = forward(variables, batch["image"])
        values = (*outputs, batch["label"], batch["index"], batch["mask"])
        for key, value in zip(parts, values, strict=True):
            parts[key].append(np.asarray(multihost_utils.process_allgather(value, tiled=True)))
    merged = {key: np.concatenate(value) for key, value in parts.items()}
    keep = merged.pop("mask") == 1
    order = np.argsort(merged["ids"][keep], kind="stable")
    return {key: value[keep][order] for key, value in merged.items()}
