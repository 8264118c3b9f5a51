"""The default config every recipe in `configs/` starts from, and its validation.

Recipes import `base_config()` from here (not from `configs/`), so a config file works from any
working directory and through the `jax-supcon` console script. Optional values are
`placeholder`s, so they can still be set from the command line (`--config.total_epochs=10`).
"""

from __future__ import annotations

import math

import ml_collections
from ml_collections.config_dict import placeholder

from jax_supcon.data.sources import check_name
from jax_supcon.evaluate.validation import VALIDATION_METRICS
from jax_supcon.losses import CONTRAST_MODES, DENOMINATORS, LOSS_TYPES, TRIPLET_MINING
from jax_supcon.models import DTYPES
from jax_supcon.models.heads import HEADS
from jax_supcon.models.resnet import ARCHITECTURES, STEMS
from jax_supcon.optim import LR_SCALINGS, OPTIMIZERS, SCHEDULES, step_boundaries

JOBS = ("pretrain", "linear_eval", "embed", "supervised")
LOSSES = ("supcon", "simclr", "pair", "triplet")


# Every op field of a view and its default: the `supcon_cifar` recipe (the PyTorch SupContrast
# reference). A recipe changes some of them, for all views or (`view1`, `view2`, ...) per view.
AUGMENT_OP_DEFAULTS = dict(
    crop_scale=(0.2, 1.0),  # random-resized-crop area fraction (on the host for varying-size images)
    crop_ratio=(3 / 4, 4 / 3),
    flip_prob=0.5,
    jitter_prob=0.8,  # colour jitter, its four adjustments in a random order
    brightness=0.4,  # additive delta in [-b, b]
    contrast=0.4,  # factor in [max(0, 1 - c), 1 + c]
    saturation=0.4,
    hue=0.1,  # fraction of the colour circle in [-h, h]
    grayscale_prob=0.2,
    blur_prob=0.0,  # Gaussian blur, kernel ~10% of the side
    blur_sigma=(0.1, 2.0),
    solarize_prob=0.0,  # threshold 0.5
    randaugment_num_ops=0,  # RandAugment N (0: off), ops drawn per example
    randaugment_magnitude=9.0,  # RandAugment M on timm's 0..10 scale
)
AUGMENT_RECIPES = {
    "supcon_cifar": {},
    "simclr": dict(crop_scale=(0.08, 1.0), brightness=0.8, contrast=0.8, saturation=0.8, hue=0.2, blur_prob=0.5),
    # BYOL's two asymmetric views; views past the second use the flat fields (SimCLR's blur_prob).
    "byol": dict(
        crop_scale=(0.08, 1.0),
        saturation=0.2,
        blur_prob=0.5,
        view1=dict(blur_prob=1.0, solarize_prob=0.0),
        view2=dict(blur_prob=0.1, solarize_prob=0.2),
    ),
    "randaugment": dict(crop_scale=(0.08, 1.0), jitter_prob=0.0, grayscale_prob=0.0, randaugment_num_ops=2),
    "none": dict(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), flip_prob=0.0, jitter_prob=0.0, grayscale_prob=0.0),
}
AUGMENT_PROBS = ("flip_prob", "jitter_prob", "grayscale_prob", "blur_prob", "solarize_prob")
AUGMENT_VIEW_KEYS = ("view1", "view2")  # in every augment config, so the command line can set them


def _is_view_key(name: str) -> bool:
    return name.startswith("view") and name[4:].isdigit() and int(name[4:]) >= 1


def _unset_op_fields() -> ml_collections.ConfigDict:
    """Every op field as an unset, typed placeholder: None means "the recipe's value"."""
    return ml_collections.ConfigDict({key: placeholder(type(value)) for key, value in AUGMENT_OP_DEFAULTS.items()})


def augment_config(recipe: str = "supcon_cifar", **overrides) -> ml_collections.ConfigDict:
    """The augmentation of a named recipe (`AUGMENT_RECIPES`), with `overrides` on top.

    Op fields left unset (None) take the recipe's value, so the recipe can be switched from the
    command line (`--config.augment.recipe=byol`) and any field tuned on top of it, for all views
    (`--config.augment.blur_prob=0.3`) or for one (`--config.augment.view2.solarize_prob=0.1`).
    Precedence: defaults < recipe < recipe's per-view values < flat fields set < view fields set.

    supcon_cifar (default; PyTorch SupContrast): crop scale (0.2, 1), flip 0.5, jitter (0.4, 0.4,
    0.4, 0.1) p=0.8, grayscale 0.2. simclr: crop (0.08, 1), jitter (0.8, 0.8, 0.8, 0.2) p=0.8,
    grayscale 0.2, blur 0.5. byol: crop (0.08, 1), jitter (0.4, 0.4, 0.2, 0.1) p=0.8, grayscale
    0.2; view 1 blur 1.0 / solarize 0, view 2 blur 0.1 / solarize 0.2. randaugment: crop (0.08, 1),
    flip, RandAugment N=2 M=9, no jitter or grayscale. none: the view is the normalised image.
    """
    if recipe not in AUGMENT_RECIPES:
        raise ValueError(f"augment.recipe={recipe!r}; allowed: {tuple(AUGMENT_RECIPES)}")
    allowed = ("recipe", "mean", "std", *AUGMENT_OP_DEFAULTS)
    unknown = [key for key in overrides if key not in allowed and not _is_view_key(key)]
    if unknown:
        raise ValueError(f"augment.{unknown[0]} is not an augment field; allowed: {allowed}, view1, ...")
    cfg = _unset_op_fields()
    cfg.recipe = recipe
    cfg.mean = (0.5, 0.5, 0.5)
    cfg.std = (0.25, 0.25, 0.25)
    for key in AUGMENT_VIEW_KEYS:
        cfg[key] = _unset_op_fields()
    for key, value in overrides.items():
        if _is_view_key(key):
            if key not in cfg:
                cfg[key] = _unset_op_fields()
            cfg[key].update(value)
        else:
            cfg[key] = value
    return cfg


def _set_fields(fields: ml_collections.ConfigDict | None) -> dict:
    return {} if fields is None else {key: value for key, value in fields.items() if value is not None}


def resolve_view(augment: ml_collections.ConfigDict, view_index: int) -> ml_collections.ConfigDict:
    """The concrete, flat config of view `view_index` (0-based): every op field plus recipe, mean, std."""
    name = f"view{view_index + 1}"
    recipe = dict(AUGMENT_RECIPES[augment.recipe])
    recipe_views = {key: recipe.pop(key) for key in list(recipe) if _is_view_key(key)}
    user_flat = {key: value for key, value in _set_fields(augment).items() if key in AUGMENT_OP_DEFAULTS}
    user_view = _set_fields(augment.get(name))
    unknown = sorted(set(user_view) - set(AUGMENT_OP_DEFAULTS))
    if unknown:
        raise ValueError(
            f"augment.{name}.{unknown[0]} is not a per-view op field; allowed: {tuple(AUGMENT_OP_DEFAULTS)}"
        )
    fields = AUGMENT_OP_DEFAULTS | recipe | recipe_views.get(name, {}) | user_flat | user_view
    return ml_collections.ConfigDict(
        fields | {"recipe": augment.recipe, "mean": tuple(augment.mean), "std": tuple(augment.std)}
    )


def _check_augment_fields(prefix: str, fields: dict) -> None:
    """Range checks of the augment fields present in `fields` (set flat fields or one view's)."""
    for key in AUGMENT_PROBS:
        if key in fields and not 0 <= fields[key] <= 1:
            raise ValueError(f"{prefix}.{key}={fields[key]} must be in [0, 1]")
    ranges = {
        "crop_scale": ("0 < lo <= hi <= 1", lambda lo, hi: 0 < lo <= hi <= 1),
        "crop_ratio": ("0 < lo <= hi", lambda lo, hi: 0 < lo <= hi),
        "blur_sigma": ("0 < lo <= hi", lambda lo, hi: 0 < lo <= hi),
    }
    for key, (allowed, ok) in ranges.items():
        if key in fields and (len(fields[key]) != 2 or not ok(*fields[key])):
            raise ValueError(f"{prefix}.{key}={tuple(fields[key])} must be (lo, hi) with {allowed}")
    for key in ("brightness", "contrast", "saturation"):
        if key in fields and not fields[key] >= 0:
            raise ValueError(f"{prefix}.{key}={fields[key]} must be >= 0")
    if "hue" in fields and not 0 <= fields["hue"] <= 0.5:
        raise ValueError(f"{prefix}.hue={fields['hue']} must be in [0, 0.5]")
    if "randaugment_num_ops" in fields and not fields["randaugment_num_ops"] >= 0:
        raise ValueError(f"{prefix}.randaugment_num_ops={fields['randaugment_num_ops']} must be >= 0 (0: off)")
    if "randaugment_magnitude" in fields and not 0 <= fields["randaugment_magnitude"] <= 10:
        raise ValueError(f"{prefix}.randaugment_magnitude={fields['randaugment_magnitude']} must be in [0, 10]")


def validate_augment_config(augment: ml_collections.ConfigDict) -> None:
    """One-line errors for a bad recipe name, field value, or per-view override key."""
    if augment.recipe not in AUGMENT_RECIPES:
        raise ValueError(f"augment.recipe={augment.recipe!r}; allowed: {tuple(AUGMENT_RECIPES)}")
    allowed = ("recipe", "mean", "std", *AUGMENT_OP_DEFAULTS)
    for key in augment:
        if key in allowed:
            continue
        if not _is_view_key(key) or not isinstance(augment[key], ml_collections.ConfigDict):
            raise ValueError(f"augment.{key} is not an augment field; allowed: {allowed}, view1, ...")
        resolve_view(augment, int(key[4:]) - 1)  # unknown per-view fields
        _check_augment_fields(f"augment.{key}", _set_fields(augment[key]))
    _check_augment_fields("augment", {k: v for k, v in _set_fields(augment).items() if k in AUGMENT_OP_DEFAULTS})
    for key in ("mean", "std"):
        if len(augment[key]) != 3:
            raise ValueError(f"augment.{key}={tuple(augment[key])} must have 3 values (R, G, B)")
    if not all(value > 0 for value in augment.std):
        raise ValueError(f"augment.std={tuple(augment.std)} must be > 0")


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
    config.keep_checkpoints = 2  # the latest N checkpoints kept
    config.keep_best = 1  # pretrain: and the N best by best_metric (jax_supcon.average can average them)
    config.eval_every_steps = 1000  # pretrain: kNN + retrieval validation (and at the end); 0: none
    config.best_metric = "val/encoder/knn_top1"  # pretrain: checkpoint kept as "best"; "" for none
    config.knn_k = 200
    config.knn_temperature = 0.1
    config.checkpoint = "latest"  # linear_eval / embed: "latest", "best" or a step of pretrained_workdir
    config.embed_split = "test"  # embed: which split to write
    config.plots = True  # embedding maps of the test split at the end of pretraining
    config.pretrained_workdir = placeholder(str)  # linear_eval: stage-1 workdir to restore
    config.linear_augment = True  # linear_eval: train the classifier on augmented views
    config.label_smoothing = 0.0  # linear_eval, supervised: cross-entropy label smoothing
    config.ema_decay = 0.0  # > 0 (e.g. 0.999): keep an exponential moving average of the weights
    config.eval_with_ema = False  # evaluate (validation, test accuracy, plots) with the EMA weights
    config.online_probe = True  # pretrain: a linear classifier on stop-gradient features, logged as probe_top1
    config.pretrained_ema = False  # linear_eval / embed: restore the stage-1 run's EMA weights of the encoder
    config.precompute_features = False  # linear_eval without linear_augment: features computed once, then reused

    config.data = ml_collections.ConfigDict()
    config.data.name = "digits"  # digits, synthetic, folder:PATH or a tfds name (cifar10, imagenet2012, ...)
    config.data.image_size = 32  # training and evaluation views are image_size x image_size
    config.data.train_split = "train"  # tfds split (or folder sub-directory) to train on
    config.data.eval_split = "test"  # ... and to evaluate on (imagenet2012: "validation")
    config.data.tfds_data_dir = placeholder(str)  # None: tfds's default (~/tensorflow_datasets)
    config.data.num_classes = placeholder(int)  # only where the source does not say (synthetic: 10)
    config.data.num_train_examples = placeholder(int)  # only where the metadata lacks it (synthetic: 4096)
    config.data.num_eval_examples = placeholder(int)  # (synthetic: 512)
    config.data.shuffle_buffer = 50_000  # tfds: records in the shuffle buffer (others shuffle exactly)
    config.data.samples_per_class = 0  # > 0: class-balanced batches of this many examples per class
    config.data.eval_crop_fraction = 0.875  # varying-size images: centre crop of image_size / fraction
    config.data.verify_files = True  # folder: decode-check every file once at start
    config.data.skip_corrupt = False  # folder: leave out (and count) unreadable files instead of failing
    config.data.prefetch_to_device = 2  # batches copied to the devices ahead of the step

    config.model = ml_collections.ConfigDict()
    config.model.name = "resnet18"
    config.model.stem = "cifar"
    config.model.width = 1.0
    config.model.head = "mlp"
    config.model.proj_dim = 128
    config.model.hidden_dim = placeholder(int)  # None: the encoder's feature width
    config.model.dtype = "float32"
    # Recompute each residual block in the backward pass instead of keeping its activations: for
    # batches whose activations do not fit, at about one more forward pass of compute.
    config.model.remat = False

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
    config.optimizer.learning_rate = 0.5  # base rate; the peak is this times the lr_scaling factor
    config.optimizer.lars_trust_coefficient = 0.001  # LARS eta (SimCLR, SupCon: 0.001; solo-learn: 0.02)
    config.optimizer.lr_scaling = "none"  # "linear": lr x batch/256; "sqrt": lr x sqrt(batch) (SimCLR)
    config.optimizer.momentum = 0.9
    config.optimizer.nesterov = False
    config.optimizer.weight_decay = 1e-4
    config.optimizer.schedule = "cosine"  # "cosine", "step" or "constant", after the warmup
    config.optimizer.decay_boundaries = (0.7, 0.8, 0.9)  # step: fractions of the run (SupContrast: 700,800,900/1000)
    config.optimizer.decay_rate = 0.1  # step: the learning rate is multiplied by this at each boundary
    config.optimizer.clip_grad_norm = placeholder(float)  # clip gradients to this global norm; None: no clipping
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
    if not 0 <= config.seed < 2**31:
        raise ValueError(f"seed={config.seed} must be in [0, 2**31)")
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
    if not isinstance(model.get("remat", False), bool):
        raise ValueError(f"model.remat={model.remat!r}; allowed: True, False")
    if not model.width > 0 or model.proj_dim < 1:
        raise ValueError(f"model.width={model.width} must be > 0 and model.proj_dim={model.proj_dim} >= 1")
    for key, allowed in (("name", OPTIMIZERS), ("schedule", SCHEDULES), ("lr_scaling", LR_SCALINGS)):
        if config.optimizer[key] not in allowed:
            raise ValueError(f"optimizer.{key}={config.optimizer[key]!r}; allowed: {allowed}")
    _validate_optimizer(config.optimizer)
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
        "keep_best",
    )
    for key in keys:
        if config[key] <= 0:
            raise ValueError(f"{key}={config[key]} must be > 0")
    if not 0 <= config.ema_decay < 1:
        raise ValueError(f"ema_decay={config.ema_decay} must be in [0, 1) (0: no EMA)")
    if config.eval_with_ema and not config.ema_decay:
        raise ValueError("eval_with_ema=True needs ema_decay > 0 (e.g. --config.ema_decay=0.999)")
    if config.precompute_features and config.linear_augment:
        raise ValueError("precompute_features=True needs linear_augment=False (augmented views change every step)")
    _validate_data(config)
    validate_augment_config(config.augment)
    if config.job in ("linear_eval", "embed") and not config.pretrained_workdir:
        raise ValueError(f"{config.job} needs --config.pretrained_workdir=DIR (a stage-1 workdir)")


def _validate_optimizer(opt: ml_collections.ConfigDict) -> None:
    if not opt.learning_rate >= 0:
        raise ValueError(f"optimizer.learning_rate={opt.learning_rate} must be >= 0")
    if not opt.weight_decay >= 0 or not 0 <= opt.momentum < 1:
        raise ValueError(
            f"optimizer.weight_decay={opt.weight_decay} must be >= 0 and optimizer.momentum={opt.momentum} in [0, 1)"
        )
    if opt.clip_grad_norm is not None and not opt.clip_grad_norm > 0:
        raise ValueError(f"optimizer.clip_grad_norm={opt.clip_grad_norm} must be > 0 (or unset: no clipping)")
    if not 0 <= opt.decay_rate <= 1:
        raise ValueError(f"optimizer.decay_rate={opt.decay_rate} must be in [0, 1]")
    step_boundaries(opt, total_steps=1)


def _validate_data(config: ml_collections.ConfigDict) -> None:
    data = config.data
    check_name(data.name)
    if data.image_size < 1:
        raise ValueError(f"data.image_size={data.image_size} must be >= 1")
    if not 0 < data.eval_crop_fraction <= 1:
        raise ValueError(f"data.eval_crop_fraction={data.eval_crop_fraction} must be in (0, 1]")
    if data.shuffle_buffer < 1 or data.prefetch_to_device < 1:
        raise ValueError(
            f"data.shuffle_buffer={data.shuffle_buffer} and data.prefetch_to_device={data.prefetch_to_device} "
            "must be >= 1"
        )
    per_class = data.samples_per_class
    if per_class < 0 or (per_class and config.batch_size % per_class):
        raise ValueError(f"data.samples_per_class={per_class} must be 0 (off) or divide batch_size={config.batch_size}")
    for key in ("num_classes", "num_train_examples", "num_eval_examples"):
        if data[key] is not None and data[key] < 1:
            raise ValueError(f"data.{key}={data[key]} must be >= 1 (or unset)")


DATASET_NORMALIZATION = {  # per-channel mean and std of the training images, on [0, 1]
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),  # SupContrast's constants
    "cifar100": ((0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)),
    "imagenet2012": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}


def parse_recipe_arg(arg: str | None, choices: tuple[str, ...]) -> tuple[str, bool]:
    """`configs/x.py:CHOICE[,smoke]` -> (choice, smoke); the first choice is the default."""
    parts = [part for part in (arg or "").split(",") if part]
    smoke_run = "smoke" in parts
    rest = [part for part in parts if part != "smoke"]
    if len(rest) > 1 or (rest and rest[0] not in choices):
        raise ValueError(f"config argument {arg!r}; allowed: one of {choices}, optionally followed by ',smoke'")
    return (rest[0] if rest else choices[0]), smoke_run


def smoke(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Shrink a recipe to a seconds-long run on synthetic data: a tiny ResNet at 16x16, batch 16,
    two steps, no validation or plots. The loss, optimizer, schedule and augmentation stay the recipe's."""
    num_classes = config.data.num_classes or {"cifar100": 100, "imagenet2012": 1000}.get(config.data.name, 10)
    config.data.name = "synthetic"
    config.data.image_size = 16
    config.data.num_classes = num_classes
    config.data.num_train_examples = 64
    config.data.num_eval_examples = 32
    config.model.name = "resnet_tiny"
    config.model.width = 0.125
    config.model.dtype = "float32"
    config.batch_size = 16
    config.eval_batch_size = 32
    config.total_steps = 2
    config.total_epochs = None
    config.optimizer.warmup_steps = 0
    config.log_every_steps = 1
    config.checkpoint_every_steps = 2
    config.eval_every_steps = 0
    config.plots = False
    config.knn_k = 10
    return config
