"""Flax linen models: ResNet encoders, projection heads, linear classifier."""

from __future__ import annotations

import jax.numpy as jnp
import ml_collections

from jax_supcon import platform
from jax_supcon.models import weights
from jax_supcon.models.heads import (
    HEADS,
    ContrastiveModel,
    LinearClassifier,
    ProjectionHead,
    SupervisedModel,
    l2_normalize,
)
from jax_supcon.models.resnet import ARCHITECTURES, STEMS, ResNet, create_resnet

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def compute_dtype(name: str):
    """Map `model.dtype` to a jnp dtype, with a clear error for anything else."""
    if name not in DTYPES:
        raise ValueError(f"model.dtype={name!r}; allowed: {sorted(DTYPES)}")
    return DTYPES[name]


def create_encoder(model_config: ml_collections.ConfigDict, *, cpu_convolutions: bool | None = None) -> ResNet:
    """The encoder named by `config.model` (name, width, stem, dtype, remat). `cpu_convolutions`
    None: as `jax_supcon.platform` decided for this process (see `platform.cpu_convolutions`)."""
    if cpu_convolutions is None:
        cpu_convolutions = platform.cpu_convolutions()
    return create_resnet(
        model_config.name,
        width=model_config.width,
        stem=model_config.stem,
        dtype=compute_dtype(model_config.get("dtype", "float32")),
        remat=model_config.get("remat", False),
        cpu_convolutions=cpu_convolutions,
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


def validate_model_config(model: ml_collections.ConfigDict) -> None:
    """One-line errors for a bad `config.model` section, before anything is built."""
    for key, allowed in (
        ("name", tuple(sorted(ARCHITECTURES))),
        ("stem", STEMS),
        ("head", HEADS),
        ("dtype", tuple(DTYPES)),
    ):
        if model[key] not in allowed:
            raise ValueError(f"model.{key}={model[key]!r}; allowed: {allowed}")
    if not isinstance(model.get("remat", False), bool):
        raise ValueError(f"model.remat={model.remat!r}; allowed: True, False")
    if not model.width > 0 or model.proj_dim < 1:
        raise ValueError(f"model.width={model.width} must be > 0 and model.proj_dim={model.proj_dim} >= 1")
    weights.check_init_from(model.get("init_from", ""))


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
    "validate_model_config",
]
