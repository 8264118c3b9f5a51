"""The default config every recipe in `configs/` starts from: the run-level keys here, and one
section per concern whose defaults come from the module that owns (and validates) it: data
(`data.sources`), eval (`evaluate.validation`), model (`models`), loss (`losses.config`),
augment (`data.recipes`), optimizer (`optim`), wandb (`report.tracking`).

Optional values are `placeholder`s, so they can still be set from the command line
(`--config.total_epochs=10`). See `config/validate.py` for the checks.
"""

from __future__ import annotations

import ml_collections
from ml_collections.config_dict import placeholder

from jax_supcon import losses, models, optim
from jax_supcon.data.recipes import augment_config
from jax_supcon.data.sources import data_config
from jax_supcon.evaluate.validation import eval_config
from jax_supcon.report.tracking import wandb_config

# What `config.job` may name; `jax_supcon.jobs` has one module each.
JOBS = ("pretrain", "linear_eval", "embed", "supervised", "finetune")


def base_config() -> ml_collections.ConfigDict:
    """Every key and its default; a comment per key says what it does."""
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
    # pretrain: checkpoint kept as "best"; "" for none; "auto": val/encoder/knn_top1, or with
    # held-out classes (data.train_classes) val/encoder/mean_average_precision_at_r
    config.best_metric = "auto"
    config.knn_k = 200
    config.knn_temperature = 0.1
    config.checkpoint = "latest"  # linear_eval / embed: "latest", "best" or a step of pretrained_workdir
    config.embed_split = "test"  # embed: which split to write
    config.plots = True  # the figures: training curves, and embedding maps of the test split after pretraining
    config.pretrained_workdir = placeholder(str)  # linear_eval, embed, finetune: stage-1 workdir to restore
    config.linear_augment = True  # linear_eval: train the classifier on augmented views
    config.label_smoothing = 0.0  # linear_eval, supervised: cross-entropy label smoothing
    config.ema_decay = 0.0  # > 0 (e.g. 0.999): keep an exponential moving average of the weights
    config.eval_with_ema = False  # evaluate (validation, test accuracy, plots) with the EMA weights
    # pretrain: a run whose projections collapse to one vector stops like a diverged one (exit code
    # 1; rule in train/health.py); False: it warns once, goes on, and its summary says so.
    config.stop_on_collapse = True
    # Read the test split at the end of the run (test_top1, test/...). `jax-supcon-sweep --select`
    # tunes with False, then starts the chosen cell's finished runs again with True: they only
    # evaluate the test split.
    config.evaluate_test = True
    config.online_probe = True  # pretrain: a linear classifier on stop-gradient features, logged as probe_top1
    config.pretrained_ema = False  # linear_eval / embed: restore the stage-1 run's EMA weights of the encoder
    config.precompute_features = False  # linear_eval without linear_augment: features computed once, then reused

    config.data = data_config()

    config.eval = eval_config()

    config.model = models.model_config()

    config.loss = losses.loss_config()

    config.augment = augment_config()

    config.optimizer = optim.optimizer_config()

    # Weights & Biases (optional: pip install 'jax_supcon[wandb]'): empty project = off. See
    # report/tracking.py; may change between restarts.
    config.wandb = wandb_config()
    return config
