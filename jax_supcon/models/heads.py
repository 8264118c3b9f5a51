"""Projection heads and the linear classifier, plus the encoder + head model of stage 1."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

HEADS = ("mlp", "linear")


def l2_normalize(x: jnp.ndarray, eps: float = 1e-12) -> jnp.ndarray:
    """Unit-norm rows in float32 (the loss expects normalised features)."""
    x = x.astype(jnp.float32)
    return x * jnp.reciprocal(jnp.sqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), eps * eps)))


class ProjectionHead(nn.Module):
    """`mlp`: Dense(hidden) -> ReLU -> Dense(out), as in SimCLR / SupCon; `linear`: Dense(out).

    `hidden_dim=None` uses the input width, as the reference implementations do.
    """

    kind: str = "mlp"
    proj_dim: int = 128
    hidden_dim: int | None = None
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        if self.kind not in HEADS:
            raise ValueError(f"model.head={self.kind!r}; allowed: {HEADS}")
        if self.kind == "mlp":
            x = nn.relu(nn.Dense(self.hidden_dim or x.shape[-1], dtype=self.dtype, name="hidden")(x))
        return nn.Dense(self.proj_dim, dtype=self.dtype, name="out")(x)


class LinearClassifier(nn.Module):
    """The linear layer of stage-2 evaluation (and of the cross-entropy baseline)."""

    num_classes: int

    @nn.compact
    def __call__(self, x):
        return nn.Dense(self.num_classes, name="linear")(x.astype(jnp.float32))


class ContrastiveModel(nn.Module):
    """Encoder followed by a projection head and L2 normalisation, and optionally an online linear
    probe (`probe_classes > 0`) on stop-gradient encoder features, as SimCLR and BYOL monitor
    pretraining: it learns to classify without changing the encoder.

    Parameters live under `encoder`, `head` and `probe`, so stage 2 can restore `encoder` alone.
    """

    encoder: nn.Module
    head: nn.Module
    probe_classes: int = 0

    def setup(self):
        self.probe = LinearClassifier(self.probe_classes) if self.probe_classes else None

    def __call__(self, x, train: bool = True):
        return self.with_probe(x, train=train)[0]

    def with_probe(self, x, train: bool = True):
        """(normalised projections, probe logits on stop-gradient features or None without a
        probe, encoder features): what a pretraining step trains on, monitors and measures."""
        features = self.encoder(x, train=train)
        logits = None if self.probe is None else self.probe(jax.lax.stop_gradient(features))
        return l2_normalize(self.head(features)), logits, features

    def embed(self, x):
        """(encoder features, normalised projections) in inference mode: what evaluation uses."""
        features = self.encoder(x, train=False)
        return features, l2_normalize(self.head(features))


class SupervisedModel(nn.Module):
    """Encoder followed by a linear classifier, trained end to end with cross-entropy: the
    supervised baseline. Parameters live under `encoder` and `classifier`."""

    encoder: nn.Module
    classifier: nn.Module

    def __call__(self, x, train: bool = True):
        return self.classifier(self.encoder(x, train=train))

    def features(self, x):
        """(encoder features,) in inference mode: what open-set evaluation of the baseline retrieves with."""
        return (self.encoder(x, train=False),)
