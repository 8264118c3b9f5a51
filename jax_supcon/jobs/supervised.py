"""The cross-entropy baseline: the same encoder and a linear classifier trained end to end on one
augmented view per image (label smoothing optional), from random weights or `model.init_from`;
reports test top-1 and top-5 (see `train/end_to_end.py`)."""

from __future__ import annotations

import ml_collections
from jax.sharding import Mesh

from jax_supcon.train import end_to_end, inputs, lock, preemption, pretrained


@preemption.stops_on_sigterm
@lock.holds_workdir
def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *, mesh: Mesh | None = None) -> dict:
    """Run (or resume) the cross-entropy baseline in `workdir`; returns its summary (test top-1 and
    top-5; with held-out classes, the encoder's retrieval of them)."""
    data = inputs.load_training_data(config, mesh)
    return end_to_end.train_end_to_end(
        data.config,
        workdir,
        data,
        job="supervised",
        initial_encoder=lambda target: pretrained.encoder_importer(data.config.model, target),
    )
