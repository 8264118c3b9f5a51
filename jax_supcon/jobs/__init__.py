"""The jobs a config names (`config.job`), one module each with `train_and_evaluate(config,
workdir, *, mesh=None) -> summary`: the function the CLI, tests and notebooks call. A job never
imports another job; what they share lives in `jax_supcon.train` and `jax_supcon.evaluate`."""

from __future__ import annotations

import importlib

from jax_supcon.config.base import JOBS


def train_and_evaluate(config, workdir: str, *, mesh=None) -> dict:
    """Run (or resume) the job `config.job` in `workdir`; returns the summary it writes."""
    if config.job not in JOBS:
        raise ValueError(f"job={config.job!r}; allowed: {JOBS}")
    module = importlib.import_module(f"jax_supcon.jobs.{config.job}")
    return module.train_and_evaluate(config, workdir, mesh=mesh)
