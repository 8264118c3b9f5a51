"""`input`: the host pipeline's training throughput (images/s and views/s after a warm-up) for
32x32 images in memory (CIFAR as arrays), 32x32 PNG files (what decoding tfds CIFAR costs) and
JPEGs of ImageNet-like varying size decoded and cropped to two 224x224 views (generated in a
temporary folder); then the on-device augmentation time per batch of the `--recipe`."""

from __future__ import annotations

import os
import time

import numpy as np
from absl import flags

from jax_supcon.bench import common
from jax_supcon.bench.augment import time_augment

USAGE = "[--batch=256] [--steps=20] [--jpeg_images=512] [--png_images=2048] [--recipe=simclr]"
SUMMARY = "the host pipeline's images/s and the on-device augmentation time"


def define_flags(values: flags.FlagValues, sys_argv: list[str] | None = None) -> None:
    flags.DEFINE_integer("batch", 256, "Global batch (images).", flag_values=values)
    flags.DEFINE_integer("steps", 20, "Timed batches per case, after warm-up.", flag_values=values)
    flags.DEFINE_integer("jpeg_images", 512, "JPEG files to generate for the 224px case.", flag_values=values)
    flags.DEFINE_integer("png_images", 2048, "32x32 PNG files to generate.", flag_values=values)
    flags.DEFINE_string("recipe", "simclr", "Augmentation recipe timed on the device.", flag_values=values)


def _time_batches(batches, steps: int) -> float:
    """Seconds per batch of an iterator, after two warm-up batches (tf.data spins up its threads)."""
    for _ in range(2):
        next(batches)
    start = time.perf_counter()
    for _ in range(steps):
        next(batches)
    return (time.perf_counter() - start) / steps


def write_images(root: str, count: int, sizes: tuple[tuple[int, int], ...], ext: str, classes: int = 10) -> None:
    """`root/train/<class>/*.ext`: smooth colour gradients with noise (photo-like compressibility)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(count):
        height, width = sizes[i % len(sizes)]
        ys, xs = np.mgrid[0:height, 0:width] / max(height, width)
        base = rng.uniform(0, 255, 3) * (0.5 + 0.5 * np.sin(6 * xs + rng.uniform(0, 6)))[..., None]
        pixels = np.clip(base + 40 * ys[..., None] + rng.normal(0, 12, (height, width, 3)), 0, 255).astype(np.uint8)
        directory = os.path.join(root, "train", f"c{i % classes}")
        os.makedirs(directory, exist_ok=True)
        Image.fromarray(pixels).save(os.path.join(directory, f"{i}.{ext}"), quality=90)


def run(options: flags.FlagValues) -> None:
    """Host pipeline throughput for three kinds of data, then on-device augmentation time."""
    import tempfile

    import ml_collections

    from jax_supcon.data import pipeline, sources

    common.check_counts(options, ("batch", "steps", "jpeg_images", "png_images"))
    batch, steps = options.batch, options.steps
    host_views = pipeline.HostViews(views=2)
    rng = np.random.default_rng(0)
    arrays = rng.integers(0, 256, (50_000, 32, 32, 3), dtype=np.uint8)
    cases = [
        ("32px_in_memory", sources.in_memory_source("cifar_like", "train", arrays, arrays[:, 0, 0, 0] % 10, 10, 32))
    ]
    with tempfile.TemporaryDirectory() as root:
        write_images(os.path.join(root, "png"), options.png_images, ((32, 32),), "png")
        write_images(os.path.join(root, "jpeg"), options.jpeg_images, ((375, 500), (500, 333), (400, 400)), "jpg")
        for name, folder, size in (("32px_png_files", "png", 32), ("224px_jpeg_files_2_views", "jpeg", 224)):
            data = ml_collections.ConfigDict(
                dict(
                    name=f"folder:{os.path.join(root, folder)}",
                    image_size=size,
                    train_split="train",
                    eval_split="train",
                    verify_files=False,
                    skip_corrupt=False,
                    eval_crop_fraction=0.875,
                )
            )
            cases.append((name, sources.load_source(data, "train")))
        for name, source in cases:
            seconds = _time_batches(
                pipeline.train_batches(source, global_batch=batch, seed=0, host_views=host_views), steps
            )
            views = 2 if source.image_shape is None else 0  # fixed-size images get their views on device
            record = {"bench": "input", "case": name, "batch": batch, "images_per_s": round(batch / seconds, 1)}
            if views:
                record["host_views_per_s"] = round(views * batch / seconds, 1)
            print(common.to_json(record | {"host_cpus": os.cpu_count()}), flush=True)
    for name, size, host_cropped in (("device_augment_32px", 32, False), ("device_augment_224px", 224, True)):
        record = time_augment(options.recipe, size, batch, host_cropped=host_cropped, repeats=max(3, steps // 4))
        print(common.to_json({"bench": "input", "case": name} | record), flush=True)
