"""Vision Transformer encoders (Dosovitskiy et al. 2021), Flax linen.

Pre-norm blocks (LayerNorm, multi-head self-attention, LayerNorm, GELU MLP of `mlp_ratio` x the
width), learned position embeddings, and the layer shapes of timm's `VisionTransformer`, so
parameter counts match it (`vit_base_patch16_224` with a 1000-way head: 86,567,656). The patch
embedding is a dense layer on flattened `patch x patch x 3` patches: timm's strided convolution
written as the matrix product it is, which is as fast on every backend (XLA:CPU differentiates a
strided convolution slowly).

The encoder returns the pooled feature (`width` wide): the class token after the final norm
(`pool="cls"`), or the mean of the patch tokens followed by the final norm (`pool="gap"`, no class
token; timm's `global_pool="avg"` with `fc_norm`). Position embeddings are made for a grid of
`pos_grid` x `pos_grid` patches; another input size interpolates them (bicubic, as timm does), so a
checkpoint trained at one size evaluates or fine-tunes at another.

Training-time randomness (dropout, stochastic depth) draws from the `dropout` RNG stream; with
`train=False` the model is deterministic and needs none.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

POOLS = ("cls", "gap")
LAYER_NORM_EPSILON = 1e-6  # timm's ViT

# name -> (width, depth, heads); MLP ratio 4 for all.
VIT_ARCHITECTURES: dict[str, tuple[int, int, int]] = {
    "vit_tiny": (192, 12, 3),
    "vit_small": (384, 12, 6),
    "vit_base": (768, 12, 12),
    "vit_large": (1024, 24, 16),
    "vit_micro": (64, 2, 2),  # for tests and smoke runs
}
MLP_RATIO = 4

dense = functools.partial(nn.Dense, kernel_init=nn.initializers.xavier_uniform())


def drop_path(x: jax.Array, rate: jax.Array | float, rng: jax.Array) -> jax.Array:
    """Stochastic depth (Huang et al. 2016): the whole residual branch of each example is dropped
    with probability `rate`, and kept ones are scaled by 1 / (1 - rate)."""
    keep = 1.0 - jnp.asarray(rate, jnp.float32)
    mask = jax.random.bernoulli(rng, keep, (x.shape[0],) + (1,) * (x.ndim - 1))
    return jnp.where(mask, x / keep.astype(x.dtype), jnp.zeros_like(x))


class SelfAttention(nn.Module):
    """Multi-head self-attention with one fused `qkv` projection (timm's layout) and
    `jax.nn.dot_product_attention` (the cuDNN flash kernel where the backend has one)."""

    num_heads: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        batch, tokens, width = x.shape
        head_dim = width // self.num_heads
        qkv = dense(3 * width, dtype=self.dtype, name="qkv")(x)
        q, k, v = jnp.moveaxis(qkv.reshape(batch, tokens, 3, self.num_heads, head_dim), 2, 0)
        y = jax.nn.dot_product_attention(q, k, v)
        return dense(width, dtype=self.dtype, name="proj")(y.reshape(batch, tokens, width))


class EncoderBlock(nn.Module):
    """x + attention(norm(x)), then x + MLP(norm(x)); each branch with dropout and, when
    `stochastic_depth`, dropped per example at rate `drop_rate` (an argument, so a scanned stack
    gives each block its own rate)."""

    num_heads: int
    mlp_dim: int
    dropout: float = 0.0
    stochastic_depth: bool = False
    train: bool = True
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, drop_rate):
        norm = functools.partial(nn.LayerNorm, epsilon=LAYER_NORM_EPSILON, dtype=self.dtype)
        dropout = nn.Dropout(self.dropout, deterministic=not self.train)

        def residual(x, branch):
            if self.train and self.stochastic_depth:
                branch = drop_path(branch, drop_rate, self.make_rng("dropout"))
            return x + branch

        y = SelfAttention(self.num_heads, dtype=self.dtype, name="attn")(norm(name="norm1")(x))
        x = residual(x, dropout(y))
        y = dense(self.mlp_dim, dtype=self.dtype, name="fc1")(norm(name="norm2")(x))
        y = dense(x.shape[-1], dtype=self.dtype, name="fc2")(dropout(nn.gelu(y, approximate=False)))
        return residual(x, dropout(y)), None


class VisionTransformer(nn.Module):
    """ViT trunk: patch embedding, position embeddings (+ class token), `depth` blocks, final
    norm, pooled feature. `remat` recomputes each block in the backward pass; `scan` runs the
    blocks as one `nn.scan` (parameters stacked under `blocks`, one compiled block)."""

    width: int
    depth: int
    num_heads: int
    mlp_dim: int
    patch_size: int = 16
    pool: str = "cls"
    pos_grid: int | None = None  # None: the grid of the input the parameters are created with
    drop_path: float = 0.0  # stochastic depth of the last block; linearly from 0 at the first
    dropout: float = 0.0
    dtype: Any = jnp.float32
    remat: bool = False
    scan: bool = False

    @property
    def feature_dim(self) -> int:
        return self.width

    def patches(self, images: jax.Array) -> jax.Array:
        """[B, H, W, C] -> [B, (H/p)(W/p), p*p*C], patches in row-major order."""
        b, h, w, c = images.shape
        p = self.patch_size
        if h % p or w % p:
            raise ValueError(f"image size {h}x{w} is not divisible by model.patch_size={p}")
        x = images.reshape(b, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
        return x.reshape(b, (h // p) * (w // p), p * p * c)

    @nn.compact
    def __call__(self, x, train: bool = True):
        if self.pool not in POOLS:
            raise ValueError(f"model.pool={self.pool!r}; allowed: {POOLS}")
        grid = x.shape[1] // self.patch_size
        x = dense(self.width, dtype=self.dtype, name="patch_embed")(self.patches(x.astype(self.dtype)))
        prefix = 1 if self.pool == "cls" else 0
        made_for = self.pos_grid or grid
        if self.has_variable("params", "pos_embedding"):  # applied: the grid the parameters were made for
            made_for = round((self.get_variable("params", "pos_embedding").shape[1] - prefix) ** 0.5)
        pos = self.param(
            "pos_embedding", nn.initializers.normal(0.02), (1, prefix + made_for * made_for, self.width), jnp.float32
        )
        pos = interpolate_position_embedding(pos, prefix, grid)
        if prefix:
            cls = self.param("cls_token", nn.initializers.zeros, (1, 1, self.width), jnp.float32)
            x = jnp.concatenate([jnp.broadcast_to(cls, (x.shape[0], 1, self.width)).astype(x.dtype), x], axis=1)
        x = nn.Dropout(self.dropout, deterministic=not train)(x + pos.astype(x.dtype))
        rates = np.linspace(0.0, self.drop_path, self.depth)
        block = nn.remat(EncoderBlock) if self.remat else EncoderBlock
        options = {
            "num_heads": self.num_heads,
            "mlp_dim": self.mlp_dim,
            "dropout": self.dropout,
            "stochastic_depth": self.drop_path > 0,
            "train": train,
            "dtype": self.dtype,
        }
        if self.scan:
            stack = nn.scan(
                block, variable_axes={"params": 0}, split_rngs={"params": True, "dropout": True}, length=self.depth
            )
            x, _ = stack(**options, name="blocks")(x, jnp.asarray(rates, jnp.float32))
        else:
            for index in range(self.depth):
                x, _ = block(**options, name=f"block{index}")(x, float(rates[index]))
        norm = nn.LayerNorm(epsilon=LAYER_NORM_EPSILON, dtype=self.dtype, name="norm")
        pooled = norm(x)[:, 0] if prefix else norm(jnp.mean(x, axis=1))
        return pooled.astype(jnp.float32)


def interpolate_position_embedding(pos: jax.Array, prefix: int, grid: int) -> jax.Array:
    """Position embeddings `[1, prefix + g*g, width]` made for a g x g grid, resized (bicubic) to
    `grid` x `grid`; the prefix (class token) embedding is kept as is."""
    made_for = round((pos.shape[1] - prefix) ** 0.5)
    if made_for == grid:
        return pos
    patch = pos[:, prefix:].reshape(1, made_for, made_for, -1)
    patch = jax.image.resize(patch, (1, grid, grid, patch.shape[-1]), method="bicubic", antialias=False)
    return jnp.concatenate([pos[:, :prefix], patch.reshape(1, grid * grid, -1)], axis=1)


def forward_flops(model: VisionTransformer, image_size: int) -> float:
    """Analytic FLOPs of one image's forward pass (a multiply-add counted as 2): the patch
    embedding, then per block 2 x 12 width^2 per token for the qkv, output and MLP matrices
    (MLP ratio 4) and 2 x 2 tokens^2 x width for the two attention products. Norms, softmax and
    GELU are left out, as in the usual 2 x parameters x tokens estimate plus attention."""
    grid = image_size // model.patch_size
    tokens = grid * grid + (1 if model.pool == "cls" else 0)
    width = model.width
    patch_embed = 2 * grid * grid * model.patch_size**2 * 3 * width
    matrices = 2 * tokens * (4 * width * width + 2 * width * model.mlp_dim)
    attention = 2 * 2 * tokens * tokens * width
    return float(patch_embed + model.depth * (matrices + attention))


def check_vit_options(name: str, *, width: int, heads: int, patch_size: int, pool: str, image_size: int | None) -> None:
    """One-line errors for ViT options that cannot build a model."""
    if pool not in POOLS:
        raise ValueError(f"model.pool={pool!r}; allowed: {POOLS}")
    if not (isinstance(patch_size, int) and patch_size >= 1):
        raise ValueError(f"model.patch_size={patch_size!r} must be a positive integer")
    if width % heads:
        raise ValueError(f"{name}: {heads} heads do not divide the width {width}; the head count must divide it")
    if image_size is not None and image_size % patch_size:
        raise ValueError(
            f"data.image_size={image_size} is not divisible by model.patch_size={patch_size}; "
            f"use a multiple of {patch_size}"
        )


def create_vit(
    name: str,
    *,
    patch_size: int = 16,
    pool: str = "cls",
    pos_grid: int | None = None,
    drop_path: float = 0.0,
    dropout: float = 0.0,
    dtype: Any = jnp.float32,
    remat: bool = False,
    scan: bool = False,
    num_heads: int | None = None,
) -> VisionTransformer:
    """Build a named ViT (`num_heads` overrides the architecture's head count)."""
    if name not in VIT_ARCHITECTURES:
        raise ValueError(f"model.name={name!r}; allowed: {sorted(VIT_ARCHITECTURES)}")
    width, depth, heads = VIT_ARCHITECTURES[name]
    heads = num_heads or heads
    check_vit_options(name, width=width, heads=heads, patch_size=patch_size, pool=pool, image_size=None)
    return VisionTransformer(
        width=width,
        depth=depth,
        num_heads=heads,
        mlp_dim=MLP_RATIO * width,
        patch_size=patch_size,
        pool=pool,
        pos_grid=pos_grid,
        drop_path=drop_path,
        dropout=dropout,
        dtype=dtype,
        remat=remat,
        scan=scan,
    )
