"""`step`: the config's pretraining step (on-device augmentation, forward and backward of every
view, loss, optimizer update; state donated), the job's own program
(`jobs.pretrain.compiled_pretraining`), compiled once and timed per step with a device sync
(`step_time_s` is the median after 2 warm-up steps). By default it reuses one random batch already
on the devices, so it measures compute; `--pipeline` feeds it from the config's input pipeline
instead. FLOPs are XLA's cost analysis of the compiled step (the program of one device times the
number of devices); for a ViT, `model_tflop_per_step` is also the analytic count
(`models.vit.forward_flops`: 2 x matrix parameters x tokens plus attention, x3 for the backward
pass), which XLA's agrees with to a few percent. MFU is model FLOP/s (a ViT's analytic count,
otherwise XLA's) over `--peak_tflops` per device. On resident data nothing here needs TensorFlow."""

from __future__ import annotations

import time

import numpy as np
from absl import flags

from jax_supcon.bench import common
from jax_supcon.platform import cpu

USAGE = "--config=configs/bench_cifar_resnet18.py [--config.KEY=VALUE ...] [--steps=20] [--peak_tflops=X] [--pipeline]"
SUMMARY = "the config's compiled pretraining step (images/s, TFLOP/s, MFU with --peak_tflops, memory)"


def define_flags(values: flags.FlagValues, sys_argv: list[str] | None = None) -> None:
    """`--config` needs ml-collections, imported here only: the other benchmarks run without it."""
    from ml_collections import config_flags

    config_flags.DEFINE_config_file(
        "config", None, "The config whose pretraining step is timed.", flag_values=values, sys_argv=sys_argv
    )
    flags.DEFINE_integer("steps", 20, "Timed steps, after two warm-up steps.", flag_values=values)
    flags.DEFINE_float("peak_tflops", None, "Peak TFLOP/s of one device, for MFU.", flag_values=values)
    flags.DEFINE_bool("pipeline", False, "Feed the step from the config's input pipeline.", flag_values=values)
    flags.mark_flags_as_required(["config"], flag_values=values)


def _synthetic_batch(config, mesh) -> dict:
    """One global batch of random uint8 images and labels, placed on the devices."""
    from jax_supcon import parallel

    rng = np.random.default_rng(0)
    size = config.data.image_size
    images = rng.integers(0, 256, (config.batch_size, size, size, 3), dtype=np.uint8)
    labels = rng.integers(0, config.data.get("num_classes") or 10, config.batch_size).astype(np.int32)
    return parallel.to_global({"image": images, "label": labels}, mesh)


def model_name(model) -> str:
    if model.name.startswith("vit_"):
        return f"{model.name} patch{model.patch_size} {model.pool} {model.dtype}"
    return f"{model.name} w{model.width} {model.stem} {model.dtype}"


def step_benchmark(config, *, steps: int, pipeline: bool = False, peak_tflops: float | None = None) -> dict:
    """Compile and time the config's pretraining step; returns the figures as one record."""
    import functools

    import jax

    from jax_supcon import models, parallel
    from jax_supcon.config import validate_config
    from jax_supcon.jobs.pretrain import compiled_pretraining
    from jax_supcon.train import inputs
    from jax_supcon.train import state as train_state

    validate_config(config)
    mesh = parallel.create_mesh()
    parallel.check_batch_size(config.batch_size, mesh)
    if steps < 1:
        raise ValueError(f"--steps={steps} must be >= 1")
    config = inputs.record_data(config, num_classes=config.data.get("num_classes") or 10, split=None)  # probe size
    program = compiled_pretraining(config, mesh, total_steps=config.total_steps or 1000, warmup_steps=0)
    state = train_state.init_state(program.init, program.target)
    if pipeline:
        from jax_supcon.data import sources

        source = sources.load_source(config.data, "train")
        batches = inputs.training_batches(source, config, state, mesh, views=config.loss.num_views)
        next_batch = functools.partial(next, batches)
    else:
        fixed = _synthetic_batch(config, mesh)
        next_batch = lambda: fixed  # noqa: E731
    start = time.perf_counter()
    compiled = program.step.lower(state, next_batch()).compile()
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
        "model": model_name(config.model),
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
        "tflop_per_step": common.significant(flops / 1e12),
        "achieved_tflop_per_s": common.significant(flops / median / 1e12),
        "loss_value": float(metrics["loss"]),
        "peak_memory_gib": common.peak_memory_gib(jax.devices()[0]),
        "xla_temp_gib": common.gib(memory.temp_size_in_bytes) if memory else None,
        "queue_mib": round(sum(leaf.nbytes for leaf in jax.tree.leaves(state.queue)) / 2**20, 3),
        "remat": config.model.remat,
        "devices": mesh.size,
        "device": jax.devices()[0].device_kind,
        "huge_pages": cpu.huge_pages_requested(),
    }
    model_flops = flops
    if models.is_vit(config.model):  # forward + backward (2x forward) of every view, analytically
        model_flops = 3 * views * models.vit.forward_flops(program.model.encoder, config.data.image_size)
        record["model_tflop_per_step"] = common.significant(model_flops / 1e12)
    if peak_tflops:  # model FLOPs (ViT: the analytic count, which a remat's recomputation does not inflate)
        record["mfu"] = common.significant(model_flops / median / 1e12 / (peak_tflops * mesh.size))
    return record


def run(options: flags.FlagValues) -> None:
    record = step_benchmark(
        options.config, steps=options.steps, pipeline=options.pipeline, peak_tflops=options.peak_tflops
    )
    print(common.to_json(record), flush=True)
