"""Benchmarks that print figures (one JSON line per measurement); never run as timed tests.

    python -m jax_supcon.bench loss [--sizes=1024,4096,16384,65536] [--chunk_size=512] ...

`loss`: time and peak memory of `jax.value_and_grad(supcon_loss)` for N images x views x dim,
unchunked and chunked. Each case runs in a fresh subprocess, so its peak resident memory
(`peak_rss_gib`, the whole process: runtime + inputs + loss) is its own; `xla_temp_gib` is
XLA's planned scratch memory for the compiled program. An unchunked case whose plan exceeds
`--max_gib` is reported as skipped with its planned size instead of being run.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time

import numpy as np
from absl import app, flags

_SIZES = flags.DEFINE_list("sizes", ["1024", "4096", "16384", "65536"], "Numbers of images (N).")
_VIEWS = flags.DEFINE_integer("views", 2, "Views per image.")
_DIM = flags.DEFINE_integer("dim", 128, "Feature dimension.")
_CLASSES = flags.DEFINE_integer("classes", 100, "Distinct labels in the batch.")
_CHUNK = flags.DEFINE_integer("chunk_size", 512, "Anchor rows per block for the chunked cases.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed repetitions after one warm-up (median reported).")
_MAX_GIB = flags.DEFINE_float("max_gib", 12.0, "Skip cases whose XLA plan needs more scratch memory than this.")
_CASE = flags.DEFINE_string("case", None, "Internal: run one case 'N:CHUNK' in this process.")

COMMANDS = ("loss",)


def _gib(num_bytes: float) -> float:
    return round(num_bytes / 2**30, 3)


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
    start = time.perf_counter()
    jax.block_until_ready(compiled(features, labels))
    warmup_s = time.perf_counter() - start
    times = []
    for _ in range(1 if warmup_s > 20 else _REPEATS.value):  # minutes-long cases: one timed run
        start = time.perf_counter()
        jax.block_until_ready(compiled(features, labels))
        times.append(time.perf_counter() - start)
    n = images * _VIEWS.value
    # Matmul work of the default path: logits (N^2 d) + two gradient products; x2 flops per MAC.
    flops = 3 * 2 * n * n * _DIM.value
    median = float(np.median(times))
    return record | {
        "time_s": round(median, 4),
        "matmul_gflop_per_s": round(flops / median / 1e9, 1),
        "peak_rss_gib": _gib(_peak_rss_bytes()),
        "device": jax.devices()[0].device_kind,
    }


def loss_benchmark() -> None:
    """Every (size, chunked?) case in its own subprocess; print each result as it lands."""
    for size in (int(s) for s in _SIZES.value):
        for chunk in (None, _CHUNK.value):
            argv = [sys.executable, "-m", "jax_supcon.bench", "loss", f"--case={size}:{chunk or 0}"]
            argv += [f"--{f}={flags.FLAGS[f].value}" for f in ("views", "dim", "classes", "repeats", "max_gib")]
            result = subprocess.run(
                argv, capture_output=True, text=True, env=os.environ | {"TF_CPP_MIN_LOG_LEVEL": "2"}
            )
            lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
            if result.returncode != 0 or not lines:
                tail = (result.stderr.strip().splitlines() or ["(no output)"])[-1]
                print(json.dumps({"bench": "loss", "images": size, "chunk_size": chunk, "error": tail}), flush=True)
            else:
                print(lines[-1], flush=True)


def main(argv: list[str]) -> None:
    if len(argv) != 2 or argv[1] not in COMMANDS:
        raise app.UsageError(f"usage: python -m jax_supcon.bench {{{'|'.join(COMMANDS)}}} [--flags]; got {argv[1:]}")
    if _CASE.value:
        images, chunk = (int(part) for part in _CASE.value.split(":"))
        print(json.dumps(run_loss_case(images, chunk or None)), flush=True)
        return
    loss_benchmark()


if __name__ == "__main__":
    app.run(main)
