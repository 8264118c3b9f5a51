"""The step loop every training job runs: logging, periodic evaluation and checkpoints, and the
rules for stopping early (a diverged state is never saved; SIGTERM saves and stops).

    with training_run(workdir, "pretrain", config, checkpointer) as run:
        state, last = run.run_steps(state, train_step, batches, total_steps, evaluate)
        ...  # final evaluation, logged with run.logger
    summary = run_summary("pretrain", total_steps, last, started, mesh) | {...}
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import NamedTuple

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh

from jax_supcon.checkpoint import Checkpointer
from jax_supcon.report import tracking
from jax_supcon.train import health, preemption
from jax_supcon.train.preemption import Preempted
from jax_supcon.train.state import FINITE, TrainState
from jax_supcon.train.workdir import MetricLogger


class TrainingDiverged(RuntimeError):
    """The loss or the state became NaN or infinite; the run stopped and kept its last good checkpoint."""


class TrainingCollapsed(TrainingDiverged):
    """The projections collapsed to one vector (`health.CollapseWatch`); the run stopped like a
    diverged one, its checkpoints kept."""


def _kept_checkpoints(checkpointer: Checkpointer, collapse_since: int | None = None) -> str:
    """What a stopped run leaves to resume from: after a divergence the latest checkpoint is good;
    after a collapse (`collapse_since`: its first step) it may have been saved inside it."""
    checkpointer.wait()
    latest = checkpointer.latest_step()
    if collapse_since is None:
        return "No checkpoint was saved before it" if latest is None else f"The last good checkpoint is step {latest}"
    if latest is None:
        return "No checkpoint was saved"
    when = "after the collapse began" if latest >= collapse_since else "before the collapse"
    return f"The latest checkpoint is step {latest}, saved {when}"


def _should_stop(step: int) -> bool:
    """Whether to save and stop after `step`: SIGTERM arrived (single process), or every process
    reached JAX's preemption sync point (multi-process: they all stop at the same step)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        return multihost_utils.reached_preemption_sync_point(step)
    return preemption.requested()


def _check_finite(pending: list[tuple[int, dict]], checkpointer: Checkpointer) -> list[dict]:
    """Fetch the pending step metrics (without the `FINITE` flag); the first step whose loss or
    resulting state is not finite stops the run, naming it and the last good checkpoint."""
    fetched = jax.device_get([metrics for _, metrics in pending])
    for (step, _), metrics in zip(pending, fetched, strict=True):
        if not metrics[FINITE]:
            loss = float(metrics["loss"])
            what = f"loss is {loss}" if not np.isfinite(loss) else f"the parameters are not finite (loss {loss:.4g})"
            raise TrainingDiverged(
                f"{what} at step {step}; stopped. {_kept_checkpoints(checkpointer)} "
                "(check the data, or lower the learning rate in a new --workdir)"
            )
    return [{k: v for k, v in metrics.items() if k != FINITE} for metrics in fetched]


def _window_mean(values: list) -> float:
    """The mean over the steps of a log window that measured the figure (NaN: a step that did not,
    such as the effective ranks off log steps); NaN when none did."""
    values = np.asarray(values, np.float64)
    measured = values[~np.isnan(values)]
    return float(measured.mean()) if measured.size else float("nan")


def _watch_collapse(
    watch: health.CollapseWatch,
    steps: list[tuple[int, dict]],
    config: ml_collections.ConfigDict,
    checkpointer: Checkpointer,
    logger: MetricLogger,
) -> None:
    """Apply the collapse rule to the steps just fetched: stop the run (`TrainingCollapsed`), or
    with `stop_on_collapse=False` warn once and go on; the watch keeps what it found."""
    collapse = watch.update(steps)
    if collapse is None or watch.detected is not None:
        return
    watch.detected = collapse
    advice = health.collapse_advice(config)
    if config.get("stop_on_collapse", True):
        raise TrainingCollapsed(
            f"{collapse.describe()}; stopped. {_kept_checkpoints(checkpointer, collapse.since)} "
            f"({advice}, in a new --workdir; --config.stop_on_collapse=False only warns)"
        )
    logger.warn(f"{collapse.describe()}; training goes on (stop_on_collapse=False): {advice}")


def run_steps(
    *,
    config: ml_collections.ConfigDict,
    state: TrainState,
    train_step: Callable[[TrainState, dict], tuple[TrainState, dict]],
    batches: Iterator[dict[str, jax.Array]],
    total_steps: int,
    checkpointer: Checkpointer,
    logger: MetricLogger,
    evaluate: Callable[[TrainState], dict[str, float]] | None = None,
    collapse_watch: health.CollapseWatch | None = None,
) -> tuple[TrainState, dict[str, float]]:
    """Run from `state.step` to `total_steps`: log every `log_every_steps`, run `evaluate` every
    `eval_every_steps` and at the end, checkpoint every `checkpoint_every_steps` and at the end
    (with that step's evaluation metrics, for the best-checkpoint policy). The host waits for the
    devices on log, evaluation and checkpoint steps only. `train_step` comes from
    `state.jit_train_step`: a step whose loss or new state is NaN or infinite raises
    `TrainingDiverged` before any checkpoint of a diverged state is written; SIGTERM saves a
    checkpoint at the step reached and raises `Preempted` (and SIGTERM before the first step raises
    it at once: see `preemption`). With a `collapse_watch` (pretraining: its steps report the
    health figures), every step's figures are checked at log steps and a collapsed run stops with
    `TrainingCollapsed` (`config.stop_on_collapse`, default True) or warns once."""
    start = int(jax.device_get(state.step))
    single_process = jax.process_count() == 1
    if single_process:
        preemption.stop_if_requested(
            f"stopped before the first step of this start; the run is at step {start} of {total_steps}, "
            "nothing new to save; start again to go on"
        )
    logger.drop_after(start)
    pending: list[tuple[int, dict]] = []
    last = logger.last_record()
    tick, tick_step = time.perf_counter(), start
    with preemption.sigterm_requests_stop(enabled=single_process):
        for step in range(start + 1, total_steps + 1):
            state, metrics = train_step(state, next(batches))
            pending.append((step, metrics))
            if step % config.log_every_steps == 0 or step == total_steps:
                fetched = _check_finite(pending, checkpointer)
                last = {k: _window_mean([m[k] for m in fetched]) for k in fetched[0]}
                now = time.perf_counter()
                last["steps_per_s"] = (step - tick_step) / (now - tick)
                tick, tick_step = now, step
                logger.write(step, last, total_steps=total_steps)
                if collapse_watch is not None:
                    steps = [(done, metrics) for (done, _), metrics in zip(pending, fetched, strict=True)]
                    _watch_collapse(collapse_watch, steps, config, checkpointer, logger)
                pending = []
            evaluated = None
            if evaluate is not None and (step % config.eval_every_steps == 0 or step == total_steps):
                _check_finite(pending, checkpointer)
                evaluated = evaluate(state)
                logger.write(step, evaluated)
            stop = _should_stop(step)
            if step % config.checkpoint_every_steps == 0 or step == total_steps or stop:
                _check_finite(pending, checkpointer)
                checkpointer.save(step, state, metrics=evaluated)
            if stop:  # at the last step too: the job's final phase (maps, test evaluation) waits for the next start
                checkpointer.wait()
                raise Preempted(
                    f"SIGTERM: saved a checkpoint at step {step} of {total_steps}; start again to resume"
                    if step < total_steps
                    else f"SIGTERM: training finished and saved at step {total_steps}; the final evaluation, summary "
                    "and report are made when the same command runs again"
                )
    return state, last


class TrainingRun(NamedTuple):
    """A job's training in progress: its config, checkpointer and metric logger (see `training_run`)."""

    config: ml_collections.ConfigDict
    checkpointer: Checkpointer
    logger: MetricLogger

    def run_steps(
        self,
        state: TrainState,
        train_step: Callable[[TrainState, dict], tuple[TrainState, dict]],
        batches: Iterator[dict[str, jax.Array]],
        total_steps: int,
        evaluate: Callable[[TrainState], dict[str, float]] | None = None,
        collapse_watch: health.CollapseWatch | None = None,
    ) -> tuple[TrainState, dict[str, float]]:
        """`run_steps` with this run's config, checkpointer and logger."""
        return run_steps(
            config=self.config,
            state=state,
            train_step=train_step,
            batches=batches,
            total_steps=total_steps,
            checkpointer=self.checkpointer,
            logger=self.logger,
            evaluate=evaluate,
            collapse_watch=collapse_watch,
        )


@contextlib.contextmanager
def training_run(
    workdir: str, job: str, config: ml_collections.ConfigDict, checkpointer: Checkpointer
) -> Iterator[TrainingRun]:
    """A job's training: the metric logger is opened here, and however the run ends it is closed
    and the checkpointer's pending saves are written."""
    logger = None
    try:
        logger = MetricLogger(workdir, job, config)
        yield TrainingRun(config, checkpointer, logger)
    except Preempted:
        tracking.abandon(exit_code=0)  # stopped to be resumed: the W&B run goes on then
        raise
    except BaseException:
        tracking.abandon(exit_code=1)  # the W&B run (if any) ends as failed
        raise
    finally:
        checkpointer.close()
        if logger is not None:
            logger.close()


def run_summary(job: str, total_steps: int, last: dict[str, float], started: float, mesh: Mesh) -> dict:
    """The summary fields every training job reports (`started`: `time.perf_counter()` at the start)."""
    return {
        "job": job,
        "steps": total_steps,
        "final_loss": last.get("loss"),
        "train_seconds": time.perf_counter() - started,
        "devices": mesh.size,
    }
