"""Compare configs, methods and settings with one command: a grid of runs, each repeated over seeds.

Usage: jax-supcon-sweep --config=FILE[:ARG] --workdir=DIR [--grid=KEY=V1,V2,...]... [--seeds=N]
        [--then=FILE[:ARG]] [--metrics=NAME,...] [--select=VAL_METRIC] [--parallel=K] [--name=NAME]
        [--config.KEY=VALUE ...] [--then.KEY=VALUE ...]             (or python -m jax_supcon.sweep)

Each `--grid` varies one config key over a list of values (a list whose values contain commas
is written in JSON: --grid='data.train_classes=["0-4","5-9"]'); the key `config` varies the
config file itself (--grid=config=configs/digits_supcon.py,configs/digits_ce.py). Every
combination is a cell; `--seeds=N` runs each cell with seeds 0..N-1. `--then` runs a second stage
(linear evaluation) on every cell whose config is a pretrain job, with `pretrained_workdir` set
to the cell's first stage: methods with one stage (cross-entropy) and two compare side by side.
`--config.KEY=VALUE` applies to the first stage, `--then.KEY=VALUE` to the second; grid keys
under `data.` and `wandb.`, and the seed, apply to both (the stages must see the same data).

Every stage runs `jax-supcon` in its own process and workdir, DIR/CELL/seedS/stage1 (and stage2),
with its console output in stage1.log next to it; sequentially, or `--parallel=K` at a time
(`--gpus_per_cell=G`: each of those processes sees its own G GPUs). A second call skips finished
stages and resumes interrupted ones from their checkpoints; a failed run is reported with its
error and does not stop the others. Every cell's values are checked before anything runs: bad
input is one line and exit code 2, with nothing written.

DIR gets sweep.json (per cell: the overrides, per-seed values, mean and sample standard
deviation), sweep.md (a table: mean ± std per cell, the best marked) and sweep.png (bars with
error bars, one panel per metric), with the raw-pixel 3-NN baseline of each data setting as rows
of their own (data held in memory only). The metrics: `--metrics` (names in the runs'
summary.json; a validation metric by its short name, e.g. mean_average_precision_at_r), or by
default the last stage's test_top1, else the open-set retrieval metrics, else kNN top-1. Exit
code 1 when a run failed.

`--select=METRIC` chooses on validation, never on the test split: every stage runs with
`data.validation_fraction` > 0 and `evaluate_test=False` (no test figure is computed while
tuning); the cell with the best mean of METRIC (`val_top1`, or a `val/...` key) over seeds is
chosen, and only its runs are started again with `evaluate_test=True`, which reads the test split
once (a finished run trains no more). The table shows METRIC for every cell and its test
counterpart (`test_top1`, `test/...`) for the chosen cell only.

With W&B on (--config.wandb.project=P) the runs are grouped by the sweep's name.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import json
import os
import queue
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from typing import NamedTuple

from absl import app, flags

from jax_supcon import cli

SHARED_PREFIXES = ("data.", "wandb.")  # grid keys the second stage gets too
IN_MEMORY_DATA = ("digits", "mnist5k", "synthetic")  # the sources with a raw-pixel baseline
OPERATIONAL_DATA_KEYS = ("prefetch_to_device", "verify_files", "skip_corrupt", "tfds_data_dir", "shuffle_buffer")
STAGE_FILE = "summary.json"


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


def load_config(spec: str, overrides: Sequence[str]):
    """The config `jax-supcon --config=SPEC OVERRIDES...` would run, parsed the same way (absl and
    ml_collections: unknown keys and wrong types are errors) but without running anything."""
    from ml_collections import config_flags

    argv = ["jax-supcon-sweep", f"--config={spec}", *overrides]
    values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, flag_values=values, lock_config=True, sys_argv=argv)
    try:
        values(argv)
        config = values["config"].value
        config.get("job")
    except (flags.Error, KeyError, AttributeError, OSError) as error:
        if overrides and not isinstance(error, OSError):
            plain = load_config(spec, [])
            for override in overrides:
                key = override.removeprefix("--config.").partition("=")[0]
                if not _has_key(plain, key):
                    raise ValueError(f"{override}: unknown config key {key!r}") from None
        raise ValueError(cli.flag_error_line(error)) from None
    return config


def _has_key(config, key: str) -> bool:
    node = config
    for part in key.split("."):
        if not hasattr(node, "keys") or part not in node:
            return False
        node = node[part]
    return True


def check_stage(cell: Cell, stage: Stage):
    """The stage's config, validated like the job would at its start, with the checks of its data
    a training job makes before it builds anything (the batch against the training split left by
    label_fraction or train_classes, the run's length, class balance; files are listed, not
    decoded): a one-line ValueError that names the cell."""
    from jax_supcon.config import validate_config

    try:
        config = load_config(stage.config, stage.overrides)
        validate_config(config)
        if config.job != "embed":
            from jax_supcon.train import inputs

            listed = config.copy_and_resolve_references()
            listed.data.verify_files = False
            inputs.training_splits(listed)
    except (ValueError, FileNotFoundError) as error:
        raise ValueError(f"cell {cell.name} {stage.label} ({stage.config}): {error}") from None
    return config


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
    if axis.key != "config" and not _has_key(config, axis.key):
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
    group = options.name if _has_key(base, "wandb") else None
    for cell in cells:
        job = load_config(cell.config, [*options.overrides, *_overrides(cell.assignments)]).job
        for seed in range(options.seeds):
            cell_stages = stages(
                cell,
                seed,
                options.workdir,
                job=job,
                overrides=options.overrides,
                then=options.then,
                then_overrides=options.then_overrides,
                group=group,
            )
            if seed == 0:
                checked = [check_stage(cell, stage) for stage in cell_stages]
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


class Outcome(NamedTuple):
    summary: dict | None  # the last stage's summary.json; None: the run did not finish
    seconds: float | None  # both stages' training time
    failure: dict | None  # {"seed", "stage", "error", "log"}


def _failure_line(log: str, code: int) -> str:
    """Why the stage's last attempt failed: its last `jax-supcon...` line (the one-line error or
    stop), else its last line, with the exit status."""
    try:
        with open(log, errors="replace") as f:
            lines = [line.strip() for line in f if line.strip()]
    except OSError:
        lines = []
    starts = [i for i, line in enumerate(lines) if line.startswith("$ ")]
    attempt = lines[starts[-1] + 1 :] if starts else lines  # this attempt's output only
    said = [line for line in attempt if line.startswith("jax-supcon")]
    status = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
    return f"{(said or attempt or ['no output'])[-1][:400]} ({status})"


def _read_summary(workdir: str) -> dict | None:
    path = os.path.join(workdir, STAGE_FILE)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def command_record(stage: Stage) -> dict:
    """What a stage's result depends on, as the sweep ran it: the config file (absolute) and the
    overrides (W&B's left out: they may change)."""
    file, sep, arg = stage.config.partition(":")
    return {
        "config": os.path.abspath(file) + sep + arg,
        "overrides": [o for o in stage.overrides if not o.startswith("--config.wandb.")],
    }


def _record_path(stage: Stage) -> str:
    return f"{stage.workdir}.command.json"


def check_reusable(stage: Stage) -> None:
    """A finished stage counts only if this sweep's command for it is the one that ran it."""
    path = _record_path(stage)
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


class Runner:
    """Runs stages as `jax-supcon` processes; a stop request (SIGTERM, Ctrl-C) is passed on to
    them (they save a checkpoint and exit) and no new stage starts."""

    def __init__(self, parallel: int, gpus_per_cell: int):
        self.stopping = threading.Event()
        self._processes: set[subprocess.Popen] = set()
        self._lock = threading.Lock()
        self._slots: queue.Queue[int] = queue.Queue()
        for slot in range(parallel):
            self._slots.put(slot)
        self._gpus = gpus_per_cell
        self._parallel = parallel

    def stop(self, signum=None, frame=None) -> None:
        self.stopping.set()
        with self._lock:
            for process in self._processes:
                process.send_signal(signal.SIGTERM)

    def environment(self, slot: int) -> dict[str, str]:
        """Slot `slot`'s GPUs (of $CUDA_VISIBLE_DEVICES where set); stages sharing the GPUs do not
        each pre-allocate most of their memory."""
        env = dict(os.environ)
        if self._gpus:
            visible = [d for d in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
            ids = range(slot * self._gpus, (slot + 1) * self._gpus)
            env["CUDA_VISIBLE_DEVICES"] = ",".join(visible[i] if i < len(visible) else str(i) for i in ids)
        elif self._parallel > 1:
            env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
        return env

    def run_stage(self, stage: Stage, slot: int, extra: Sequence[str] = ()) -> int:
        """`jax-supcon` on the stage (`extra` overrides after its own), its output appended to
        `WORKDIR.log`; the exit code."""
        command = [
            sys.executable,
            "-m",
            "jax_supcon.main",
            f"--config={stage.config}",
            f"--workdir={stage.workdir}",
            *stage.overrides,
            *extra,
        ]
        with open(f"{stage.workdir}.log", "a") as log:
            log.write(f"$ {shlex.join(command)}\n")
            log.flush()
            with self._lock:
                if self.stopping.is_set():
                    return 0
                process = subprocess.Popen(
                    command,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=self.environment(slot),
                    start_new_session=True,  # Ctrl-C reaches the sweep, which asks the stages to stop (SIGTERM)
                )
                self._processes.add(process)
            code = process.wait()
            with self._lock:
                self._processes.discard(process)
        return code

    def run(self, seed: int, cell_stages: list[Stage]) -> Outcome:
        """The stages of one (cell, seed), the finished ones skipped. Whatever goes wrong is this
        run's failure, never the sweep's."""
        slot = self._slots.get()
        stage = cell_stages[0]
        try:
            seconds = 0.0
            summary = None
            for stage in cell_stages:
                summary = _read_summary(stage.workdir)
                if summary is not None:
                    check_reusable(stage)
                else:
                    if self.stopping.is_set():
                        return Outcome(None, None, None)
                    os.makedirs(os.path.dirname(stage.workdir), exist_ok=True)
                    with open(_record_path(stage), "w") as f:  # what the stage's result will depend on
                        json.dump(command_record(stage), f, indent=1)
                    code = self.run_stage(stage, slot)
                    summary = _read_summary(stage.workdir)
                    if summary is None:
                        if code == 0:  # stopped (SIGTERM) with a checkpoint: resumed by the next call
                            return Outcome(None, None, None)
                        return Outcome(None, None, _failure(seed, stage, _failure_line(f"{stage.workdir}.log", code)))
                if summary.get("collapsed_at_step") is not None:  # finished with stop_on_collapse=False
                    collapsed = f"the projections collapsed at step {summary['collapsed_at_step']}; not a result"
                    return Outcome(None, None, _failure(seed, stage, collapsed))
                seconds += float(summary.get("train_seconds") or 0.0)
            return Outcome(summary, seconds, None)
        except Exception as error:  # noqa: BLE001 (a damaged workdir, a full disk: reported with the run)
            return Outcome(None, None, _failure(seed, stage, f"{type(error).__name__}: {error}"))
        finally:
            self._slots.put(slot)

    def read_test(self, seed: int, stage: Stage, metric: str) -> Outcome:
        """The test figures of a finished run tuned without them: the same command with
        `evaluate_test=True` (the job trains no more, it reads the test split once)."""
        slot = self._slots.get()
        try:
            summary = _read_summary(stage.workdir)
            if summary is None or metric not in summary:
                code = self.run_stage(stage, slot, extra=(READ_TEST,))
                summary = _read_summary(stage.workdir)
                if summary is None or metric not in summary:
                    reason = f"no {metric} after the test evaluation: {_failure_line(f'{stage.workdir}.log', code)}"
                    return Outcome(None, None, _failure(seed, stage, reason))
            return Outcome(summary, None, None)
        finally:
            self._slots.put(slot)


def _failure(seed: int, stage: Stage, error: str) -> dict:
    return {"seed": seed, "stage": stage.label, "error": error, "log": f"{stage.workdir}.log"}


def baselines(cells: list[Cell], planned, options) -> list[dict]:
    """The raw-pixel 3-NN baseline per distinct data setting of the cells (per seed: label noise
    is drawn per seed), run on the CPU of this process."""
    import jax

    from jax_supcon.evaluate.baselines import raw_pixel_metrics
    from jax_supcon.report import sweep as report

    jax.config.update("jax_platforms", "cpu")  # the accelerators belong to the runs
    groups: dict[str, dict] = {}
    for cell, seed, cell_stages in planned:
        config = load_config(cell_stages[0].config, cell_stages[0].overrides)
        if config.data.name not in IN_MEMORY_DATA:  # pixel by pixel only where the data is small
            continue
        data = {k: v for k, v in config.data.to_dict().items() if k not in OPERATIONAL_DATA_KEYS}
        data_key = json.dumps(data, sort_keys=True, default=str)
        described = [f"{k}={v}" for k, v in cell.assignments if k.startswith("data.")]
        group = groups.setdefault(data_key, {"label": ", ".join(described), "configs": {}})
        if config.data.label_noise or not group["configs"]:  # only the noise is drawn per seed
            group["configs"].setdefault(seed, config)
    rows = []
    for group in groups.values():
        try:
            summaries = [raw_pixel_metrics(config) for config in group["configs"].values()]
        except Exception:  # noqa: BLE001 (data its runs cannot use either: reported as their failure)
            continue
        if any(s is None for s in summaries):
            continue
        name = f"raw pixels ({group['label']})" if group["label"] else "raw pixels"
        rows.append({"name": name, "seeds": sorted(group["configs"]), "summaries": summaries})
    return report.aggregate(rows, options.metrics)


def run_sweep(options) -> tuple[dict, list[str]]:
    """Plan (checked, nothing written), run every stage, aggregate; returns the record and the
    written paths."""
    from jax_supcon.report import sweep as report

    cells, planned = plan(options)
    os.makedirs(options.workdir, exist_ok=True)
    started = time.perf_counter()
    runner = Runner(options.parallel, options.gpus_per_cell)
    previous = {sig: signal.signal(sig, runner.stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        with concurrent.futures.ThreadPoolExecutor(options.parallel) as pool:
            futures = [pool.submit(runner.run, seed, cell_stages) for _, seed, cell_stages in planned]
            outcomes = [future.result() for future in futures]
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    by_cell = {cell.name: {"summaries": [], "seconds": [], "failures": [], "workdirs": []} for cell in cells}
    for (cell, _, cell_stages), outcome in zip(planned, outcomes, strict=True):
        entry = by_cell[cell.name]
        entry["summaries"].append(outcome.summary)
        entry["seconds"].append(outcome.seconds)
        entry["workdirs"].append(cell_stages[-1].workdir)
        if outcome.failure:
            entry["failures"].append(outcome.failure)
    selected = None
    if options.select:
        selected = _read_test_of_best(options, cells, planned, by_cell, runner)
        metrics = (options.select, test_counterpart(options.select), *options.metrics)
    else:
        summaries = (s for e in by_cell.values() for s in e["summaries"])
        metrics = tuple(options.metrics) or report.default_metrics(summaries)
    options = options._replace(metrics=list(metrics))
    rows = [
        {
            "name": cell.name,
            "overrides": dict(cell.assignments),
            "seeds": list(range(options.seeds)),
            **by_cell[cell.name],
        }
        for cell in cells
    ]
    record = {
        "name": options.name,
        "command": options.command,
        "config": options.config,
        "then": options.then,
        "seeds": options.seeds,
        "metrics": list(metrics),
        "note": "Each value is the last stage's at the end of its run (no checkpoint chosen on the test split)."
        + (
            f" Chosen on validation ({options.select}, data.validation_fraction): **{selected}**; only its runs "
            "read the test split."
            if options.select
            else ""
        ),
        "selected": selected,
        "cells": report.aggregate(rows, metrics),
        "baselines": baselines(cells, planned, options) if options.baselines else [],
        "stopped": runner.stopping.is_set(),
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    return record, report.write_outputs(options.workdir, record)


def _read_test_of_best(options, cells, planned, by_cell, runner: Runner) -> str | None:
    """The cell with the best mean of `options.select` over its seeds (None: no cell finished);
    its finished runs are started again to read the test split, their summaries replaced."""
    from jax_supcon.report import sweep as report

    rows = [{"name": cell.name, "summaries": by_cell[cell.name]["summaries"]} for cell in cells]
    best = report.best_cells(report.aggregate(rows, [options.select]), [options.select])[options.select]
    if best is None or runner.stopping.is_set():
        return best
    wanted = test_counterpart(options.select)
    chosen = [(i, seed, stages) for i, (cell, seed, stages) in enumerate(planned) if cell.name == best]
    entry = by_cell[best]
    with concurrent.futures.ThreadPoolExecutor(options.parallel) as pool:
        futures = {
            i: pool.submit(runner.read_test, seed, stages[-1], wanted)
            for i, (_, seed, stages) in enumerate(chosen)
            if entry["summaries"][i] is not None
        }
        for i, future in futures.items():
            outcome = future.result()
            entry["summaries"][i] = outcome.summary
            if outcome.failure:
                entry["failures"].append(outcome.failure)
    return best


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


def _define_flags() -> None:
    flags.DEFINE_string("config", None, "The config file (FILE[:ARG]) every cell starts from.")
    flags.DEFINE_string("workdir", None, "Directory of the sweep: one sub-directory per cell, and the results.")
    flags.DEFINE_multi_string("grid", [], "KEY=V1,V2,... (or KEY=[JSON list]); the key `config` varies the file.")
    flags.DEFINE_integer("seeds", 1, "Run every cell with seeds 0..N-1.")
    flags.DEFINE_string("then", None, "A second stage (FILE[:ARG]) run on each pretrain cell's workdir.")
    flags.DEFINE_list("metrics", [], "Summary keys to aggregate (default: test_top1, else the validation metrics).")
    flags.DEFINE_string(
        "select", "", "A validation metric (val_top1, val/...): choose the best cell on it, then read its test split."
    )
    flags.DEFINE_integer("parallel", 1, "Runs at a time.")
    flags.DEFINE_integer("gpus_per_cell", 0, "With --parallel: GPUs each run sees (CUDA_VISIBLE_DEVICES); 0: all.")
    flags.DEFINE_string("name", None, "The sweep's name (W&B group); default: the workdir's name.")
    flags.DEFINE_bool("baselines", True, "Add the raw-pixel 3-NN baselines of each data setting (in-memory data).")
    flags.mark_flags_as_required(["config", "workdir"])


_PASSED_ON: dict[str, list[str]] = {"config": [], "then": []}


def parse_flags(argv: list[str]) -> list[str]:
    """absl's parsing for the sweep's own flags; `--config.KEY=VALUE` and `--then.KEY=VALUE` are
    kept aside for the stages (checked when the stages' configs are loaded)."""
    kept = [argv[0]]
    for arg in argv[1:]:
        for prefix in ("config", "then"):
            if arg.startswith(f"--{prefix}."):
                _PASSED_ON[prefix].append("--config." + arg.removeprefix(f"--{prefix}."))
                break
        else:
            kept.append(arg)
    try:
        return flags.FLAGS(kept)
    except flags.Error as error:
        print(f"jax-supcon-sweep: error: {cli.flag_error_line(error)}", file=sys.stderr)
        sys.exit(2)


def options_from_flags(argv: Sequence[str]) -> Options:
    values = flags.FLAGS
    return Options(
        config=values.config,
        workdir=values.workdir,
        grid=list(values.grid),
        seeds=values.seeds,
        then=values.then,
        metrics=list(values.metrics),
        parallel=values.parallel,
        gpus_per_cell=values.gpus_per_cell,
        name=values.name or os.path.basename(os.path.normpath(values.workdir)),
        baselines=values.baselines,
        overrides=list(_PASSED_ON["config"]),
        then_overrides=list(_PASSED_ON["then"]),
        command=shlex.join(["jax-supcon-sweep", *argv]),
        select=values.select,
    )


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    with cli.user_errors("jax-supcon-sweep"):
        options = options_from_flags(sys.argv[1:])
        record, paths = run_sweep(options)
    with open(paths[1]) as table:
        print(table.read())
    print("written: " + ", ".join(paths))
    if record["stopped"]:
        print("jax-supcon-sweep: stopped; the same command resumes the unfinished runs", file=sys.stderr)
    failed = sum(len(cell["failures"]) for cell in record["cells"])
    if failed:
        print(f"jax-supcon-sweep: {failed} run(s) failed; see sweep.md", file=sys.stderr)
        sys.exit(1)


DESCRIPTION = f"""jax-supcon-sweep: a grid of jax-supcon runs over seeds, aggregated into a table and a chart.

{__doc__.split(chr(10), 2)[2].strip()}
"""


def run() -> None:
    """Console-script entry point (`jax-supcon-sweep`)."""
    _define_flags()
    cli.start(main, description=DESCRIPTION, module_name=__name__, flags_parser=parse_flags)
