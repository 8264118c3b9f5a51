"""Benchmarks that print figures (one JSON line per measurement); never run as timed tests.

One module per benchmark, each owning its flags (`define_flags`), its `run(options)`, its `USAGE`
and `SUMMARY`; `COMMANDS` is the table `jax-supcon-bench` dispatches on and writes its usage from.
`loss`, `roofline`, `augment` and `step` on resident data need no TensorFlow; `loss` and
`roofline` need neither ml-collections nor dm-pix. Importing this package defines no flag.
"""

from __future__ import annotations

import importlib
from types import ModuleType

COMMANDS = ("loss", "input", "step", "roofline", "augment")
_MODULES = {"loss": "loss", "input": "input_pipeline", "step": "step", "roofline": "roofline", "augment": "augment"}


def benchmark(command: str) -> ModuleType:
    """The module of one benchmark (`jax_supcon.bench.<module>`); a ValueError names the allowed ones."""
    if command not in _MODULES:
        raise ValueError(f"benchmark {command!r}; allowed: {'|'.join(COMMANDS)}")
    return importlib.import_module(f"jax_supcon.bench.{_MODULES[command]}")


def usage(program: str = "jax-supcon-bench") -> str:
    """One usage line per benchmark, from each module's USAGE, and what each measures."""
    lines = [f"{program} {command} {benchmark(command).USAGE}" for command in COMMANDS]
    text = "Usage: " + "\n       ".join(lines) + "\n\n"
    return text + "\n".join(f"{command}: {benchmark(command).SUMMARY}." for command in COMMANDS)
