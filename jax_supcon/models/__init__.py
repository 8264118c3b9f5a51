"""Flax linen models: ResNet and Vision Transformer encoders, projection heads, linear classifier."""

from __future__ import annotations

import jax.numpy as jnp
import ml_collections
from ml_collections.config_dict import placeholder

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
from jax_supcon.models.resnet import ARCHITECTURES as RESNET_ARCHITECTURES
from jax_supcon.models.resnet import STEMS, ResNet, create_resnet
from jax_supcon.models.vit import POOLS, VIT_ARCHITECTURES, VisionTransformer, check_vit_options, create_vit

ARCHITECTURES = {**RESNET_ARCHITECTURES, **VIT_ARCHITECTURES}

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def compute_dtype(name: str):
    """Map `model.dtype` to a jnp dtype, with a clear error for anything else."""
    if name not in DTYPES:
        raise ValueError(f"model.dtype={name!r}; allowed: {sorted(DTYPES)}")
    return DTYPES[name]


def is_vit(model_config: ml_collections.ConfigDict) -> bool:
    """Whether `model.name` names a Vision Transformer."""
    return model_config.name in VIT_ARCHITECTURES


def position_grid(model_config: ml_collections.ConfigDict) -> int | None:
    """The patch grid a ViT's position embeddings are made for (`model.pos_image_size` / patch
    size), None when not recorded yet (then: the grid of the images it is created with)."""
    size = model_config.get("pos_image_size", 0)
    return size // model_config.patch_size if size else None


def create_encoder(
    model_config: ml_collections.ConfigDict, *, cpu_convolutions: bool | None = None
) -> ResNet | VisionTransformer:
    """The encoder named by `config.model`: a ResNet (name, width, stem, dtype, remat, zero_init_residual) or a ViT
    (name, patch_size, pool, num_heads, drop_path, dropout, dtype, remat, scan). `cpu_convolutions`
    None: as `jax_supcon.platform` decided for this process (see `platform.cpu_convolutions`)."""
    dtype = compute_dtype(model_config.get("dtype", "float32"))
    if is_vit(model_config):
        return create_vit(
            model_config.name,
            patch_size=model_config.patch_size,
            pool=model_config.pool,
            pos_grid=position_grid(model_config),
            drop_path=model_config.drop_path,
            dropout=model_config.dropout,
            dtype=dtype,
            remat=model_config.get("remat", False),
            scan=model_config.scan,
            num_heads=model_config.num_heads or None,
        )
    if cpu_convolutions is None:
        cpu_convolutions = platform.cpu_convolutions()
    return create_resnet(
        model_config.name,
        width=model_config.width,
        stem=model_config.stem,
        dtype=dtype,
        remat=model_config.get("remat", False),
        cpu_convolutions=cpu_convolutions,
        zero_init_residual=model_config.get("zero_init_residual", False),
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


def validate_model_config(model: ml_collections.ConfigDict, image_size: int | None = None) -> None:
    """One-line errors for a bad `config.model` section (and a ViT's `image_size`, when given),
    before anything is built."""
    for key, allowed in (
        ("name", tuple(sorted(ARCHITECTURES))),
        ("stem", STEMS),
        ("head", HEADS),
        ("dtype", tuple(DTYPES)),
    ):
        if model[key] not in allowed:
            raise ValueError(f"model.{key}={model[key]!r}; allowed: {allowed}")
    for key in ("remat", "scan", "zero_init_residual"):
        if not isinstance(model.get(key, False), bool):
            raise ValueError(f"model.{key}={model[key]!r}; allowed: True, False")
    if not model.width > 0 or model.proj_dim < 1:
        raise ValueError(f"model.width={model.width} must be > 0 and model.proj_dim={model.proj_dim} >= 1")
    for key in ("drop_path", "dropout"):
        if not 0 <= model.get(key, 0.0) < 1:
            raise ValueError(f"model.{key}={model[key]} must be in [0, 1)")
    if is_vit(model):
        width, _, heads = VIT_ARCHITECTURES[model.name]
        if not (isinstance(model.num_heads, int) and model.num_heads >= 0):
            raise ValueError(f"model.num_heads={model.num_heads!r} must be an integer >= 0 (0: {model.name}'s {heads})")
        check_vit_options(
            f"model.name={model.name!r} (width {width})",
            width=width,
            heads=model.num_heads or heads,
            patch_size=model.patch_size,
            pool=model.pool,
            image_size=image_size,
        )
        if model.get("init_from", ""):
            raise ValueError(f"model.init_from={model.init_from!r}: weight import reads ResNets only, not {model.name}")
    weights.check_init_from(model.get("init_from", ""))


__all__ = [
    "ARCHITECTURES",
    "POOLS",
    "ContrastiveModel",
    "LinearClassifier",
    "ProjectionHead",
    "ResNet",
    "SupervisedModel",
    "VIT_ARCHITECTURES",
    "VisionTransformer",
    "compute_dtype",
    "create_contrastive_model",
    "create_encoder",
    "create_resnet",
    "create_vit",
    "is_vit",
    "l2_normalize",
    "validate_model_config",
]


def model_config() -> ml_collections.ConfigDict:
    """The `config.model` section's defaults (validated by `validate_model_config`)."""
    section = ml_collections.ConfigDict()
    section.name = "resnet18"
    section.stem = "cifar"
    section.width = 1.0
    section.head = "mlp"
    section.proj_dim = 128
    section.hidden_dim = placeholder(int)  # None: the encoder's feature width
    section.dtype = "float32"
    # Recompute each residual block in the backward pass instead of keeping its activations: for
    # batches whose activations do not fit, at about one more forward pass of compute.
    section.remat = False
    # ResNets: start the last BatchNorm scale of every residual branch at 0 (Goyal et al. 2017; Google's
    # TensorFlow SimCLR/SupCon code) instead of 1 (SupContrast, torchvision). At 0 SupCon at T 0.1
    # collapsed on some digits seeds: see README, Training health.
    section.zero_init_residual = False
    # A torchvision/timm ResNet state dict (.safetensors; .pth with torch) the encoder starts
    # from (pretrain, supervised); "" random. See jax_supcon/models/weights.py.
    section.init_from = ""
    section.momentum = 0.0  # > 0: a momentum encoder (MoCo) computes the keys and the queue's entries
    # Vision Transformers (model.name vit_*): patch size (16 at 224 px; 4 or 2 for 32 px and
    # smaller), pooling (cls: the class token; gap: mean of the patch tokens), stochastic depth of
    # the last block (linear from 0), dropout, head count (0: the architecture's), and nn.scan over
    # the blocks (one compiled block: faster compiles for deep models). pos_image_size: the image
    # size the position embeddings are made for (0: data.image_size, recorded by the run); other
    # sizes interpolate them.
    section.patch_size = 16
    section.pool = "cls"
    section.drop_path = 0.0
    section.dropout = 0.0
    section.num_heads = 0
    section.scan = False
    section.pos_image_size = 0
    return section
