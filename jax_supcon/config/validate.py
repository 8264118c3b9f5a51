"""A whole config checked before any data loading or compilation: each section by its owner
(data, augmentation recipes, model, loss, optimizer, validation), the run-level keys here; and
the run's length resolved from steps or epochs in one place."""

from __future__ import annotations

import math
import os

import ml_collections

from jax_supcon import losses, models, optim
from jax_supcon.config.base import JOBS
from jax_supcon.data import classes, recipes, sources
from jax_supcon.evaluate import evaluators, validation
from jax_supcon.report import tracking

POSITIVE_RUN_KEYS = (
    "log_every_steps",
    "checkpoint_every_steps",
    "batch_size",
    "eval_batch_size",
    "keep_checkpoints",
    "keep_best",
)


def resolve_steps(config: ml_collections.ConfigDict, num_train_examples: int) -> tuple[int, int]:
    """(total_steps, warmup_steps) from steps or epochs: the one place durations are resolved."""
    if config.batch_size > num_train_examples:
        raise ValueError(
            f"batch_size={config.batch_size} is larger than the training split ({num_train_examples} examples)"
        )
    steps_per_epoch = num_train_examples // config.batch_size
    if (config.total_steps is None) == (config.total_epochs is None):
        raise ValueError(f"set exactly one of total_steps={config.total_steps} and total_epochs={config.total_epochs}")
    if config.total_steps is not None:
        total = int(config.total_steps)
    else:
        total = math.ceil(config.total_epochs * steps_per_epoch)
    if total <= 0:
        raise ValueError(f"the run must have > 0 steps, got {total}")
    opt = config.optimizer
    if opt.warmup_steps is not None:
        warmup = int(opt.warmup_steps)
    else:
        warmup = math.ceil(opt.warmup_epochs * steps_per_epoch)
    if not 0 <= warmup < total:
        raise ValueError(f"warmup ({warmup} steps) must be >= 0 and shorter than the run ({total} steps)")
    return total, warmup


def check_pretrained_workdir(workdir: str) -> None:
    """A stage 2's `pretrained_workdir` exists ("" or None: none is read). `jax-supcon` checks it with
    the config, before it loads TensorFlow and the job (the line then comes in about 4 s instead of
    16), and `train.pretrained` before it restores; it is not part of `validate_config` because a
    sweep validates stage 2 before its stage 1 has run."""
    if workdir and not os.path.isdir(workdir):
        raise FileNotFoundError(f"pretrained_workdir={workdir!r} does not exist")


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Cheap checks with one-line messages, run before any data loading or compilation."""
    if config.job not in JOBS:
        raise ValueError(f"job={config.job!r}; allowed: {JOBS}")
    if not 0 <= config.seed < 2**31:
        raise ValueError(f"seed={config.seed} must be in [0, 2**31)")
    losses.validate_loss_config(config.loss)
    if not 0 <= config.label_smoothing < 1:
        raise ValueError(f"label_smoothing={config.label_smoothing} must be in [0, 1)")
    models.validate_model_config(config.model, config.data.image_size)
    optim.validate_optimizer_config(config.optimizer)
    validation.validate_validation_config(config)
    evaluators.validate_evaluators_config(config)
    tracking.validate_wandb_config(config.get("wandb"))
    if config.checkpoint not in ("latest", "best") and not str(config.checkpoint).isdigit():
        raise ValueError(f"checkpoint={config.checkpoint!r}; allowed: 'latest', 'best' or a step number")
    for key in POSITIVE_RUN_KEYS:
        if config[key] <= 0:
            raise ValueError(f"{key}={config[key]} must be > 0")
    losses.validate_queue_config(config.loss, config.batch_size)
    if not 0 <= config.model.momentum < 1:
        raise ValueError(f"model.momentum={config.model.momentum} must be in [0, 1) (0: no momentum encoder)")
    if not 0 <= config.ema_decay < 1:
        raise ValueError(f"ema_decay={config.ema_decay} must be in [0, 1) (0: no EMA)")
    if config.eval_with_ema and not config.ema_decay:
        raise ValueError("eval_with_ema=True needs ema_decay > 0 (e.g. --config.ema_decay=0.999)")
    if not isinstance(config.get("stop_on_collapse", True), bool):
        raise ValueError(f"stop_on_collapse={config.stop_on_collapse!r}; allowed: True, False")
    if config.precompute_features and config.linear_augment:
        raise ValueError("precompute_features=True needs linear_augment=False (augmented views change every step)")
    sources.validate_data_config(config.data, config.batch_size)
    classes.check_spec_syntax(config.data.train_classes)
    recipes.validate_augment_config(config.augment)
    if config.optimizer.layer_decay != 1.0 and config.job not in ("finetune", "supervised"):
        raise ValueError(
            f"optimizer.layer_decay={config.optimizer.layer_decay} applies to end-to-end training "
            f"(job finetune or supervised), not job={config.job!r}; leave it at 1.0"
        )
    if config.model.get("init_from", "") and config.job not in ("pretrain", "supervised", "finetune"):
        raise ValueError(
            f"model.init_from={config.model.init_from!r} is not read by job {config.job!r} (its encoder comes from "
            "pretrained_workdir); allowed with job pretrain, supervised or finetune"
        )
    if config.job in ("linear_eval", "embed") and not config.pretrained_workdir:
        raise ValueError(f"{config.job} needs --config.pretrained_workdir=DIR (a stage-1 workdir)")
