"""Flax linen models: ResNet encoders, projection heads, linear classifier."""

from __future__ import annotations

import jax.numpy as jnp
import ml_collections

from jax_supcon.models.heads import (
    ContrastiveModel,
    LinearClassifier,
    ProjectionHead,
    SupervisedModel,
    l2_normalize,
)
from jax_supcon.models.resnet import ARCHITECTURES, ResNet, create_resnet

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def compute_dtype(name: str):
    """Map `model.dtype` to a jnp dtype, with a clear error for anything else."""
    if name not in DTYPES:
        raise ValueError(f"model.dtype={name!r}; allowed: {sorted(DTYPES)}")
    return DTYPES[name]


def create_encoder(model_config: ml_collections.ConfigDict) -> ResNet:
    """The encoder named by `config.model` (name, width, stem, dtype, remat)."""
    return create_resnet(
        model_config.name,
        width=model_config.width,
        stem=model_config.stem,
        dtype=compute_dtype(model_config.get("dtype", "float32")),
        remat=model_config.get("remat", False),
    )


def create_contrastive_model(model_config: ml_collections.ConfigDict, probe_classes: int = 0) -> ContrastiveModel:
    """Encoder + projection head (`model.head`, `model.proj_dim`, `model.hidden_dim`), with an
    online linear probe over `probe_classes` classes when > 0."""
    encoder = create_encoder(model_config)
    head = ProjectionHead(
        kind=model_config.head,
        proj_dim=model_config.proj_dim,
        hidden_dim=model_config.get("hidden_dim"),
        dtype=encoder.dtype,
    )
    return ContrastiveModel(encoder=encoder, head=head, probe_classes=probe_classes)


__all__ = [
    "ARCHITECTURES",
    "ContrastiveModel",
    "LinearClassifier",
    "ProjectionHead",
    "ResNet",
    "SupervisedModel",
    "compute_dtype",
    "create_contrastive_model",
    "create_encoder",
    "create_resnet",
    "l2_normalize",
]
