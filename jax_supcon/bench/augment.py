"""`augment`: the on-device augmentation alone, per recipe and image size (`ms_per_batch`,
`views_per_s`, `compile_s`); sizes from `--host_crop_from` up get two host-cropped views
`[B, 2, H, W, 3]` as varying-size data sets deliver them, smaller ones are cropped on the device."""

from __future__ import annotations

import time

import numpy as np
from absl import flags

from jax_supcon.bench import common

USAGE = "[--recipes=simclr,randaugment] [--image_sizes=32,224] [--image_batches=512,256] [--host_crop_from=96]"
SUMMARY = "the on-device augmentation of each recipe alone, per image size"


def define_flags(values: flags.FlagValues, sys_argv: list[str] | None = None) -> None:
    flags.DEFINE_list("recipes", None, "Recipes to time (default: every recipe).", flag_values=values)
    flags.DEFINE_list("image_sizes", ["32", "224"], "Image sides (pixels).", flag_values=values)
    flags.DEFINE_list("image_batches", ["512", "256"], "Batch per image size.", flag_values=values)
    flags.DEFINE_integer("host_crop_from", 96, "Sides from which views come host-cropped.", flag_values=values)
    common.define_repeats(values, __name__)


def time_augment(recipe: str, size: int, batch: int, *, host_cropped: bool, repeats: int) -> dict:
    """Compile and time the on-device augmentation of one recipe on a batch of random uint8 images:
    `[batch, size, size, 3]` cropped on the device, or two host-cropped views `[batch, 2, ...]`."""
    import jax

    from jax_supcon.data import augment
    from jax_supcon.data.recipes import augment_config

    cfg = augment_config(recipe)
    shape = (batch, 2, size, size, 3) if host_cropped else (batch, size, size, 3)
    images = jax.device_put(np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8))
    key = jax.random.PRNGKey(0)
    start = time.perf_counter()
    compiled = jax.jit(lambda k, x: augment.augment_views(k, x, cfg, 2)).lower(key, images).compile()
    compile_s = time.perf_counter() - start
    median = common.median_s(lambda: compiled(key, images), repeats)
    return {
        "recipe": recipe,
        "image_size": size,
        "batch": batch,
        "crop": "host" if host_cropped else "device",
        "compile_s": round(compile_s, 3),
        "ms_per_batch": round(1000 * median, 3),
        "views_per_s": round(2 * batch / median, 1),
        "device": jax.devices()[0].device_kind,
    }


def run(options: flags.FlagValues) -> None:
    """Every recipe alone at every image size, one JSON line each."""
    from jax_supcon.data.recipes import AUGMENT_RECIPES

    common.check_counts(options, ("repeats",))
    sizes = [int(s) for s in options.image_sizes]
    batches = [int(b) for b in options.image_batches]
    if len(batches) != len(sizes):
        raise ValueError(f"--image_batches={options.image_batches} needs one batch per --image_sizes={sizes}")
    recipes = options.recipes or list(AUGMENT_RECIPES)
    unknown = [r for r in recipes if r not in AUGMENT_RECIPES]
    if unknown:
        raise ValueError(f"--recipes={unknown[0]!r}; allowed: {tuple(AUGMENT_RECIPES)}")
    for size, batch in zip(sizes, batches, strict=True):
        for recipe in recipes:
            cropped = size >= options.host_crop_from
            record = time_augment(recipe, size, batch, host_cropped=cropped, repeats=options.repeats)
            print(common.to_json({"bench": "augment"} | record), flush=True)
