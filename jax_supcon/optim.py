"""Optax optimizers and learning-rate schedules built from `config.optimizer`."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from ml_collections.config_dict import placeholder

OPTIMIZERS = ("sgd", "lars", "adamw")
SCHEDULES = ("cosine", "step", "constant")
LR_SCALINGS = ("none", "linear", "sqrt")


def peak_learning_rate(opt: ml_collections.ConfigDict, batch_size: int) -> float:
    """`optimizer.learning_rate` scaled by the global batch: `linear` is lr x batch / 256 (Goyal et
    al.; SupCon, MoCo), `sqrt` is lr x sqrt(batch) (SimCLR's 0.075 x sqrt(4096) = 4.8), `none` as is."""
    scaling = opt.get("lr_scaling", "none")
    if scaling not in LR_SCALINGS:
        raise ValueError(f"optimizer.lr_scaling={scaling!r}; allowed: {LR_SCALINGS}")
    factor = {"none": 1.0, "linear": batch_size / 256, "sqrt": math.sqrt(batch_size)}[scaling]
    return opt.learning_rate * factor


def step_boundaries(opt: ml_collections.ConfigDict, total_steps: int) -> list[int]:
    """`optimizer.decay_boundaries` (fractions of the run, increasing, in (0, 1)) as step numbers."""
    fractions = tuple(opt.get("decay_boundaries", ()))
    if any(not 0 < f < 1 for f in fractions) or list(fractions) != sorted(set(fractions)):
        raise ValueError(f"optimizer.decay_boundaries={fractions} must be increasing fractions of the run in (0, 1)")
    return [round(f * total_steps) for f in fractions]


def decay_scales(boundaries: list[int], warmup_steps: int, rate: float) -> dict[int, float]:
    """Step-schedule scales by step after the warmup: every boundary multiplies the rate by `rate`,
    boundaries that round to the same step multiply together, and those inside the warmup apply
    when it ends."""
    scales: dict[int, float] = {}
    for boundary in boundaries:
        at = max(boundary - warmup_steps, 0)
        scales[at] = scales.get(at, 1.0) * rate
    return scales


def create_schedule(
    opt: ml_collections.ConfigDict, total_steps: int, warmup_steps: int, batch_size: int = 256
) -> optax.Schedule:
    """Linear warmup from 0 to the (batch-scaled) peak learning rate, then `cosine` to 0, `step`
    (times `decay_rate` at each of `decay_boundaries`, SupContrast's schedule; see `decay_scales`)
    or `constant`."""
    if opt.schedule not in SCHEDULES:
        raise ValueError(f"optimizer.schedule={opt.schedule!r}; allowed: {SCHEDULES}")
    peak = peak_learning_rate(opt, batch_size)
    if opt.schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(
            init_value=0.0,
            peak_value=peak,
            warmup_steps=warmup_steps,
            decay_steps=max(total_steps, warmup_steps + 1),
            end_value=0.0,
        )
    if opt.schedule == "step":
        rate = opt.get("decay_rate", 0.1)
        if not 0 <= rate <= 1:
            raise ValueError(f"optimizer.decay_rate={rate} must be in [0, 1]")
        after = optax.piecewise_constant_schedule(
            peak, decay_scales(step_boundaries(opt, total_steps), warmup_steps, rate)
        )
    else:
        after = optax.constant_schedule(peak)
    warmup = optax.linear_schedule(0.0, peak, max(warmup_steps, 1))
    return optax.join_schedules([warmup, after], [warmup_steps])


def _path_names(path) -> list[str]:
    """The dict keys of a `tree_map_with_path` path, as strings."""
    return [str(getattr(key, "key", key)) for key in path]


def _decay_mask(params):
    """Weight decay (and LARS's trust ratio) on the kernels of dense and convolution layers only,
    chosen by parameter name: not on biases, norm scales and offsets, position embeddings or the
    class token (ViT recipes; for a ResNet the same set as the rank > 1 rule)."""
    return jax.tree_util.tree_map_with_path(lambda path, _: _path_names(path)[-1] == "kernel", params)


def vit_layer_ids(params, depth: int):
    """Each parameter's layer for layer-wise learning-rate decay (BEiT, MAE): 0 for the ViT
    encoder's embeddings (`patch_embed`, `pos_embedding`, `cls_token`), i + 1 for its block i
    (a vector 1..depth for the stacked `blocks` of a scanned encoder), depth + 1 for everything
    after (final norm, classifier, head)."""

    def layer(path, leaf):
        keys = _path_names(path)
        if "encoder" not in keys[:1]:
            return depth + 1
        part = keys[1]
        if part in ("patch_embed", "pos_embedding", "cls_token"):
            return 0
        if part == "blocks":
            return np.arange(1, depth + 1).reshape((depth,) + (1,) * (leaf.ndim - 1))
        if part.startswith("block"):
            return int(part[len("block") :]) + 1
        return depth + 1

    return jax.tree_util.tree_map_with_path(layer, params)


def encoder_depth(params) -> int:
    """Blocks of the ViT encoder under `params["encoder"]` (0 when it has none: not a ViT)."""
    encoder = params.get("encoder", {})
    if "blocks" in encoder:
        return int(jax.tree.leaves(encoder["blocks"])[0].shape[0])
    return sum(1 for key in encoder if key.startswith("block") and key[len("block") :].isdigit())


def scale_by_layer_decay(decay: float) -> optax.GradientTransformation:
    """Layer-wise learning-rate decay: each update times `decay ** (depth + 1 - layer)` with
    `vit_layer_ids`' layers, so the classifier keeps the full rate and each block below it
    `decay` times the one above. Applied after the optimizer, like `scale_subtree`."""

    def update(updates, state, params=None):
        del params
        depth = encoder_depth(updates)
        if not depth:
            raise ValueError(f"optimizer.layer_decay={decay} needs a ViT encoder (model.name vit_*)")
        layers = vit_layer_ids(updates, depth)
        scaled = jax.tree.map(lambda u, layer: u * jnp.asarray(decay ** (depth + 1 - layer), u.dtype), updates, layers)
        return scaled, state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def create_optimizer(
    opt: ml_collections.ConfigDict, total_steps: int, warmup_steps: int, batch_size: int = 256
) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """The optimizer named by `optimizer.name` with its schedule (peak scaled for `batch_size`)."""
    if opt.name not in OPTIMIZERS:
        raise ValueError(f"optimizer.name={opt.name!r}; allowed: {OPTIMIZERS}")
    if not opt.learning_rate >= 0:
        raise ValueError(f"optimizer.learning_rate={opt.learning_rate} must be >= 0")
    clip = opt.get("clip_grad_norm")
    if clip is not None and not clip > 0:
        raise ValueError(f"optimizer.clip_grad_norm={clip} must be > 0 (or unset: no clipping)")
    schedule = create_schedule(opt, total_steps, warmup_steps, batch_size)
    if opt.name == "sgd":
        tx = optax.chain(
            optax.add_decayed_weights(opt.weight_decay, mask=_decay_mask),
            optax.sgd(schedule, momentum=opt.momentum, nesterov=opt.nesterov),
        )
    elif opt.name == "lars":
        tx = optax.lars(
            schedule,
            weight_decay=opt.weight_decay,
            weight_decay_mask=_decay_mask,
            trust_ratio_mask=_decay_mask,
            trust_coefficient=opt.get("lars_trust_coefficient", 0.001),
            momentum=opt.momentum,
            nesterov=opt.nesterov,
        )
    else:
        tx = optax.adamw(schedule, weight_decay=opt.weight_decay, mask=_decay_mask)
    if clip is not None:  # on the raw gradients, before weight decay and momentum
        tx = optax.chain(optax.clip_by_global_norm(clip), tx)
    return tx, schedule


def scale_subtree(name: str, factor: float) -> optax.GradientTransformation:
    """Multiply the updates of the parameters under top-level key `name` by `factor`, after the
    optimizer: with every optimizer here the update is proportional to the learning rate, so this
    is that subtree's learning rate times `factor` (fine-tuning's `encoder_lr_multiplier`)."""

    def update(updates, state, params=None):
        del params
        return {**updates, name: jax.tree.map(lambda u: u * factor, updates[name])}, state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def validate_optimizer_config(opt: ml_collections.ConfigDict) -> None:
    """One-line errors for a bad `config.optimizer` section."""
    for key, allowed in (("name", OPTIMIZERS), ("schedule", SCHEDULES), ("lr_scaling", LR_SCALINGS)):
        if opt[key] not in allowed:
            raise ValueError(f"optimizer.{key}={opt[key]!r}; allowed: {allowed}")
    if not opt.learning_rate >= 0:
        raise ValueError(f"optimizer.learning_rate={opt.learning_rate} must be >= 0")
    if not opt.weight_decay >= 0 or not 0 <= opt.momentum < 1:
        raise ValueError(
            f"optimizer.weight_decay={opt.weight_decay} must be >= 0 and optimizer.momentum={opt.momentum} in [0, 1)"
        )
    if opt.clip_grad_norm is not None and not opt.clip_grad_norm > 0:
        raise ValueError(f"optimizer.clip_grad_norm={opt.clip_grad_norm} must be > 0 (or unset: no clipping)")
    if not 0 < opt.get("layer_decay", 1.0) <= 1:
        raise ValueError(f"optimizer.layer_decay={opt.layer_decay} must be in (0, 1] (1: off)")
    if not opt.get("encoder_lr_multiplier", 1.0) >= 0:
        raise ValueError(f"optimizer.encoder_lr_multiplier={opt.encoder_lr_multiplier} must be >= 0 (0: frozen)")
    if not 0 <= opt.decay_rate <= 1:
        raise ValueError(f"optimizer.decay_rate={opt.decay_rate} must be in [0, 1]")
    step_boundaries(opt, total_steps=1)


def optimizer_config() -> ml_collections.ConfigDict:
    """The `config.optimizer` section's defaults (validated by `validate_optimizer_config`)."""
    section = ml_collections.ConfigDict()
    section.name = "sgd"
    section.learning_rate = 0.5  # base rate; the peak is this times the lr_scaling factor
    section.lars_trust_coefficient = 0.001  # LARS eta (SimCLR, SupCon: 0.001; solo-learn: 0.02)
    section.lr_scaling = "none"  # "linear": lr x batch/256; "sqrt": lr x sqrt(batch) (SimCLR)
    section.momentum = 0.9
    section.nesterov = False
    section.weight_decay = 1e-4
    section.schedule = "cosine"  # "cosine", "step" or "constant", after the warmup
    section.decay_boundaries = (0.7, 0.8, 0.9)  # step: fractions of the run (SupContrast: 700,800,900/1000)
    section.decay_rate = 0.1  # step: the learning rate is multiplied by this at each boundary
    section.encoder_lr_multiplier = 1.0  # finetune: the encoder's learning rate over the classifier's
    # finetune/supervised with a ViT: layer-wise learning-rate decay, block i of d at
    # layer_decay ** (d - i) times the classifier's rate, the embeddings at layer_decay ** (d + 1); 1: off
    section.layer_decay = 1.0
    section.clip_grad_norm = placeholder(float)  # clip gradients to this global norm; None: no clipping
    section.warmup_steps = placeholder(int)  # or warmup_epochs
    section.warmup_epochs = 0.0
    return section
