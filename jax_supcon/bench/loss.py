"""`loss`: time and peak memory of `jax.value_and_grad(supcon_loss)` for N images x views x dim,
unchunked and chunked, next to its floor: its three N^2 d matmuls alone, timed in the same process
(`three_matmuls_s`; `vs_three_matmuls` is the ratio). Each case runs in a fresh subprocess, so its
peak resident memory (`peak_rss_gib`, the whole process: runtime + inputs + loss) is its own;
`xla_temp_gib` is XLA's planned scratch memory for the compiled program. An unchunked case whose
plan exceeds `--max_gib` is reported as skipped with its planned size instead of being run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from absl import flags

from jax_supcon.bench import common

USAGE = "[--sizes=1024,4096,16384,65536] [--chunk_size=512] [--views=2] [--dim=128] [--classes=100]"
SUMMARY = "time and memory of the SupCon loss and its gradient, unchunked and chunked, each case in its own process"
CASE_FLAGS = ("views", "dim", "classes", "repeats", "max_gib")  # what a case's subprocess is given


def define_flags(values: flags.FlagValues, sys_argv: list[str] | None = None) -> None:
    flags.DEFINE_list("sizes", ["1024", "4096", "16384", "65536"], "Numbers of images (N).", flag_values=values)
    flags.DEFINE_integer("views", 2, "Views per image.", flag_values=values)
    flags.DEFINE_integer("dim", 128, "Feature dimension.", flag_values=values)
    flags.DEFINE_integer("classes", 100, "Distinct labels in the batch.", flag_values=values)
    flags.DEFINE_integer("chunk_size", 512, "Anchor rows per block for the chunked cases.", flag_values=values)
    flags.DEFINE_float(
        "max_gib", 12.0, "Skip cases whose XLA plan needs more scratch memory than this.", flag_values=values
    )
    flags.DEFINE_string("case", None, "Internal: run one case 'N:CHUNK' in this process.", flag_values=values)
    common.define_repeats(values, __name__)


def run_case(
    images: int, chunk_size: int | None, *, views: int, dim: int, classes: int, repeats: int, max_gib: float
) -> dict:
    """Compile and time value_and_grad of supcon_loss for one size, in this process."""
    import jax
    import jax.numpy as jnp

    from jax_supcon import losses

    key_features, key_labels = jax.random.split(jax.random.PRNGKey(0))
    features = jax.random.normal(key_features, (images, views, dim), jnp.float32)
    features = features / jnp.linalg.norm(features, axis=-1, keepdims=True)
    labels = jax.random.randint(key_labels, (images,), 0, classes)
    step = jax.jit(jax.value_and_grad(lambda f, y: losses.supcon_loss(f, y, chunk_size=chunk_size)))
    start = time.perf_counter()
    compiled = step.lower(features, labels).compile()
    compile_s = time.perf_counter() - start
    memory = compiled.memory_analysis()
    record = {
        "bench": "loss",
        "images": images,
        "views": views,
        "dim": dim,
        "chunk_size": chunk_size,
        "compile_s": round(compile_s, 3),
        "xla_temp_gib": common.gib(memory.temp_size_in_bytes) if memory else None,
    }
    if memory and memory.temp_size_in_bytes > max_gib * 2**30:
        return record | {"skipped": f"needs {common.gib(memory.temp_size_in_bytes)} GiB > --max_gib={max_gib}"}
    median = common.median_s(lambda: compiled(features, labels), repeats)
    n = images * views
    # Matmul work of the default path: logits (N^2 d) + two gradient products; x2 flops per MAC.
    flops = 3 * 2 * n * n * dim
    floor = three_matmuls_s(features.reshape(n, -1), repeats) if 2 * n * n * 4 <= max_gib * 2**30 else None
    return record | {
        "time_s": round(median, 4),
        "matmul_gflop_per_s": round(flops / median / 1e9, 1),
        "three_matmuls_s": None if floor is None else round(floor, 4),
        "vs_three_matmuls": None if floor is None else round(median / floor, 2),
        "peak_rss_gib": common.gib(common.peak_rss_bytes()),
        "peak_memory_gib": common.peak_memory_gib(jax.devices()[0]),
        "device": jax.devices()[0].device_kind,
    }


def three_matmuls_s(features, repeats: int) -> float:
    """The loss's floor on this device: the median time of its three N^2 d matmuls alone (logits
    `Z Z^T`, then `G Z` and `G^T Z` for an `[N, N]` gradient `G`), in one compiled program."""
    import jax

    def matmuls(z, g):
        return z @ z.T, g @ z, g.T @ z

    g = jax.numpy.full((features.shape[0],) * 2, 1e-3, features.dtype)
    compiled = jax.jit(matmuls).lower(features, g).compile()
    return common.median_s(lambda: compiled(features, g), repeats)


def run(options: flags.FlagValues) -> None:
    """With `--case`, that case in this process; otherwise every (size, chunked?) case in its own
    subprocess, each result printed as it lands."""
    common.check_counts(options, ("views", "dim", "classes", "chunk_size", "repeats"))
    case_options = {name: options[name].value for name in CASE_FLAGS}
    if options.case:
        images, chunk = (int(part) for part in options.case.split(":"))
        print(common.to_json(run_case(images, chunk or None, **case_options)), flush=True)
        return
    for size in (int(s) for s in options.sizes):
        for chunk in (None, options.chunk_size):
            argv = [sys.executable, "-m", "jax_supcon.bench", "loss", f"--case={size}:{chunk or 0}"]
            argv += [f"--{name}={value}" for name, value in case_options.items()]
            result = subprocess.run(
                argv, capture_output=True, text=True, env=os.environ | {"TF_CPP_MIN_LOG_LEVEL": "2"}
            )
            lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
            if result.returncode != 0 or not lines:
                tail = (result.stderr.strip().splitlines() or ["(no output)"])[-1]
                print(json.dumps({"bench": "loss", "images": size, "chunk_size": chunk, "error": tail}), flush=True)
            else:
                print(lines[-1], flush=True)
