"""The default config every recipe in `configs/` starts from, and its validation.

Recipes import `base_config()` from here (not from `configs/`), so a config file works from any
working directory and through the `jax-supcon` console script. Optional values are
`placeholder`s, so they can still be set from the command line (`--config.total_epochs=10`).
"""

from __future__ import annotations

import math

import ml_collections
from ml_collections.config_dict import placeholder

from jax_supcon.evaluate.validation import VALIDATION_METRICS
from jax_supcon.losses import CONTRAST_MODES, DENOMINATORS, LOSS_TYPES, TRIPLET_MINING
from jax_supcon.models import DTYPES
from jax_supcon.models.heads import HEADS
from jax_supcon.models.resnet import ARCHITECTURES, STEMS
from jax_supcon.optim import OPTIMIZERS, SCHEDULES

JOBS = ("pretrain", "linear_eval", "embed")
LOSSES = ("supcon", "simclr", "pair", "triplet")


def augment_config(**overrides) -> ml_collections.ConfigDict:
    """SimCLR-style view recipe: crop, flip, colour jitter (p=0.8), grayscale (p=0.2)."""
    cfg = ml_collections.ConfigDict(
        dict(
            crop_scale=(0.2, 1.0),
            crop_ratio=(3 / 4, 4 / 3),
            flip_prob=0.5,
            jitter_prob=0.8,
            brightness=0.4,
            contrast=0.4,
            saturation=0.4,
            hue=0.1,
            grayscale_prob=0.2,
            mean=(0.5, 0.5, 0.5),
            std=(0.25, 0.25, 0.25),
        )
    )
    cfg.update(overrides)
    return cfg


def base_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.job = "pretrain"
    config.seed = 0
    config.batch_size = 256  # global, over all devices and processes
    config.eval_batch_size = 256
    config.total_steps = placeholder(int)  # one of total_steps / total_epochs
    config.total_epochs = placeholder(float)
    config.log_every_steps = 50
    config.checkpoint_every_steps = 1000
    config.keep_checkpoints = 2
    config.eval_every_steps = 1000  # pretrain: kNN + retrieval validation (and at the end); 0: none
    config.best_metric = "val/encoder/knn_top1"  # pretrain: checkpoint kept as "best"; "" for none
    config.knn_k = 200
    config.knn_temperature = 0.1
    config.checkpoint = "latest"  # linear_eval / embed: "latest", "best" or a step of pretrained_workdir
    config.embed_split = "test"  # embed: which split to write
    config.plots = True  # embedding maps of the test split at the end of pretraining
    config.pretrained_workdir = placeholder(str)  # linear_eval: stage-1 workdir to restore
    config.linear_augment = True  # linear_eval: train the classifier on augmented views
    config.label_smoothing = 0.0  # linear_eval: cross-entropy label smoothing

    config.data = ml_collections.ConfigDict()
    config.data.name = "digits"
    config.data.image_size = 32
    config.data.shuffle_buffer = 50_000

    config.model = ml_collections.ConfigDict()
    config.model.name = "resnet18"
    config.model.stem = "cifar"
    config.model.width = 1.0
    config.model.head = "mlp"
    config.model.proj_dim = 128
    config.model.hidden_dim = placeholder(int)  # None: the encoder's feature width
    config.model.dtype = "float32"

    config.loss = ml_collections.ConfigDict()
    config.loss.name = "supcon"
    config.loss.temperature = 0.1
    config.loss.base_temperature = placeholder(float)
    config.loss.contrast_mode = "all"
    config.loss.num_views = 2
    config.loss.loss_type = "out"  # supcon/simclr: "out" (L_out) or "in" (L_in)
    config.loss.denominator = "all"  # supcon/simclr: "all", "one_positive", "negatives_only"
    config.loss.chunk_size = placeholder(int)  # anchors per row block; None: one block
    config.loss.margin = placeholder(float)  # pair (default 1.0) / triplet (default 0.2)
    config.loss.mining = "batch_hard"  # triplet: "batch_hard" or "batch_all"

    config.augment = augment_config()

    config.optimizer = ml_collections.ConfigDict()
    config.optimizer.name = "sgd"
    config.optimizer.learning_rate = 0.5
    config.optimizer.momentum = 0.9
    config.optimizer.nesterov = False
    config.optimizer.weight_decay = 1e-4
    config.optimizer.schedule = "cosine"
    config.optimizer.warmup_steps = placeholder(int)  # or warmup_epochs
    config.optimizer.warmup_epochs = 0.0
    return config


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


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Cheap checks with one-line messages, run before any data loading or compilation."""
    if config.job not in JOBS:
        raise ValueError(f"job={config.job!r}; allowed: {JOBS}")
    if config.loss.name not in LOSSES:
        raise ValueError(f"loss.name={config.loss.name!r}; allowed: {LOSSES}")
    if not config.loss.temperature > 0:
        raise ValueError(f"loss.temperature={config.loss.temperature} must be > 0")
    choices = {"contrast_mode": CONTRAST_MODES, "loss_type": LOSS_TYPES, "denominator": DENOMINATORS}
    for key, allowed in (choices | {"mining": TRIPLET_MINING}).items():
        if config.loss[key] not in allowed:
            raise ValueError(f"loss.{key}={config.loss[key]!r}; allowed: {allowed}")
    if config.loss.chunk_size is not None and config.loss.chunk_size <= 0:
        raise ValueError(f"loss.chunk_size={config.loss.chunk_size} must be > 0 (or unset)")
    if config.loss.margin is not None and not config.loss.margin > 0:
        raise ValueError(f"loss.margin={config.loss.margin} must be > 0 (or unset)")
    if not 0 <= config.label_smoothing < 1:
        raise ValueError(f"label_smoothing={config.label_smoothing} must be in [0, 1)")
    if config.loss.num_views < 1 or (config.loss.name == "simclr" and config.loss.num_views < 2):
        raise ValueError(f"loss.num_views={config.loss.num_views}; needs >= 2 for simclr, >= 1 for supcon")
    model = config.model
    for key, allowed in (
        ("name", tuple(sorted(ARCHITECTURES))),
        ("stem", STEMS),
        ("head", HEADS),
        ("dtype", tuple(DTYPES)),
    ):
        if model[key] not in allowed:
            raise ValueError(f"model.{key}={model[key]!r}; allowed: {allowed}")
    if not model.width > 0 or model.proj_dim < 1:
        raise ValueError(f"model.width={model.width} must be > 0 and model.proj_dim={model.proj_dim} >= 1")
    for key, allowed in (("name", OPTIMIZERS), ("schedule", SCHEDULES)):
        if config.optimizer[key] not in allowed:
            raise ValueError(f"optimizer.{key}={config.optimizer[key]!r}; allowed: {allowed}")
    if not config.optimizer.learning_rate > 0:
        raise ValueError(f"optimizer.learning_rate={config.optimizer.learning_rate} must be > 0")
    validating = config.job == "pretrain" and config.eval_every_steps > 0 and config.best_metric
    if validating and config.best_metric not in VALIDATION_METRICS:
        raise ValueError(f"best_metric={config.best_metric!r}; allowed: '' or one of {VALIDATION_METRICS}")
    if config.knn_k < 1 or not config.knn_temperature > 0:
        raise ValueError(f"knn_k={config.knn_k} must be >= 1 and knn_temperature={config.knn_temperature} > 0")
    if config.checkpoint not in ("latest", "best") and not str(config.checkpoint).isdigit():
        raise ValueError(f"checkpoint={config.checkpoint!r}; allowed: 'latest', 'best' or a step number")
    if config.eval_every_steps < 0:
        raise ValueError(f"eval_every_steps={config.eval_every_steps} must be >= 0 (0: no validation)")
    keys = (
        "log_every_steps",
        "checkpoint_every_steps",
        "batch_size",
        "eval_batch_size",
        "keep_checkpoints",
    )
    for key in keys:
        if config[key] <= 0:
            raise ValueError(f"{key}={config[key]} must be > 0")
    if config.job in ("linear_eval", "embed") and not config.pretrained_workdir:
        raise ValueError(f"{config.job} needs --config.pretrained_workdir=DIR (a stage-1 workdir)")
