"""See what an augmentation recipe does: a PNG grid of N images x V views for any config.

    jax-supcon-preview --config=configs/NAME.py[:ARG] [--config.KEY=VALUE ...] \
        [--out=augmentations.png] [--images=8] [--views=N]      (or python -m jax_supcon.preview)

Each row is one training example (spread over the split): its evaluation view, then the views a training step makes of
it (host crops for images of varying size, then the on-device recipe), de-normalised for display.
"""

from __future__ import annotations

import os

from absl import app, flags
from ml_collections import config_flags

from jax_supcon import cli

DEFAULT_NAME = "augmentations.png"


def define_flags(values: flags.FlagValues = flags.FLAGS, sys_argv: list[str] | None = None) -> None:
    """Flags of the command only: importing `augmentation_preview` defines none (no clashes)."""
    config_flags.DEFINE_config_file(
        "config", None, "Config file (configs/NAME.py[:ARG]).", lock_config=True, flag_values=values, sys_argv=sys_argv
    )
    flags.DEFINE_string(
        "out", DEFAULT_NAME, "PNG file to write (a directory: augmentations.png inside it).", flag_values=values
    )
    flags.DEFINE_integer("images", 8, "Rows: N training examples spread over the split.", flag_values=values)
    flags.DEFINE_integer("views", None, "Views per example (default: config.loss.num_views).", flag_values=values)
    flags.mark_flags_as_required(["config"], flag_values=values)


def png_path(out: str) -> str:
    """Where `--out` writes: inside it when it is a directory, with `.png` added when it has no
    extension (matplotlib would add it anyway), as given otherwise."""
    if os.path.isdir(out):
        return os.path.join(out, DEFAULT_NAME)
    return out if os.path.splitext(out)[1] else f"{out}.png"


def augmentation_preview(config, path: str, *, images: int = 8, views: int | None = None) -> str:
    """Write the grid for `config` to `png_path(path)` and return that path."""
    path = png_path(path)
    import jax
    import numpy as np

    from jax_supcon.data import augment, pipeline, sources
    from jax_supcon.report import plots

    views = views or config.loss.num_views
    if images < 1 or views < 1:
        raise ValueError(f"--images={images} and --views={views} must be >= 1")
    source = sources.load_source(config.data, "train")
    host_views = pipeline.host_views_for(config.augment, views)
    examples = pipeline.sample_examples(source, images, seed=config.seed, host_views=host_views)
    key = jax.random.PRNGKey(config.seed)
    made = jax.jit(lambda k, x: augment.augment_views(k, x, config.augment, views))(key, examples["image"])
    mean, std = np.asarray(config.augment.mean), np.asarray(config.augment.std)
    pixels = np.clip(np.asarray(made) * std + mean, 0.0, 1.0)
    titles = ["original"] + [f"view {v + 1}" for v in range(views)]
    recipe = config.augment.get("recipe", "custom")
    return plots.augmentation_grid(
        examples["original"].astype(np.float32) / 255.0,
        pixels,
        examples["label"],
        path,
        title=f"{config.data.name}: augment.recipe={recipe} ({config.data.image_size}px)",
        column_titles=titles,
    )


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    config, options = flags.FLAGS.config, flags.FLAGS
    with cli.user_errors("jax-supcon-preview"):
        from jax_supcon.data.recipes import validate_augment_config
        from jax_supcon.data.sources import check_name

        check_name(config.data.name)
        validate_augment_config(config.augment)
        path = augmentation_preview(config, options.out, images=options.images, views=options.views)
    print(path)


DESCRIPTION = f"""jax-supcon-preview: see what an augmentation recipe does to the training images.

Usage: jax-supcon-preview --config=configs/NAME.py[:ARG] [--config.KEY=VALUE ...] [--out=FILE.png]
       [--images=8] [--views=N]

Writes a PNG grid: one row per training example, its evaluation view, then the views a training
step makes of it (host crops, then the on-device recipe). Switch the recipe with
--config.augment.recipe=simclr|byol|randaugment|supcon_cifar|none and tune any op on top.

{cli.CONFIGS_NOTE}
"""


def run() -> None:
    """Console-script entry point (`jax-supcon-preview`)."""
    define_flags()
    cli.start(main, description=DESCRIPTION, module_name=__name__)
