"""Optax optimizers and learning-rate schedules built from `config.optimizer`."""

from __future__ import annotations

import math

import jax
import ml_collections
import optax

OPTIMIZERS = ("sgd", "lars", "adamw")
SCHEDULES = ("cosine", "constant")
LR_SCALINGS = ("none", "linear", "sqrt")


def peak_learning_rate(opt: ml_collections.ConfigDict, batch_size: int) -> float:
    """`optimizer.learning_rate` scaled by the global batch: `linear` is lr x batch / 256 (Goyal et
    al.; SupCon, MoCo), `sqrt` is lr x sqrt(batch) (SimCLR's 0.075 x sqrt(4096) = 4.8), `none` as is."""
    scaling = opt.get("lr_scaling", "none")
    if scaling not in LR_SCALINGS:
        raise ValueError(f"optimizer.lr_scaling={scaling!r}; allowed: {LR_SCALINGS}")
    factor = {"none": 1.0, "linear": batch_size / 256, "sqrt": math.sqrt(batch_size)}[scaling]
    return opt.learning_rate * factor


def create_schedule(
    opt: ml_collections.ConfigDict, total_steps: int, warmup_steps: int, batch_size: int = 256
) -> optax.Schedule:
    """Linear warmup from 0 to the (batch-scaled) peak learning rate, then cosine to 0 (or constant)."""
    if opt.schedule not in SCHEDULES:
        raise ValueError(f"optimizer.schedule={opt.schedule!r}; allowed: {SCHEDULES}")
    peak = peak_learning_rate(opt, batch_size)
    if opt.schedule == "constant":
        warmup = optax.linear_schedule(0.0, peak, max(warmup_steps, 1))
        return optax.join_schedules([warmup, optax.constant_schedule(peak)], [warmup_steps])
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=peak,
        warmup_steps=warmup_steps,
        decay_steps=max(total_steps, warmup_steps + 1),
        end_value=0.0,
    )


def _decay_mask(params):
    """Weight decay on kernels only, not on biases or BatchNorm scales (rank <= 1)."""
    return jax.tree.map(lambda p: p.ndim > 1, params)


def create_optimizer(
    opt: ml_collections.ConfigDict, total_steps: int, warmup_steps: int, batch_size: int = 256
) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """The optimizer named by `optimizer.name` with its schedule (peak scaled for `batch_size`)."""
    if opt.name not in OPTIMIZERS:
        raise ValueError(f"optimizer.name={opt.name!r}; allowed: {OPTIMIZERS}")
    if not opt.learning_rate > 0:
        raise ValueError(f"optimizer.learning_rate={opt.learning_rate} must be > 0")
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
    return tx, schedule
