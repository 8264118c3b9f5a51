"""Configs: the base config (`base_config`), whole-config validation (each section checked by its
owner), the run's length from steps or epochs, and helpers for recipe files in `configs/`.

Recipes import from here (`from jax_supcon.config import base_config, augment_config`), not
from `configs/`, so a config file works from any working directory.
"""

from jax_supcon.config.base import base_config
from jax_supcon.config.recipes import DATASET_NORMALIZATION, parse_recipe_arg, sibling, smoke, split_recipe_switches
from jax_supcon.config.validate import check_pretrained_workdir, resolve_steps, validate_config
from jax_supcon.data.recipes import AUGMENT_RECIPES, augment_config, resolve_view, validate_augment_config

__all__ = [
    "AUGMENT_RECIPES",
    "DATASET_NORMALIZATION",
    "augment_config",
    "base_config",
    "check_pretrained_workdir",
    "parse_recipe_arg",
    "resolve_steps",
    "resolve_view",
    "sibling",
    "smoke",
    "split_recipe_switches",
    "validate_augment_config",
    "validate_config",
]
