"""What the benchmarks share: timing with a device sync, memory figures, one JSON line per record."""

from __future__ import annotations

import json
import math
import resource
import time
from collections.abc import Callable, Iterable

import numpy as np
from absl import flags


def gib(num_bytes: float) -> float:
    return round(num_bytes / 2**30, 3)


def significant(value: float) -> float:
    """Four significant digits: tiny test models and large runs both stay readable."""
    return float(f"{value:.4g}")


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def peak_memory_gib(device) -> float:
    """Peak device memory where the runtime reports it (GPU, TPU), else the process's peak RSS."""
    stats = device.memory_stats() or {}
    return gib(stats.get("peak_bytes_in_use", peak_rss_bytes()))


def median_s(call: Callable[[], object], repeats: int) -> float:
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


def to_json(record: dict) -> str:
    """One valid JSON line: a figure that is not finite (a diverged loss, say) is null, not NaN."""
    return json.dumps({k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in record.items()})


def define_repeats(values: flags.FlagValues, module_name: str) -> None:
    """`--repeats`, listed in the `--help` of the benchmark (`module_name`) that defines it."""
    flags.DEFINE_integer(
        "repeats",
        3,
        "Timed repetitions after one warm-up (median reported).",
        flag_values=values,
        module_name=module_name,
    )


def check_counts(options: flags.FlagValues, names: Iterable[str]) -> None:
    """A one-line ValueError for the first count flag below 1."""
    for name in names:
        if options[name].value < 1:
            raise ValueError(f"--{name}={options[name].value} must be >= 1")
