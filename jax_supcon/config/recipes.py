"""Helpers for recipe files in `configs/`: the `:arg` of a recipe, its `smoke` variant, data-set
normalisation constants, and loading another config file from the same folder, so recipes share
blocks by path (from any working directory, through the console scripts too)."""

from __future__ import annotations

import importlib.util
import os
from types import ModuleType

import ml_collections

DATASET_NORMALIZATION = {  # per-channel mean and std of the training images, on [0, 1]
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),  # SupContrast's constants
    "cifar100": ((0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)),
    "imagenet2012": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}


def sibling(config_file: str, name: str) -> ModuleType:
    """The config file `name`.py next to `config_file` (pass `__file__`), loaded as a module.

    A recipe inherits from another (`sibling(__file__, "digits_supcon").get_config()`) or uses a
    shared block (`sibling(__file__, "datasets").cifar(config, "cifar10")`) this way, so it does
    not depend on `configs` being importable from the working directory.
    """
    path = os.path.join(os.path.dirname(os.path.abspath(config_file)), f"{name}.py")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config file {path} not found (asked for by {config_file})")
    spec = importlib.util.spec_from_file_location(f"_jax_supcon_configs.{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def split_recipe_switches(arg: str | None, switches: tuple[str, ...]) -> tuple[str | None, set[str]]:
    """`CHOICE,SWITCH,smoke` -> (`CHOICE,smoke`, {SWITCH}): a recipe's own on/off words (e.g.
    `simclr`) taken off its argument before `parse_recipe_arg` reads the rest."""
    parts = [part for part in (arg or "").split(",") if part]
    rest = ",".join(part for part in parts if part not in switches)
    return rest or None, {part for part in parts if part in switches}


def parse_recipe_arg(arg: str | None, choices: tuple[str, ...]) -> tuple[str, bool]:
    """`configs/x.py:CHOICE[,smoke]` -> (choice, smoke); the first choice is the default."""
    parts = [part for part in (arg or "").split(",") if part]
    smoke_run = "smoke" in parts
    rest = [part for part in parts if part != "smoke"]
    if len(rest) > 1 or (rest and rest[0] not in choices):
        raise ValueError(f"config argument {arg!r}; allowed: one of {choices}, optionally followed by ',smoke'")
    return (rest[0] if rest else choices[0]), smoke_run


def smoke(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Shrink a recipe to a seconds-long run on synthetic data: a tiny ResNet (or ViT) at 16x16, batch 16,
    two steps, no validation or plots. The loss, optimizer, schedule and augmentation stay the recipe's."""
    num_classes = config.data.num_classes or {"cifar100": 100, "imagenet2012": 1000}.get(config.data.name, 10)
    config.data.name = "synthetic"
    config.data.image_size = 16
    config.data.num_classes = num_classes
    config.data.num_train_examples = 64
    config.data.num_eval_examples = 32
    if config.model.name.startswith("vit_"):  # the same family, two blocks of width 64 on 4 x 4 patches
        config.model.name = "vit_micro"
        config.model.patch_size = 4
    else:
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
    if config.loss.get("queue_size"):  # two steps' worth of features
        per_step = config.batch_size * (config.loss.num_views if config.loss.queue_views == "all" else 1)
        config.loss.queue_size = 2 * per_step
    return config
