"""What every job shares: the train state, sharded init/restore, metric logging, the step loop."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from clu import metric_writers
from jax.sharding import Mesh

from jax_supcon import parallel
from jax_supcon.checkpoint import Checkpointer
from jax_supcon.config import resolve_steps, resolve_view, validate_config
from jax_supcon.data import pipeline, sources
from jax_supcon.data.sources import Source
from jax_supcon.progress import format_duration, progress

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
PARAMETERS_FILE = "parameters.txt"


@flax.struct.dataclass
class TrainState:
    """Everything a step reads and writes; a plain pytree, so orbax saves it whole."""

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    rng: jax.Array  # raw uint32 key; the step's key is fold_in(rng, step)
    ema: Any = flax.struct.field(default_factory=dict)  # {"params", "batch_stats"} averages; {} when off

    def variables(self, use_ema: bool = False) -> dict[str, Any]:
        """`{"params", "batch_stats"}` for `model.apply`: the trained ones or their EMA."""
        if use_ema:
            if not self.ema:
                raise ValueError("the EMA weights were asked for, but this run keeps none (set ema_decay > 0)")
            return dict(self.ema)
        return {"params": self.params, "batch_stats": self.batch_stats}


def init_state_fn(
    init_variables: Callable[[jax.Array], Any], tx: optax.GradientTransformation, seed: int, *, ema: bool = False
) -> Callable[[], TrainState]:
    """A function of no arguments building the initial state (to eval_shape and jit); with `ema`,
    the state also carries an exponential moving average of the variables, starting at them."""

    def init() -> TrainState:
        init_rng, state_rng = jax.random.split(jax.random.PRNGKey(seed))
        variables = init_variables(init_rng)
        params = variables["params"]
        batch_stats = variables.get("batch_stats", {})
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            batch_stats=batch_stats,
            opt_state=tx.init(params),
            rng=state_rng,
            ema={"params": params, "batch_stats": batch_stats} if ema else {},
        )

    return init


def ema_rate(decay: float, step: jax.Array) -> jax.Array:
    """The EMA decay at `step`: `min(decay, (1 + step) / (10 + step))`, TensorFlow's
    ExponentialMovingAverage warm-up, so short runs are not dominated by the initial weights."""
    step = step.astype(jnp.float32)
    return jnp.minimum(decay, (1.0 + step) / (10.0 + step))


def apply_gradients(
    state: TrainState,
    grads: Any,
    tx: optax.GradientTransformation,
    *,
    batch_stats: Any = None,
    ema_decay: float = 0.0,
) -> TrainState:
    """The optax update of `state` by `grads`, the step advanced, BatchNorm statistics replaced by
    `batch_stats` (when given) and the EMA, if the state keeps one, moved towards the new variables."""
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    new = state.replace(
        step=state.step + 1,
        params=optax.apply_updates(state.params, updates),
        batch_stats=state.batch_stats if batch_stats is None else batch_stats,
        opt_state=opt_state,
    )
    if state.ema:
        rate = ema_rate(ema_decay, state.step)
        new = new.replace(ema=optax.incremental_update(new.variables(), state.ema, 1.0 - rate))
    return new


def abstract_state(init: Callable[[], TrainState], mesh: Mesh) -> TrainState:
    """Shapes, dtypes and (replicated) shardings of the state, without allocating it."""
    sharding = parallel.replicated(mesh)
    return jax.tree.map(
        lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding), jax.eval_shape(init)
    )


def init_state(init: Callable[[], TrainState], target: TrainState) -> TrainState:
    """A fresh state, initialised on the devices straight into `target`'s shardings."""
    return jax.jit(init, out_shardings=state_shardings(target))()


def restore_or_init(init: Callable[[], TrainState], target: TrainState, checkpointer: Checkpointer) -> TrainState:
    """Latest checkpoint in the workdir if there is one (resume), else a fresh sharded init;
    `target` is `abstract_state(init, mesh)`."""
    if checkpointer.latest_step() is not None:
        return checkpointer.restore(target)
    return init_state(init, target)


def jit_train_step(step_fn: Callable, shardings: Any, mesh: Mesh, *, replicated_args: int = 0) -> Callable:
    """`step_fn(state, batch, *extra)` compiled once: state replicated and donated, batch sharded
    over the data axis, `replicated_args` extra inputs (frozen variables) replicated."""
    replicated = parallel.replicated(mesh)
    return jax.jit(
        step_fn,
        in_shardings=(shardings, parallel.data_sharding(mesh)) + (replicated,) * replicated_args,
        out_shardings=(shardings, replicated),
        donate_argnums=0,
    )


class TrainingData(NamedTuple):
    mesh: Mesh
    train: Source
    test: Source
    total_steps: int
    warmup_steps: int


def load_training_data(config: ml_collections.ConfigDict, mesh: Mesh | None = None) -> TrainingData:
    """What every training job checks and loads before it builds a model or touches its workdir:
    the config, batch divisibility over the mesh, both splits, the run's length, class balance."""
    validate_config(config)
    mesh = mesh or parallel.create_mesh()
    parallel.check_batch_size(config.batch_size, mesh)
    parallel.check_batch_size(config.eval_batch_size, mesh, "eval_batch_size")
    train = sources.load_source(config.data, "train")
    test = sources.load_source(config.data, "test")
    total_steps, warmup_steps = resolve_steps(config, train.num_examples)
    if config.data.samples_per_class:
        pipeline.check_class_balanced(train, config.batch_size, config.data.samples_per_class)
    return TrainingData(mesh, train, test, total_steps, warmup_steps)


def sum_over_split(count: Callable[[dict], jax.Array], source: Source, mesh: Mesh, batch_size: int) -> np.ndarray:
    """Sum `count(global_batch)` (a jitted per-batch tally that honours `mask`) over one padded
    evaluation pass of `source`; the sum stays on the devices and is fetched once at the end."""
    total = None
    batches = pipeline.eval_batches(
        source, global_batch=batch_size, process_index=jax.process_index(), process_count=jax.process_count()
    )
    for batch in progress(batches, total=-(-source.num_examples // batch_size), desc=f"evaluate {source.split}"):
        value = count(parallel.to_global(batch, mesh))
        total = value if total is None else total + value
    return np.asarray(jax.device_get(total))


def top_k_hits(logits: jax.Array, labels: jax.Array, mask: jax.Array) -> jax.Array:
    """[top-1 hits, top-5 hits] among the unpadded (`mask` = 1) rows of a batch of logits."""
    top = jax.lax.top_k(logits, min(5, logits.shape[-1]))[1]
    hits = top == labels[:, None]
    return jnp.stack([jnp.sum(hits[:, 0] * mask), jnp.sum(jnp.any(hits, axis=-1) * mask)])


def parameter_overview(params: Any) -> str:
    """Parameter count per top-level module and in all, e.g. `11.17M parameters (encoder 11.17M, head 0.33M)`."""
    from clu.parameter_overview import count_parameters

    counts = {name: count_parameters(sub) for name, sub in params.items()}
    parts = ", ".join(f"{name} {_millions(count)}" for name, count in counts.items())
    return f"{_millions(sum(counts.values()))} parameters ({parts})"


def _millions(count: int) -> str:
    return f"{count / 1e6:.2f}M" if count >= 10_000 else f"{count:,}"


def write_parameter_overview(workdir: str, job: str, params: Any) -> None:
    """Print the parameter counts at the start of a run and write clu's full per-array table to
    `workdir/parameters.txt` (main process only)."""
    if not is_main_process():
        return
    from clu import parameter_overview as clu_overview

    print(f"[{job}] {parameter_overview(params)}; table in {os.path.join(workdir, PARAMETERS_FILE)}", flush=True)
    with open(os.path.join(workdir, PARAMETERS_FILE), "w") as f:
        f.write(clu_overview.get_parameter_overview(params, include_stats=False) + "\n")


def state_shardings(state: TrainState) -> Any:
    return jax.tree.map(lambda leaf: leaf.sharding, state)


def is_main_process() -> bool:
    return jax.process_index() == 0


def write_json(path: str, obj: Any) -> None:
    """Write JSON atomically (temp file + rename), from the main process only."""
    if not is_main_process():
        return
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


def load_config(workdir: str) -> ml_collections.ConfigDict:
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: is {workdir!r} the workdir of a finished or running job?")
    with open(path) as f:
        return ml_collections.ConfigDict(json.load(f))


def _as_json(config: ml_collections.ConfigDict) -> dict:
    """Plain JSON values: comparable whatever the ConfigDict's lock state or placeholders."""
    return json.loads(config.to_json_best_effort())


# What a resumed run must share with the run in its workdir. Durations, logging, evaluation and
# plotting settings may change between restarts (for example to train longer).
RESUME_FIXED_KEYS = (
    "job",
    "model",
    "seed",
    "batch_size",
    "data",
    "loss",
    "augment",
    "optimizer",
    "pretrained_workdir",
    "checkpoint",
    "linear_augment",
    "label_smoothing",
    "embed_split",
    "ema_decay",
    "online_probe",
    "pretrained_ema",
    "precompute_features",
)


# Data settings that change how the run reads its input, not what it trains on.
OPERATIONAL_DATA_KEYS = ("prefetch_to_device", "verify_files", "skip_corrupt", "tfds_data_dir")


def _resume_view(config: dict, key: str):
    """What must match between a run and its resumption, for one top-level key: the augmentation
    as resolved per view (a field set to its recipe's value is no change), data without operational keys."""
    value = config.get(key)
    if key == "augment" and isinstance(value, dict) and "recipe" in value:
        augment = ml_collections.ConfigDict(value)
        views = max(2, int((config.get("loss") or {}).get("num_views", 2)))
        return [resolve_view(augment, v).to_dict() for v in range(views)]
    if key == "data" and isinstance(value, dict):
        return {k: v for k, v in value.items() if k not in OPERATIONAL_DATA_KEYS}
    return value


def _first_difference(key: str, saved, current) -> str:
    """`key.sub (old vs new)` naming the first differing field, not the whole block."""
    if isinstance(saved, dict) and isinstance(current, dict):
        for sub in sorted(set(saved) | set(current)):
            if saved.get(sub) != current.get(sub):
                return _first_difference(f"{key}.{sub}", saved.get(sub), current.get(sub))
    if isinstance(saved, list) and isinstance(current, list) and len(saved) == len(current):
        for index, (old, new) in enumerate(zip(saved, current, strict=True)):
            if old != new:
                return _first_difference(f"{key}[view {index + 1}]", old, new)
    return f"{key} ({json.dumps(saved)} vs {json.dumps(current)})"


def prepare_workdir(workdir: str, config: ml_collections.ConfigDict) -> None:
    """Create the workdir and record the config; refuse to resume a run with other settings into it."""
    path = os.path.join(workdir, CONFIG_FILE)
    current = _as_json(config)
    if os.path.exists(path):
        saved = _as_json(load_config(workdir))
        for key in RESUME_FIXED_KEYS:
            old, new = _resume_view(saved, key), _resume_view(current, key)
            if old != new:
                raise ValueError(
                    f"workdir {workdir!r} holds a run with a different {_first_difference(key, old, new)}; "
                    "pick a new --workdir to start another run"
                )
    if is_main_process():
        os.makedirs(workdir, exist_ok=True)
    write_json(path, current)


class MetricLogger:
    """TensorBoard events (clu), `metrics.jsonl` (one JSON object per logged step) and one
    console line per logged step, all from the main process only."""

    def __init__(self, workdir: str, job: str):
        self._main = is_main_process()
        self._writer = metric_writers.SummaryWriter(workdir) if self._main else None
        self._jsonl = os.path.join(workdir, METRICS_FILE)
        self._job = job

    def write(self, step: int, metrics: dict[str, float], *, total_steps: int | None = None) -> None:
        """Log `metrics` at `step`; with `total_steps` the console line also shows progress and ETA."""
        if not self._main:
            return
        self._writer.write_scalars(step, metrics)
        with open(self._jsonl, "a") as f:
            f.write(json.dumps({"step": step, **metrics}) + "\n")
        keys = sorted((k for k in metrics if k != "steps_per_s"), key=lambda k: k != "loss")  # loss first
        shown = " ".join(f"{k}={metrics[k]:.4g}" for k in keys)
        where = f"step {step}"
        if total_steps:
            rate = metrics.get("steps_per_s", 0.0)
            left = format_duration((total_steps - step) / rate) if rate > 0 else "?"
            where = f"step {step}/{total_steps} ({rate:.3g} steps/s, ETA {left})"
        print(f"[{self._job}] {where}: {shown}", flush=True)

    def last_record(self) -> dict[str, float]:
        """The last logged training metrics (of an earlier run in this workdir), without `step`."""
        training = [r for r in self.records() if "loss" in r]
        return {k: v for k, v in training[-1].items() if k != "step"} if training else {}

    def drop_after(self, step: int) -> None:
        """Forget records logged after `step`: a run killed between a log and its checkpoint
        resumes at `step` and logs those steps again."""
        records = self.records()
        if not self._main or all(r["step"] <= step for r in records):
            return
        tmp = f"{self._jsonl}.tmp"
        with open(tmp, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in records if r["step"] <= step)
        os.replace(tmp, self._jsonl)

    def records(self) -> list[dict]:
        """Every logged record of this workdir (earlier runs included)."""
        return self.read_records(os.path.dirname(self._jsonl))

    @staticmethod
    def read_records(workdir: str) -> list[dict]:
        path = os.path.join(workdir, METRICS_FILE)
        if not os.path.exists(path):
            return []
        with open(path) as f:
            return [json.loads(line) for line in f if line.strip()]

    def close(self) -> None:
        if self._writer is not None:
            self._writer.flush()
            self._writer.close()


def training_batches(
    source: Source,
    config: ml_collections.ConfigDict,
    state: TrainState,
    mesh: Mesh,
    *,
    views: int = 1,
    random_crop: bool = True,
) -> Iterator[dict[str, jax.Array]]:
    """This process's share of the training stream, resumed at the state's step, as global arrays
    prefetched to the devices. Images of varying size get `views` random crops on the host
    (or the evaluation view with `random_crop=False`); see `pipeline.train_batches`."""
    host_views = pipeline.host_views_for(config.augment, views, random_crop)
    batches = pipeline.train_batches(
        source,
        global_batch=config.batch_size,
        seed=config.seed,
        start_step=int(jax.device_get(state.step)),
        process_index=jax.process_index(),
        process_count=jax.process_count(),
        shuffle_buffer=config.data.shuffle_buffer,
        samples_per_class=config.data.samples_per_class,
        host_views=host_views,
    )
    return parallel.prefetch_to_device(batches, mesh, config.data.prefetch_to_device)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the run stopped and kept its last good checkpoint."""


class Preempted(Exception):  # noqa: N818 (an outcome, not an error: the CLI exits 0)
    """SIGTERM arrived; the run saved a checkpoint at the step it had reached and stopped."""


class _StopOnSigterm:
    """Turns SIGTERM into a flag the step loop reads (single process), or asks JAX's preemption
    sync point, which makes every process stop at the same step (multi-process)."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        import signal
        import threading

        if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum, frame):
        self.requested = True

    def should_stop(self, step: int) -> bool:
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            return multihost_utils.reached_preemption_sync_point(step)
        return self.requested

    def __exit__(self, *exc):
        if self._previous is not None:
            import signal

            signal.signal(signal.SIGTERM, self._previous)


def _check_finite(pending: list[tuple[int, dict]], checkpointer: Checkpointer) -> list[dict]:
    """Fetch the pending step metrics; a non-finite loss stops the run naming its step."""
    fetched = jax.device_get([metrics for _, metrics in pending])
    for (step, _), metrics in zip(pending, fetched, strict=True):
        if not np.isfinite(metrics["loss"]):
            checkpointer.wait()
            raise TrainingDiverged(
                f"loss is {float(metrics['loss'])} at step {step}; stopped. The last good checkpoint is step "
                f"{checkpointer.latest_step()} (lower the learning rate or check the data, then resume from it)"
            )
    return fetched


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
) -> tuple[TrainState, dict[str, float]]:
    """Run from `state.step` to `total_steps`: log every `log_every_steps`, run `evaluate` every
    `eval_every_steps` and at the end, checkpoint every `checkpoint_every_steps` and at the end
    (with that step's evaluation metrics, for the best-checkpoint policy). The host waits for the
    devices on log, evaluation and checkpoint steps only. A NaN or infinite loss raises
    `TrainingDiverged` before any checkpoint of a diverged state is written; SIGTERM saves a
    checkpoint at the step reached and raises `Preempted`."""
    start = int(jax.device_get(state.step))
    logger.drop_after(start)
    pending: list[tuple[int, dict]] = []
    last = logger.last_record()
    tick, tick_step = time.perf_counter(), start
    with _StopOnSigterm() as sigterm:
        for step in range(start + 1, total_steps + 1):
            state, metrics = train_step(state, next(batches))
            pending.append((step, metrics))
            if step % config.log_every_steps == 0 or step == total_steps:
                fetched = _check_finite(pending, checkpointer)
                last = {k: float(np.mean([m[k] for m in fetched])) for k in fetched[0]}
                now = time.perf_counter()
                last["steps_per_s"] = (step - tick_step) / (now - tick)
                tick, tick_step = now, step
                logger.write(step, last, total_steps=total_steps)
                pending = []
            evaluated = None
            if evaluate is not None and (step % config.eval_every_steps == 0 or step == total_steps):
                evaluated = evaluate(state)
                logger.write(step, evaluated)
            stop = sigterm.should_stop(step)
            if step % config.checkpoint_every_steps == 0 or step == total_steps or stop:
                _check_finite(pending, checkpointer)
                checkpointer.save(step, state, metrics=evaluated)
            if stop and step < total_steps:
                checkpointer.wait()
                raise Preempted(f"SIGTERM: saved a checkpoint at step {step} of {total_steps}; start again to resume")
    return state, last


def finish_run(workdir: str, config: ml_collections.ConfigDict, summary: dict, records: list[dict], plots: list[str]):
    """Training curves, `summary.json` and `report.md`: the last thing every job does."""
    from jax_supcon import report, visualize

    if is_main_process():
        curves = visualize.training_curves(
            records, os.path.join(workdir, visualize.PLOTS_DIR, "curves.png"), title=f"{config.job}: {workdir}"
        )
        plots = ([curves] if curves else []) + plots
        summary = summary | {"report": os.path.join(workdir, report.REPORT_FILE)}
        report.write_report(workdir, config, summary, plots)
    write_json(os.path.join(workdir, SUMMARY_FILE), summary)
    return summary
