"""A sweep's plan: the grid's cells, each (cell, seed)'s stages and their commands, every stage's
config checked before anything runs, and the rule for reusing a finished stage. Pure: nothing here
starts a process or writes a file."""

from __future__ import annotations

import itertools
import json
import os
import re
from collections.abc import Sequence
from typing import NamedTuple

from jax_supcon.config.files import has_key, load_config

SHARED_PREFIXES = ("data.", "wandb.")  # grid keys the second stage gets too
STAGE_FILE = "summary.json"


class Options(NamedTuple):
    config: str
    workdir: str
    grid: list[str]
    seeds: int
    then: str | None
    metrics: list[str]
    parallel: int
    gpus_per_cell: int
    name: str
    baselines: bool
    overrides: list[str]
    then_overrides: list[str]
    command: str
    select: str = ""


class Axis(NamedTuple):
    key: str
    values: tuple[str, ...]


class Cell(NamedTuple):
    name: str
    config: str  # FILE[:ARG]
    assignments: tuple[tuple[str, str], ...]  # (key, value) of the grid, the `config` key included


class Stage(NamedTuple):
    label: str  # "stage1" or "stage2"
    config: str
    workdir: str
    overrides: tuple[str, ...]  # --config.KEY=VALUE, the seed included


def parse_axis(spec: str) -> Axis:
    """`KEY=V1,V2,...` or `KEY=["V1", "V2"]` (JSON: values with commas)."""
    key, sep, text = spec.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ValueError(f"--grid={spec!r}: expected KEY=V1,V2,... (or KEY=[JSON list])")
    if text.strip().startswith("["):
        try:
            values = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"--grid={spec!r}: the value list is not valid JSON ({error.msg})") from None
        values = [v if isinstance(v, str) else json.dumps(v) for v in values]
    else:
        values = text.split(",")
    values = [v.strip() for v in values]
    if not values or any(not v for v in values):
        raise ValueError(f"--grid={spec!r}: empty value; give KEY=V1,V2,... with every value non-empty")
    if len(set(values)) != len(values):
        raise ValueError(f"--grid={spec!r}: a value appears twice")
    return Axis(key, tuple(values))


def _slug(key: str, value: str) -> str:
    if key == "config":
        base, _, arg = value.partition(":")
        text = os.path.splitext(os.path.basename(base))[0] + (f"-{arg}" if arg else "")
    else:
        text = f"{key}={value}"
    return re.sub(r"[^A-Za-z0-9._=+-]+", "_", text).strip("_") or "_"


def make_cells(config: str, axes: Sequence[Axis]) -> list[Cell]:
    """Every combination of the axes' values, in order (the first axis varies slowest)."""
    cells = []
    for combination in itertools.product(*(axis.values for axis in axes)):
        assignments = tuple(zip((axis.key for axis in axes), combination, strict=True))
        file = dict(assignments).get("config", config)
        name = ",".join(_slug(k, v) for k, v in assignments) or "default"
        cells.append(Cell(name, file, assignments))
    if len({c.name for c in cells}) != len(cells):
        raise ValueError("two grid cells get the same directory name; make the values differ in letters or digits")
    return cells


def _overrides(assignments, *, only_shared: bool = False) -> list[str]:
    return [
        f"--config.{key}={value}"
        for key, value in assignments
        if key != "config" and (not only_shared or key.startswith(SHARED_PREFIXES))
    ]


def stages(
    cell: Cell,
    seed: int,
    workdir: str,
    *,
    job: str,
    overrides: Sequence[str],
    then: str | None,
    then_overrides: Sequence[str],
    group: str | None,
) -> list[Stage]:
    """The commands of one (cell, seed): its first stage and, for a pretrain job with `then`, the
    second stage on the first's workdir. `group`: the W&B group of the runs (None: a config
    without a `wandb` section)."""
    root = os.path.join(workdir, cell.name, f"seed{seed}")

    def tracking(name: str) -> list[str]:
        return [f"--config.wandb.group={group}", f"--config.wandb.name={name}"] if group else []

    first = Stage(
        "stage1",
        cell.config,
        os.path.join(root, "stage1"),
        (*tracking(f"{cell.name}/seed{seed}"), *overrides, *_overrides(cell.assignments), f"--config.seed={seed}"),
    )
    if then is None or job != "pretrain":
        return [first]
    second = Stage(
        "stage2",
        then,
        os.path.join(root, "stage2"),
        (
            *tracking(f"{cell.name}/seed{seed}/then"),
            *[o for o in overrides if o.removeprefix("--config.").startswith(SHARED_PREFIXES)],
            *then_overrides,
            *_overrides(cell.assignments, only_shared=True),
            f"--config.seed={seed}",
            f"--config.pretrained_workdir={first.workdir}",
        ),
    )
    return [first, second]


def _stage_error(cell: Cell, stage: Stage, error: Exception) -> ValueError:
    return ValueError(f"cell {cell.name} {stage.label} ({stage.config}): {error}")


def check_stage(cell: Cell, stage: Stage):
    """The stage's config, validated like the job would at its start: a one-line ValueError that
    names the cell."""
    from jax_supcon.config import validate_config

    try:
        config = load_config(stage.config, stage.overrides)
        validate_config(config)
    except (ValueError, FileNotFoundError) as error:
        raise _stage_error(cell, stage, error) from None
    return config


def check_stage_data(cell: Cell, stage: Stage, config) -> None:
    """The checks of its data a training job makes before it builds anything (the batch against the
    training split left by label_fraction or train_classes, the run's length, class balance; files
    are listed, not decoded): a one-line ValueError that names the cell."""
    if config.job == "embed":
        return
    from jax_supcon.train import inputs

    listed = config.copy_and_resolve_references()
    listed.data.verify_files = False
    try:
        inputs.training_splits(listed)
    except (ValueError, FileNotFoundError) as error:
        raise _stage_error(cell, stage, error) from None


# What stage 2 must share with stage 1 (label_fraction may differ: semi-supervised protocols).
SAME_DATA_KEYS = (
    "name",
    "image_size",
    "train_split",
    "eval_split",
    "train_classes",
    "train_fraction",
    "label_noise",
    "validation_fraction",
)


def _check_same_data(cell: Cell, first, second) -> None:
    for key in SAME_DATA_KEYS:
        if first.data.get(key) != second.data.get(key):
            raise ValueError(
                f"cell {cell.name}: stage 2 would read data.{key}={second.data.get(key)!r}, stage 1 "
                f"data.{key}={first.data.get(key)!r}; use a --then config for the same data (or --then.data.{key}=...)"
            )


def _check_grid_key(axis: Axis, config) -> None:
    if axis.key != "config" and not has_key(config, axis.key):
        raise ValueError(f"--grid={axis.key}=...: unknown config key {axis.key!r}")


def plan(options) -> tuple[list[Cell], list[tuple[Cell, int, list[Stage]]]]:
    """Cells and every (cell, seed)'s stages, each stage's config checked; nothing is written."""
    if options.seeds < 1:
        raise ValueError(f"--seeds={options.seeds} must be >= 1 (seeds 0..N-1)")
    if options.parallel < 1 or options.gpus_per_cell < 0:
        raise ValueError(f"--parallel={options.parallel} must be >= 1 and --gpus_per_cell={options.gpus_per_cell} >= 0")
    axes = [parse_axis(spec) for spec in options.grid]
    keys = [axis.key for axis in axes]
    if len(set(keys)) != len(keys):
        raise ValueError(f"--grid names a key twice ({keys}); give each key one --grid")
    if "seed" in keys or any(o.startswith("--config.seed=") for o in options.overrides):
        raise ValueError("the sweep sets config.seed itself (0..N-1 with --seeds=N); drop the seed override")
    if options.then_overrides and not options.then:
        raise ValueError(f"{options.then_overrides[0].replace('--config.', '--then.', 1)} needs --then=FILE")
    if options.select:
        check_select_metric(options.select)
        options = options._replace(
            overrides=[*options.overrides, NO_TEST],
            then_overrides=[*options.then_overrides, NO_TEST] if options.then else options.then_overrides,
        )
    base = load_config(options.config, options.overrides)
    for axis in axes:
        _check_grid_key(axis, base)
    cells = make_cells(options.config, axes)
    planned = []
    group = options.name if has_key(base, "wandb") else None
    jobs = {c.name: load_config(c.config, [*options.overrides, *_overrides(c.assignments)]).job for c in cells}

    def cell_stages_of(cell: Cell, seed: int) -> list[Stage]:
        return stages(
            cell,
            seed,
            options.workdir,
            job=jobs[cell.name],
            overrides=options.overrides,
            then=options.then,
            then_overrides=options.then_overrides,
            group=group,
        )

    # Every cell's values before any cell's data: a bad value is named without loading a data set.
    checked_of = {cell.name: [check_stage(cell, stage) for stage in cell_stages_of(cell, 0)] for cell in cells}
    for cell in cells:
        for seed in range(options.seeds):
            cell_stages = cell_stages_of(cell, seed)
            if seed == 0:
                checked = checked_of[cell.name]
                for stage, config in zip(cell_stages, checked, strict=True):
                    check_stage_data(cell, stage, config)
                if len(checked) == 2:
                    _check_same_data(cell, *checked)
                if options.select and not checked[0].data.validation_fraction:
                    raise ValueError(
                        f"--select={options.select} chooses on validation, but cell {cell.name} has "
                        "data.validation_fraction=0 (validation would read the test split); set "
                        "--config.data.validation_fraction=0.1 (or a recipe that sets it)"
                    )
            for stage in cell_stages:
                check_recorded_config(cell, seed, stage)
            planned.append((cell, seed, cell_stages))
    return cells, planned


NO_TEST = "--config.evaluate_test=False"  # what --select's tuning runs get
READ_TEST = "--config.evaluate_test=True"  # ... and what the chosen cell's finished runs are started again with


def check_select_metric(metric: str) -> None:
    """`--select` names a validation figure: choosing on a test figure is what it exists to prevent."""
    if not (metric in ("val_top1", "val_top5") or metric.startswith("val/")):
        raise ValueError(
            f"--select={metric!r}: choose on a validation metric (val_top1, val_top5 or a val/... key such as "
            "val/encoder/knn_top1 or val/encoder/mean_average_precision_at_r), never on the test split"
        )


def test_counterpart(metric: str) -> str:
    """The test split's figure of a validation metric: `val_top1` -> `test_top1`, `val/x` -> `test/x`."""
    return "test_" + metric.removeprefix("val_") if metric.startswith("val_") else "test/" + metric.removeprefix("val/")


def check_recorded_config(cell: Cell, seed: int, stage: Stage) -> None:
    """A stage already run (finished or not) must be the run its config resolves to now: the config
    file may have been edited since (the command text alone would not show it). A finished stage
    must match in everything its result depends on, an unfinished one in what its resume needs;
    else a one-line ValueError naming the changed keys, before anything is run or written."""
    from jax_supcon.train import workdir as run_dir

    if not os.path.exists(os.path.join(stage.workdir, run_dir.CONFIG_FILE)):
        return
    finished = os.path.exists(os.path.join(stage.workdir, STAGE_FILE))
    keys = run_dir.RESULT_KEYS if finished else run_dir.RESUME_FIXED_KEYS
    config = load_config(stage.config, stage.overrides)
    pretrained_workdir = config.get("pretrained_workdir")
    if pretrained_workdir and os.path.exists(os.path.join(pretrained_workdir, run_dir.CONFIG_FILE)):
        from jax_supcon.train import pretrained  # stage 2 runs with stage 1's model, as its job does

        config = pretrained.inherit_pretrained(config, run_dir.load_config(pretrained_workdir))
    changed = run_dir.config_differences(stage.workdir, config, keys, undecided=True)
    if changed:
        raise ValueError(
            f"cell {cell.name} seed {seed} {stage.label}: {stage.workdir} {'ran' if finished else 'started'} with "
            f"another config ({'; '.join(changed)}): {stage.config} or its overrides changed since; nothing is "
            "reused or run: restore the config, or sweep into a new --workdir"
        )


def command_record(stage: Stage) -> dict:
    """What a stage's result depends on, as the sweep ran it: the config file (absolute) and the
    overrides (W&B's left out: they may change)."""
    file, sep, arg = stage.config.partition(":")
    return {
        "config": os.path.abspath(file) + sep + arg,
        "overrides": [o for o in stage.overrides if not o.startswith("--config.wandb.")],
    }


def record_path(stage: Stage) -> str:
    return f"{stage.workdir}.command.json"


def check_reusable(stage: Stage) -> None:
    """A finished stage counts only if this sweep's command for it is the one that ran it."""
    path = record_path(stage)
    if not os.path.exists(path):
        raise ValueError(
            f"{stage.workdir} holds a finished run this sweep did not start (no {path}); use another --workdir"
        )
    with open(path) as f:
        recorded = json.load(f)
    wanted = command_record(stage)
    if recorded != wanted:
        changed = [k for k in ("config", "overrides") if recorded.get(k) != wanted[k]]
        if changed == ["overrides"]:
            differ = sorted(set(recorded["overrides"]) ^ set(wanted["overrides"]))
            detail = "overrides " + " ".join(differ)
        else:
            detail = f"config {recorded.get('config')} vs {wanted['config']}"
        raise ValueError(f"{stage.workdir} finished with another command ({detail}); use another --workdir")
