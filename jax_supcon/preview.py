"""See what an augmentation recipe does: a PNG grid of N images x V views for any config.

    python -m jax_supcon.preview --config=configs/NAME.py[:ARG] [--config.KEY=VALUE ...] \
        [--out=augmentations.png] [--images=8] [--views=N]

Each row is one training example (spread over the split): its evaluation view, then the views a training step makes of
it (host crops for images of varying size, then the on-device recipe), de-normalised for display.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402


def _define_flags() -> None:
    """Flags of the command only: importing `augmentation_preview` defines none (no clashes)."""
    config_flags.DEFINE_config_file("config", None, "Config file (configs/NAME.py[:ARG]).", lock_config=True)
    flags.DEFINE_string("out", "augmentations.png", "PNG file to write.")
    flags.DEFINE_integer("images", 8, "Rows: N training examples spread over the split.")
    flags.DEFINE_integer("views", None, "Views per example (default: config.loss.num_views).")
    flags.mark_flags_as_required(["config"])


def augmentation_preview(config, path: str, *, images: int = 8, views: int | None = None) -> str:
    """Write the grid for `config` to `path` and return the path."""
    import jax
    import numpy as np

    from jax_supcon import visualize
    from jax_supcon.data import augment, pipeline, sources

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
    return visualize.augmentation_grid(
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
    logging.set_verbosity(logging.WARNING)
    config, options = flags.FLAGS.config, flags.FLAGS
    try:
        from jax_supcon.config import validate_augment_config
        from jax_supcon.data.sources import check_name

        check_name(config.data.name)
        validate_augment_config(config.augment)
        path = augmentation_preview(config, options.out, images=options.images, views=options.views)
    except (ValueError, FileNotFoundError) as error:
        sys.exit(f"jax-supcon preview: error: {error}")
    print(path)


if __name__ == "__main__":
    _define_flags()
    app.run(main)
