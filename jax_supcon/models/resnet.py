"""ResNet encoders (He et al. 2016, v1.5: stride on the 3x3 conv), Flax linen.

Layer shapes follow torchvision, so parameter counts match it (ResNet-50 with a 1000-way linear
layer: 25,557,032). `stem="cifar"` is the 3x3 stride-1 stem without max-pool used for 32x32
images by the SupCon reference; `width` multiplies every channel count. The encoder returns the
globally average-pooled feature vector (2048 * width for ResNet-50).

The last BatchNorm of each residual branch starts with scale one, as in SupContrast's
`resnet_big.py` and torchvision; `zero_init_residual=True` starts it at zero (Goyal et al. 2017,
as Google's TensorFlow SimCLR and SupCon code do), so every block starts as the identity. With the
zero scale the digits recipe collapses at temperature 0.1 on some seeds (README, Training health).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
from jax import lax

from jax_supcon.models import conv as cpu_conv

STEMS = ("cifar", "imagenet")


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with an identity (or 1x1 projection) shortcut."""

    filters: int
    strides: int
    conv: Callable[..., nn.Module]
    norm: Callable[..., nn.Module]
    zero_init_residual: bool = False

    expansion = 1

    @nn.compact
    def __call__(self, x):
        residual = x
        y = self.conv(self.filters, (3, 3), (self.strides, self.strides), padding=((1, 1), (1, 1)))(x)
        y = nn.relu(self.norm()(y))
        y = self.conv(self.filters, (3, 3), padding=((1, 1), (1, 1)))(y)
        y = self.norm(scale_init=_last_scale_init(self.zero_init_residual))(y)
        if residual.shape != y.shape:
            residual = self.conv(self.filters, (1, 1), (self.strides, self.strides), name="proj")(x)
            residual = self.norm(name="proj_norm")(residual)
        return nn.relu(residual + y)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided), 1x1 expand by 4, with a projection shortcut when needed."""

    filters: int
    strides: int
    conv: Callable[..., nn.Module]
    norm: Callable[..., nn.Module]
    zero_init_residual: bool = False

    expansion = 4

    @nn.compact
    def __call__(self, x):
        residual = x
        y = nn.relu(self.norm()(self.conv(self.filters, (1, 1))(x)))
        y = self.conv(self.filters, (3, 3), (self.strides, self.strides), padding=((1, 1), (1, 1)))(y)
        y = nn.relu(self.norm()(y))
        y = self.conv(self.filters * 4, (1, 1))(y)
        y = self.norm(scale_init=_last_scale_init(self.zero_init_residual))(y)
        if residual.shape != y.shape:
            residual = self.conv(self.filters * 4, (1, 1), (self.strides, self.strides), name="proj")(x)
            residual = self.norm(name="proj_norm")(residual)
        return nn.relu(residual + y)


class ResNet(nn.Module):
    """ResNet trunk: stem, four (or fewer) stages, global average pool."""

    stage_sizes: Sequence[int]
    block: type[nn.Module]
    width: float = 1.0
    stem: str = "imagenet"
    dtype: Any = jnp.float32
    remat: bool = False  # recompute each residual block's activations in the backward pass
    cpu_convolutions: bool = False  # strided convolutions with a backward pass suited to XLA:CPU (conv.py)
    zero_init_residual: bool = False  # the last BatchNorm scale of each residual branch starts at 0 (else 1)

    @property
    def feature_dim(self) -> int:
        last = _channels(64 * 2 ** (len(self.stage_sizes) - 1), self.width)
        return last * self.block.expansion

    @nn.compact
    def __call__(self, x, train: bool = True):
        if self.stem not in STEMS:
            raise ValueError(f"stem={self.stem!r}; allowed: {STEMS}")
        conv_fn = cpu_conv.conv_general_dilated if self.cpu_convolutions else lax.conv_general_dilated
        conv = functools.partial(nn.Conv, use_bias=False, dtype=self.dtype, conv_general_dilated=conv_fn)
        norm = functools.partial(
            nn.BatchNorm, use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=self.dtype
        )
        x = x.astype(self.dtype)
        base = _channels(64, self.width)
        if self.stem == "imagenet":
            x = conv(base, (7, 7), (2, 2), padding=((3, 3), (3, 3)), name="stem_conv")(x)
            x = nn.relu(norm(name="stem_norm")(x))
            x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        else:
            x = conv(base, (3, 3), padding=((1, 1), (1, 1)), name="stem_conv")(x)
            x = nn.relu(norm(name="stem_norm")(x))
        # Rematerialised blocks keep only their inputs for the backward pass (the parameter and
        # batch-statistics trees are the same), trading one more forward pass for activation memory.
        block = nn.remat(self.block) if self.remat else self.block
        for stage, num_blocks in enumerate(self.stage_sizes):
            filters = _channels(64 * 2**stage, self.width)
            for index in range(num_blocks):
                strides = 2 if stage > 0 and index == 0 else 1
                x = block(
                    filters, strides, conv, norm, self.zero_init_residual, name=f"stage{stage + 1}_block{index + 1}"
                )(x)
        return jnp.mean(x, axis=(1, 2)).astype(jnp.float32)


def _last_scale_init(zero_init_residual: bool) -> Callable:
    """The initial scale of a residual branch's last BatchNorm: 0 (the block starts as the identity) or 1."""
    return nn.initializers.zeros if zero_init_residual else nn.initializers.ones


def _channels(base: int, width: float) -> int:
    return max(1, int(round(base * width)))


# name -> (stage sizes, block). resnet10 and resnet_tiny are small variants for tests and demos.
ARCHITECTURES: dict[str, tuple[tuple[int, ...], type[nn.Module]]] = {
    "resnet_tiny": ((1, 1), BasicBlock),
    "resnet10": ((1, 1, 1, 1), BasicBlock),
    "resnet18": ((2, 2, 2, 2), BasicBlock),
    "resnet34": ((3, 4, 6, 3), BasicBlock),
    "resnet50": ((3, 4, 6, 3), Bottleneck),
    "resnet101": ((3, 4, 23, 3), Bottleneck),
    "resnet152": ((3, 8, 36, 3), Bottleneck),
    "resnet200": ((3, 24, 36, 3), Bottleneck),
}


def create_resnet(
    name: str,
    *,
    width: float = 1.0,
    stem: str = "imagenet",
    dtype: Any = jnp.float32,
    remat: bool = False,
    cpu_convolutions: bool = False,
    zero_init_residual: bool = False,
) -> ResNet:
    """Build a named ResNet; a one-line ValueError lists the names when `name` is unknown.
    `cpu_convolutions` changes how strided convolutions are differentiated, not what they compute;
    `zero_init_residual` starts each residual branch's last BatchNorm scale at zero instead of one."""
    if name not in ARCHITECTURES:
        raise ValueError(f"model.name={name!r}; allowed: {sorted(ARCHITECTURES)}")
    if stem not in STEMS:
        raise ValueError(f"model.stem={stem!r}; allowed: {STEMS}")
    if not width > 0:
        raise ValueError(f"model.width={width} must be > 0")
    stage_sizes, block = ARCHITECTURES[name]
    return ResNet(
        stage_sizes=stage_sizes,
        block=block,
        width=width,
        stem=stem,
        dtype=dtype,
        remat=remat,
        cpu_convolutions=cpu_convolutions,
        zero_init_residual=zero_init_residual,
    )
