"""Benchmarks that print figures (one JSON line per measurement); never run as timed tests.

    jax-supcon-bench loss [--sizes=1024,4096,16384,65536] [--chunk_size=512] ...
    jax-supcon-bench input [--batch=256] [--steps=20] [--jpeg_images=512] [--recipe=simclr]
    jax-supcon-bench step --config=configs/NAME.py [--config.KEY=VALUE ...] [--steps=20]
        [--peak_tflops=X] [--pipeline]
    jax-supcon-bench roofline [--matmul_size=8192] [--copy_mib=1024]
    jax-supcon-bench augment [--recipes=supcon_cifar,simclr,...] [--image_sizes=32,224]
        [--image_batches=512,256] [--host_crop_from=96]

(or `python -m jax_supcon.bench ...`). `loss`, `roofline`, `augment` and `step` on resident data
need no TensorFlow; `loss` and `roofline` need neither ml-collections nor dm-pix.

`loss`: time and peak memory of `jax.value_and_grad(supcon_loss)` for N images x views x dim,
unchunked and chunked, next to its floor: its three N^2 d matmuls alone, timed in the same process
(`three_matmuls_s`; `vs_three_matmuls` is the ratio). Each case runs in a fresh subprocess, so its peak resident memory
(`peak_rss_gib`, the whole process: runtime + inputs + loss) is its own; `xla_temp_gib` is
XLA's planned scratch memory for the compiled program. An unchunked case whose plan exceeds
`--max_gib` is reported as skipped with its planned size instead of being run.

`input`: the host pipeline's training throughput (images/s and views/s after a warm-up) for
32x32 images in memory (CIFAR as arrays), 32x32 PNG files (what decoding tfds CIFAR costs) and
JPEGs of ImageNet-like varying size decoded and cropped to two 224x224 views (generated in a
temporary folder); then the on-device augmentation time per batch of the `--recipe`.

`roofline`: what the device can do, measured in the same run as the figures it bounds: a
square bf16 matmul, an fp32 one at the default precision (TF32 where the device has it) and at
"highest", and a device-to-device copy (`x + 1` over `--copy_mib`: bytes read + written / s).

`augment`: the on-device augmentation alone, per recipe and image size (`ms_per_batch`,
`views_per_s`, `compile_s`); sizes from `--host_crop_from` up get two host-cropped views
`[B, 2, H, W, 3]` as varying-size data sets deliver them, smaller ones are cropped on the device.

`step`: the config's pretraining step (on-device augmentation, forward and backward of every
view, loss, optimizer update; state donated), compiled once and timed per step with a device
sync (`step_time_s` is the median after 2 warm-up steps). By default it reuses one random batch
already on the devices, so it measures compute; `--pipeline` feeds it from the config's input
pipeline instead. FLOPs are XLA's cost analysis of the compiled step (the program of one device
times the number of devices); for a ViT, `model_tflop_per_step` is also the analytic count
(`models.vit.forward_flops`: 2 x matrix parameters x tokens plus attention, x3 for the backward
pass), which XLA's agrees with to a few percent. MFU is model FLOP/s (a ViT's analytic count,
otherwise XLA's) over `--peak_tflops` per device.
"""

from __future__ import annotations

import json
import math
import os
import resource
import subprocess
import sys
import time

import numpy as np
from absl import app, flags

from jax_supcon import cli
from jax_supcon.platform import cpu

_SIZES = flags.DEFINE_list("sizes", ["1024", "4096", "16384", "65536"], "Numbers of images (N).")
_VIEWS = flags.DEFINE_integer("views", 2, "Views per image.")
_DIM = flags.DEFINE_integer("dim", 128, "Feature dimension.")
_CLASSES = flags.DEFINE_integer("classes", 100, "Distinct labels in the batch.")
_CHUNK = flags.DEFINE_integer("chunk_size", 512, "Anchor rows per block for the chunked cases.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed repetitions after one warm-up (median reported).")
_MAX_GIB = flags.DEFINE_float("max_gib", 12.0, "Skip cases whose XLA plan needs more scratch memory than this.")
_CASE = flags.DEFINE_string("case", None, "Internal: run one case 'N:CHUNK' in this process.")
_BATCH = flags.DEFINE_integer("batch", 256, "input: global batch (images).")
_STEPS = flags.DEFINE_integer("steps", 20, "input: timed batches per case, after warm-up.")
_JPEG_IMAGES = flags.DEFINE_integer("jpeg_images", 512, "input: JPEG files to generate for the 224px case.")
_PNG_IMAGES = flags.DEFINE_integer("png_images", 2048, "input: 32x32 PNG files to generate.")
_RECIPE = flags.DEFINE_string("recipe", "simclr", "input: augmentation recipe timed on the device.")
_PEAK = flags.DEFINE_float("peak_tflops", None, "step: peak TFLOP/s of one device, for MFU.")
_PIPELINE = flags.DEFINE_bool("pipeline", False, "step: feed the step from the config's input pipeline.")
_MATMUL_SIZE = flags.DEFINE_integer("matmul_size", 8192, "roofline: side of the square matmuls.")
_COPY_MIB = flags.DEFINE_integer("copy_mib", 1024, "roofline: size of the copied fp32 array (MiB).")
_RECIPES = flags.DEFINE_list("recipes", None, "augment: recipes to time (default: every recipe).")
_IMAGE_SIZES = flags.DEFINE_list("image_sizes", ["32", "224"], "augment: image sides (pixels).")
_IMAGE_BATCHES = flags.DEFINE_list("image_batches", ["512", "256"], "augment: batch per image size.")
_HOST_CROP_FROM = flags.DEFINE_integer("host_crop_from", 96, "augment: sides from which views come host-cropped.")

COMMANDS = ("loss", "input", "step", "roofline", "augment")


def _gib(num_bytes: float) -> float:
    return round(num_bytes / 2**30, 3)


def _significant(value: float) -> float:
    """Four significant digits: tiny test models and large runs both stay readable."""
    return float(f"{value:.4g}")


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def run_loss_case(images: int, chunk_size: int | None) -> dict:
    """Compile and time value_and_grad of supcon_loss for one size, in this process."""
    import jax
    import jax.numpy as jnp

    from jax_supcon import losses

    key_features, key_labels = jax.random.split(jax.random.PRNGKey(0))
    features = jax.random.normal(key_features, (images, _VIEWS.value, _DIM.value), jnp.float32)
    features = features / jnp.linalg.norm(features, axis=-1, keepdims=True)
    labels = jax.random.randint(key_labels, (images,), 0, _CLASSES.value)
    step = jax.jit(jax.value_and_grad(lambda f, y: losses.supcon_loss(f, y, chunk_size=chunk_size)))
    start = time.perf_counter()
    compiled = step.lower(features, labels).compile()
    compile_s = time.perf_counter() - start
    memory = compiled.memory_analysis()
    record = {
        "bench": "loss",
        "images": images,
        "views": _VIEWS.value,
        "dim": _DIM.value,
        "chunk_size": chunk_size,
        "compile_s": round(compile_s, 3),
        "xla_temp_gib": _gib(memory.temp_size_in_bytes) if memory else None,
    }
    if memory and memory.temp_size_in_bytes > _MAX_GIB.value * 2**30:
        return record | {"skipped": f"needs {_gib(memory.temp_size_in_bytes)} GiB > --max_gib={_MAX_GIB.value}"}
    median = _median_s(lambda: compiled(features, labels), _REPEATS.value)
    n = images * _VIEWS.value
    # Matmul work of the default path: logits (N^2 d) + two gradient products; x2 flops per MAC.
    flops = 3 * 2 * n * n * _DIM.value
    floor = (
        _three_matmuls_s(features.reshape(n, -1), _REPEATS.value) if 2 * n * n * 4 <= _MAX_GIB.value * 2**30 else None
    )
    return record | {
        "time_s": round(median, 4),
        "matmul_gflop_per_s": round(flops / median / 1e9, 1),
        "three_matmuls_s": None if floor is None else round(floor, 4),
        "vs_three_matmuls": None if floor is None else round(median / floor, 2),
        "peak_rss_gib": _gib(_peak_rss_bytes()),
        "peak_memory_gib": _peak_memory_gib(jax.devices()[0]),
        "device": jax.devices()[0].device_kind,
    }


def _three_matmuls_s(features, repeats: int) -> float:
    """The loss's floor on this device: the median time of its three N^2 d matmuls alone (logits
    `Z Z^T`, then `G Z` and `G^T Z` for an `[N, N]` gradient `G`), in one compiled program."""
    import jax

    def matmuls(z, g):
        return z @ z.T, g @ z, g.T @ z

    g = jax.numpy.full((features.shape[0],) * 2, 1e-3, features.dtype)
    compiled = jax.jit(matmuls).lower(features, g).compile()
    return _median_s(lambda: compiled(features, g), repeats)


def _median_s(call, repeats: int) -> float:
    """Median seconds of `call()` (synced) over `repeats` runs after one warm-up run; a warm-up over
    20 s (a minutes-long case) is followed by one timed run only."""
    import jax

    start = time.perf_counter()
    jax.block_until_ready(call())
    times = []
    for _ in range(1 if time.perf_counter() - start > 20 else repeats):
        start = time.perf_counter()
        jax.block_until_ready(call())
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def loss_benchmark() -> None:
    """Every (size, chunked?) case in its own subprocess; print each result as it lands."""
    for size in (int(s) for s in _SIZES.value):
        for chunk in (None, _CHUNK.value):
            argv = [sys.executable, "-m", "jax_supcon.bench", "loss", f"--case={size}:{chunk or 0}"]
            names = ("views", "dim", "classes", "repeats", "max_gib")
            argv += [f"--{f}={flags.FLAGS[f].value}" for f in names]
            result = subprocess.run(
                argv, capture_output=True, text=True, env=os.environ | {"TF_CPP_MIN_LOG_LEVEL": "2"}
            )
            lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
            if result.returncode != 0 or not lines:
                tail = (result.stderr.strip().splitlines() or ["(no output)"])[-1]
                print(json.dumps({"bench": "loss", "images": size, "chunk_size": chunk, "error": tail}), flush=True)
            else:
                print(lines[-1], flush=True)


def _time_batches(batches, steps: int) -> float:
    """Seconds per batch of an iterator, after two warm-up batches (tf.data spins up its threads)."""
    for _ in range(2):
        next(batches)
    start = time.perf_counter()
    for _ in range(steps):
        next(batches)
    return (time.perf_counter() - start) / steps


def _write_images(root: str, count: int, sizes: tuple[tuple[int, int], ...], ext: str, classes: int = 10) -> None:
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


def input_benchmark() -> None:
    """Host pipeline throughput for three kinds of data, then on-device augmentation time."""
    import tempfile

    import ml_collections

    from jax_supcon.data import pipeline, sources

    batch, steps = _BATCH.value, _STEPS.value
    host_views = pipeline.HostViews(views=2)
    rng = np.random.default_rng(0)
    arrays = rng.integers(0, 256, (50_000, 32, 32, 3), dtype=np.uint8)
    cases = [
        ("32px_in_memory", sources.in_memory_source("cifar_like", "train", arrays, arrays[:, 0, 0, 0] % 10, 10, 32))
    ]
    with tempfile.TemporaryDirectory() as root:
        _write_images(os.path.join(root, "png"), _PNG_IMAGES.value, ((32, 32),), "png")
        _write_images(os.path.join(root, "jpeg"), _JPEG_IMAGES.value, ((375, 500), (500, 333), (400, 400)), "jpg")
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
            print(json.dumps(record | {"host_cpus": os.cpu_count()}), flush=True)
    for name, size, host_cropped in (("device_augment_32px", 32, False), ("device_augment_224px", 224, True)):
        record = time_augment(_RECIPE.value, size, batch, host_cropped=host_cropped, repeats=max(3, steps // 4))
        print(json.dumps({"bench": "input", "case": name} | record), flush=True)


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
    median = _median_s(lambda: compiled(key, images), repeats)
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


def augment_benchmark() -> None:
    """Every recipe alone at every image size, one JSON line each."""
    from jax_supcon.data.recipes import AUGMENT_RECIPES

    sizes = [int(s) for s in _IMAGE_SIZES.value]
    batches = [int(b) for b in _IMAGE_BATCHES.value]
    if len(batches) != len(sizes):
        raise ValueError(f"--image_batches={_IMAGE_BATCHES.value} needs one batch per --image_sizes={sizes}")
    recipes = _RECIPES.value or list(AUGMENT_RECIPES)
    unknown = [r for r in recipes if r not in AUGMENT_RECIPES]
    if unknown:
        raise ValueError(f"--recipes={unknown[0]!r}; allowed: {tuple(AUGMENT_RECIPES)}")
    for size, batch in zip(sizes, batches, strict=True):
        for recipe in recipes:
            record = time_augment(
                recipe, size, batch, host_cropped=size >= _HOST_CROP_FROM.value, repeats=_REPEATS.value
            )
            print(json.dumps({"bench": "augment"} | record), flush=True)


def roofline_benchmark() -> None:
    """Matmul rates (bf16, fp32 default and highest precision) and copy bandwidth of device 0."""
    import jax
    import jax.numpy as jnp

    size = _MATMUL_SIZE.value
    device = jax.devices()[0].device_kind
    for case, dtype, precision in (
        ("matmul_bf16", jnp.bfloat16, None),
        ("matmul_fp32", jnp.float32, None),
        ("matmul_fp32_highest", jnp.float32, jax.lax.Precision.HIGHEST),
    ):
        a, b = (jax.random.normal(jax.random.PRNGKey(i), (size, size), dtype) for i in range(2))
        compiled = jax.jit(lambda x, y, p=precision: jnp.matmul(x, y, precision=p)).lower(a, b).compile()
        seconds = _median_s(lambda c=compiled, x=a, y=b: c(x, y), _REPEATS.value)
        record = {"bench": "roofline", "case": case, "size": size, "time_s": _significant(seconds)}
        print(json.dumps(record | {"tflop_per_s": _significant(2 * size**3 / seconds / 1e12), "device": device}))
        del a, b
    x = jnp.zeros((_COPY_MIB.value * 2**20 // 4,), jnp.float32)
    compiled = jax.jit(lambda v: v + 1.0).lower(x).compile()
    seconds = _median_s(lambda: compiled(x), _REPEATS.value)
    record = {"bench": "roofline", "case": "copy_fp32", "mib": _COPY_MIB.value, "time_s": _significant(seconds)}
    print(json.dumps(record | {"gib_per_s": _significant(2 * x.nbytes / seconds / 2**30), "device": device}))


def _synthetic_batch(config, mesh) -> dict:
    """One global batch of random uint8 images and labels, placed on the devices."""
    from jax_supcon import parallel

    rng = np.random.default_rng(0)
    size = config.data.image_size
    images = rng.integers(0, 256, (config.batch_size, size, size, 3), dtype=np.uint8)
    labels = rng.integers(0, config.data.get("num_classes") or 10, config.batch_size).astype(np.int32)
    return parallel.to_global({"image": images, "label": labels}, mesh)


def _peak_memory_gib(device) -> float:
    """Peak device memory where the runtime reports it (GPU, TPU), else the process's peak RSS."""
    stats = device.memory_stats() or {}
    return _gib(stats.get("peak_bytes_in_use", _peak_rss_bytes()))


def step_benchmark(config, *, steps: int, pipeline: bool = False, peak_tflops: float | None = None) -> dict:
    """Compile and time the config's pretraining step; returns the figures as one record. On
    resident synthetic data (`pipeline=False`) nothing here needs TensorFlow."""
    import functools

    import jax

    from jax_supcon import models, parallel
    from jax_supcon.config import validate_config
    from jax_supcon.jobs.pretrain import pretrain_step
    from jax_supcon.train import inputs, pretrained
    from jax_supcon.train import state as train_state

    validate_config(config)
    mesh = parallel.create_mesh()
    parallel.check_batch_size(config.batch_size, mesh)
    if steps < 1:
        raise ValueError(f"--steps={steps} must be >= 1")
    config = inputs.record_data(config, num_classes=config.data.get("num_classes") or 10, split=None)  # probe size
    model, tx, schedule, init = pretrained.build(config, total_steps=config.total_steps or 1000, warmup_steps=0)
    target = train_state.abstract_state(init, mesh)
    state = train_state.init_state(init, target)
    step = train_state.jit_train_step(
        functools.partial(pretrain_step, model=model, tx=tx, schedule=schedule, config=config, mesh=mesh),
        train_state.state_shardings(target),
        mesh,
    )
    if pipeline:
        from jax_supcon.data import sources
        from jax_supcon.train import inputs

        source = sources.load_source(config.data, "train")
        batches = inputs.training_batches(source, config, state, mesh, views=config.loss.num_views)
        next_batch = functools.partial(next, batches)
    else:
        fixed = _synthetic_batch(config, mesh)
        next_batch = lambda: fixed  # noqa: E731
    start = time.perf_counter()
    compiled = step.lower(state, next_batch()).compile()
    compile_s = time.perf_counter() - start
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    flops = float((cost or {}).get("flops", 0.0)) * mesh.size
    times = []
    for i in range(steps + 2):
        start = time.perf_counter()
        state, metrics = compiled(state, next_batch())
        jax.block_until_ready(metrics["loss"])
        if i >= 2:
            times.append(time.perf_counter() - start)
    median = float(np.median(times))
    views = config.batch_size * config.loss.num_views
    memory = compiled.memory_analysis()
    record = {
        "bench": "step",
        "model": _model_name(config.model),
        "loss": config.loss.name,
        "recipe": config.augment.recipe,
        "image_size": config.data.image_size,
        "batch": config.batch_size,
        "views": config.loss.num_views,
        "input": config.data.name if pipeline else "one device-resident random batch",
        "steps_timed": len(times),
        "step_time_s": round(median, 4),
        "compile_s": round(compile_s, 2),
        "images_per_s": round(config.batch_size / median, 1),
        "views_per_s": round(views / median, 1),
        "tflop_per_step": _significant(flops / 1e12),
        "achieved_tflop_per_s": _significant(flops / median / 1e12),
        "loss_value": float(metrics["loss"]),
        "peak_memory_gib": _peak_memory_gib(jax.devices()[0]),
        "xla_temp_gib": _gib(memory.temp_size_in_bytes) if memory else None,
        "queue_mib": round(sum(leaf.nbytes for leaf in jax.tree.leaves(state.queue)) / 2**20, 3),
        "remat": config.model.remat,
        "devices": mesh.size,
        "device": jax.devices()[0].device_kind,
        "huge_pages": cpu.huge_pages_requested(),
    }
    model_flops = flops
    if models.is_vit(config.model):  # forward + backward (2x forward) of every view, analytically
        model_flops = 3 * views * models.vit.forward_flops(model.encoder, config.data.image_size)
        record["model_tflop_per_step"] = _significant(model_flops / 1e12)
    if peak_tflops:  # model FLOPs (ViT: the analytic count, which a remat's recomputation does not inflate)
        record["mfu"] = _significant(model_flops / median / 1e12 / (peak_tflops * mesh.size))
    return record


def _model_name(model) -> str:
    if model.name.startswith("vit_"):
        return f"{model.name} patch{model.patch_size} {model.pool} {model.dtype}"
    return f"{model.name} w{model.width} {model.stem} {model.dtype}"


def _json(record: dict) -> str:
    """One valid JSON line: a figure that is not finite (a diverged loss, say) is null, not NaN."""
    return json.dumps({k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in record.items()})


def _check_counts() -> None:
    for flag in (_STEPS, _REPEATS, _BATCH, _VIEWS, _DIM, _CLASSES, _CHUNK, _MATMUL_SIZE, _COPY_MIB):
        if flag.value < 1:
            raise ValueError(f"--{flag.name}={flag.value} must be >= 1")


def main(argv: list[str]) -> None:
    if len(argv) != 2 or argv[1] not in COMMANDS:
        raise app.UsageError(f"usage: python -m jax_supcon.bench {{{'|'.join(COMMANDS)}}} [--flags]; got {argv[1:]}")
    with cli.user_errors("jax-supcon-bench"):
        _check_counts()
        if _CASE.value:
            images, chunk = (int(part) for part in _CASE.value.split(":"))
            print(_json(run_loss_case(images, chunk or None)), flush=True)
            return
        if argv[1] == "step":
            if "config" not in flags.FLAGS:
                raise ValueError("step needs ml-collections (and dm-pix): install them or bring their wheels")
            config = flags.FLAGS.config
            if config is None:
                raise app.UsageError("step needs --config=configs/NAME.py")
            record = step_benchmark(config, steps=_STEPS.value, pipeline=_PIPELINE.value, peak_tflops=_PEAK.value)
            print(_json(record), flush=True)
            return
        if argv[1] == "input":
            input_benchmark()
            return
        if argv[1] == "roofline":
            roofline_benchmark()
            return
        if argv[1] == "augment":
            augment_benchmark()
            return
        loss_benchmark()


DESCRIPTION = """jax-supcon-bench: figures of this machine (one JSON line per measurement), never pass/fail.

Usage: jax-supcon-bench loss [--sizes=1024,4096] [--chunk_size=512] [--views=2] [--dim=128]
       jax-supcon-bench input [--batch=256] [--steps=20] [--recipe=simclr]
       jax-supcon-bench step --config=configs/bench_cifar_resnet18.py [--config.KEY=VALUE ...]
           [--steps=20] [--peak_tflops=X] [--pipeline]
       jax-supcon-bench roofline [--matmul_size=8192] [--copy_mib=1024]
       jax-supcon-bench augment [--recipes=simclr,randaugment] [--image_sizes=32,224]
           [--image_batches=512,256]

loss: time and memory of the SupCon loss and its gradient, unchunked and chunked, each case in its
own process. input: the host pipeline's images/s and the on-device augmentation time. step: the
config's compiled pretraining step (images/s, TFLOP/s, MFU with --peak_tflops, memory).
roofline: matmul TFLOP/s (bf16, fp32) and copy GiB/s of this device. augment: the on-device
augmentation of each recipe alone, per image size.
"""


def run() -> None:
    """Console-script entry point (`jax-supcon-bench`)."""
    # Defined here, not at import: `jax_supcon.cli.main` owns `--config` in processes that import both;
    # and `loss` and `roofline` then run without ml-collections (an accelerator host may lack it).
    try:
        from ml_collections import config_flags
    except ImportError:
        config_flags = None
    if config_flags is not None:
        config_flags.DEFINE_config_file("config", None, "step: the config whose pretraining step is timed.")
    cli.start(main, description=DESCRIPTION, module_name=__name__)


if __name__ == "__main__":
    run()
