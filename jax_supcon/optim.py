"""Optax optimizers and learning-rate schedules built from `config.optimizer`."""

from __future__ import annotations

import jax
import ml_collections
import optax

OPTIMIZERS = ("sgd", "lars", "adamw")
SCHEDULES = ("cosine", "constant")


def create_schedule(opt: ml_collections.ConfigDict, total_steps: int, warmup_steps: int) -> optax.Schedule:
    """Linear warmup from 0 to `learning_rate`, then cosine to 0 (or constant)."""
    if opt.schedule not in SCHEDULES:
        raise ValueError(f"optimizer.schedule={opt.schedule!r}; allowed: {SCHEDULES}")
    if opt.schedule == "constant":
        warmup = optax.linear_schedule(0.0, opt.learning_rate, max(warmup_steps, 1))
        return optax.join_schedules([warmup, optax.constant_schedule(opt.learning_rate)], [warmup_steps])
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=opt.learning_rate,
        warmup_steps=warmup_steps,
        decay_steps=max(total_steps, warmup_steps + 1),
        end_value=0.0,
    )


def _decay_mask(params):
    """Weight decay on kernels only, not on biases or BatchNorm scales (rank <= 1)."""
    return jax.tree.map(lambda p: p.ndim > 1, params)


def create_optimizer(
    opt: ml_collections.ConfigDict, total_steps: int, warmup_steps: int
) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """The optimizer named by `optimizer.name` with its schedule."""
    if opt.name not in OPTIMIZERS:
        raise ValueError(f"optimizer.name={opt.name!r}; allowed: {OPTIMIZERS}")
    if not opt.learning_rate > 0:
        raise ValueError(f"optimizer.learning_rate={opt.learning_rate} must be > 0")
    schedule = create_schedule(opt, total_steps, warmup_steps)
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
            momentum=opt.momentum,
            nesterov=opt.nesterov,
        )
    else:
        tx = optax.adamw(schedule, weight_decay=opt.weight_decay, mask=_decay_mask)
    return tx, schedule
