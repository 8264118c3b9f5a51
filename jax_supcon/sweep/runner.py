"""Running a planned sweep: every stage as a `jax-supcon` process (sequentially or `parallel` at a
time, each with its own GPUs), a stop request passed on to them, failures reported per run; the
chosen cell's test figures read last (`--select`); the results aggregated with the raw-pixel
baselines into sweep.json, sweep.md and sweep.png."""

from __future__ import annotations

import concurrent.futures
import json
import os
import queue
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from typing import NamedTuple

from jax_supcon.config.files import load_config
from jax_supcon.sweep.plan import (
    READ_TEST,
    STAGE_FILE,
    Stage,
    check_reusable,
    command_record,
    plan,
    record_path,
    test_counterpart,
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
                    with open(record_path(stage), "w") as f:  # what the stage's result will depend on
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


def baselines(planned, metrics: Sequence[str]) -> list[dict]:
    """The raw-pixel 3-NN rows of the planned runs' data settings (`evaluate.baselines`), computed
    on the CPU of this process: the accelerators belong to the runs, and this process never
    initialises them (which would reserve most of their memory)."""
    import jax

    from jax_supcon.evaluate.baselines import raw_pixel_rows
    from jax_supcon.report import sweep as report

    jax.config.update("jax_platforms", "cpu")
    runs = [
        (cell.assignments, seed, load_config(cell_stages[0].config, cell_stages[0].overrides))
        for cell, seed, cell_stages in planned
    ]
    return report.aggregate(raw_pixel_rows(runs), metrics)


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
        "baselines": baselines(planned, options.metrics) if options.baselines else [],
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
