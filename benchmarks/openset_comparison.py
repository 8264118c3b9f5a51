"""The README's open-set comparison: each method of an open-set recipe (`configs/*_openset.py`)
trained for the same steps with several seeds, then its retrieval of the held-out classes (the
last validation, never a checkpoint chosen on the test split) as mean ± sample std, next to
raw pixels.

    python benchmarks/openset_comparison.py --config=configs/mnist5k_openset.py --workdir=/tmp/cmp --seeds=3

Each cell runs `jax-supcon` in its own process and workdir (`WORKDIR/METHOD-sSEED`); a second
call skips finished cells and resumes interrupted ones. Prints one markdown table; the per-cell
values go to `WORKDIR/openset.json`.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time

import numpy as np

METRICS = ("mean_average_precision_at_r", "r_precision", "precision_at_1", "recall_at_4")
HEADERS = ("MAP@R", "R-precision", "Recall@1", "Recall@4")


def _load_recipe(path: str):
    spec = importlib.util.spec_from_file_location("recipe", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_cell(config: str, method: str, seed: int, workdir: str, overrides: list[str]) -> dict:
    """The summary of one (method, seed) run, training it first unless it has finished."""
    summary = os.path.join(workdir, "summary.json")
    if not os.path.exists(summary):
        command = [
            sys.executable,
            "-m",
            "jax_supcon.main",
            f"--config={config}:{method}",
            f"--workdir={workdir}",
            f"--config.seed={seed}",
            "--config.plots=False",
            *overrides,
        ]
        started = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        print(f"{method} seed {seed}: {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    with open(summary) as f:
        return json.load(f)


def raw_pixel_metrics(recipe) -> dict[str, float]:
    """The same protocol on raw pixels of the held-out test images (the trivial baseline)."""
    from jax_supcon.data import classes, sources
    from jax_supcon.evaluate import validation

    config = recipe.get_config()
    test = sources.load_source(config.data, "test")
    split = classes.class_split(config.data.train_classes, test.num_classes)
    held_out = classes.restrict(test, split.held_out, relabel=False)
    pixels = held_out.images.reshape(held_out.num_examples, -1).astype(np.float32)
    metrics = validation.open_set_metrics(
        {"encoder": pixels, "labels": held_out.labels},
        gallery_fraction=config.eval.gallery_fraction,
        spaces={"encoder": "encoder"},
    )
    return {name: metrics[f"val/encoder/{name}"] for name in METRICS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="an open-set recipe with METHODS")
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--methods", default="", help="comma-separated; default: the recipe's METHODS")
    parser.add_argument("overrides", nargs="*", help="--config.KEY=VALUE for every cell")
    args, extra = parser.parse_known_args()
    recipe = _load_recipe(args.config)
    methods = [m for m in args.methods.split(",") if m] or list(recipe.METHODS)
    results = {}
    for method in methods:
        for seed in range(args.seeds):
            cell = os.path.join(args.workdir, f"{method}-s{seed}")
            summary = run_cell(args.config, method, seed, cell, [*args.overrides, *extra])
            results.setdefault(method, []).append({name: summary[f"val/encoder/{name}"] for name in METRICS})
    pixels = raw_pixel_metrics(recipe)
    os.makedirs(args.workdir, exist_ok=True)
    with open(os.path.join(args.workdir, "openset.json"), "w") as f:
        json.dump({"cells": results, "raw_pixels": pixels}, f, indent=2)
    print(f"| encoder features of | {' | '.join(HEADERS)} |")
    print(f"|---|{'---|' * len(HEADERS)}")
    print(f"| raw pixels | {' | '.join(f'{pixels[name]:.3f}' for name in METRICS)} |")
    for method, runs in results.items():
        cells = []
        for name in METRICS:
            values = np.array([run[name] for run in runs])
            spread = f" ± {values.std(ddof=1):.3f}" if len(values) > 1 else ""
            cells.append(f"{values.mean():.3f}{spread}")
        print(f"| {method} ({len(runs)} seeds) | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
