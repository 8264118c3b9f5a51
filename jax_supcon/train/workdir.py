"""A run's workdir: `config.json` and the rules for resuming into it, the metric log
(`metrics.jsonl`, TensorBoard events, console lines), the parameter overview, and the files
written at the end (`summary.json`, `report.md`, curves). Only the main process writes; the
lock that keeps one run per workdir is `train/lock.py`.

clu (the TensorBoard writer) loads when a logger is created, so tools that only read a workdir
(`load_config`, `MetricLogger.read_records`) stay light.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import ml_collections

from jax_supcon.data.recipes import resolve_view
from jax_supcon.parallel import is_main_process
from jax_supcon.report import tracking
from jax_supcon.report.progress import format_duration

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
PARAMETERS_FILE = "parameters.txt"

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
    """The config a run recorded in its workdir."""
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: is {workdir!r} the workdir of a finished or running job?")
    with open(path) as f:
        try:
            return ml_collections.ConfigDict(json.load(f))
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} is not a config written by jax-supcon ({error})") from None


def _as_json(config: ml_collections.ConfigDict) -> dict:
    """Plain JSON values: comparable whatever the ConfigDict's lock state or placeholders."""
    return json.loads(config.to_json_best_effort())


# Keys added to a config section after runs were recorded without them, and the value that
# means "as before" (the feature: off): an older run's config reads as if it had them.
ADDED_KEYS = {
    "model": {
        "momentum": 0.0,
        "init_from": "",
        "patch_size": 16,
        "pool": "cls",
        "drop_path": 0.0,
        "dropout": 0.0,
        "num_heads": 0,
        "scan": False,
        "pos_image_size": 0,
        "zero_init_residual": True,  # ResNets were built with zero-scale residual branches until 2026-12-07
    },
    "loss": {"queue_size": 0, "queue_views": "all"},
    "eval": {"evaluators": "auto"},
    "optimizer": {"encoder_lr_multiplier": 1.0, "layer_decay": 1.0},
    "data": {
        "train_classes": "",
        "label_fraction": 1.0,
        "train_fraction": 1.0,
        "label_noise": 0.0,
        "validation_fraction": 0.0,
    },
}


def _resume_view(config: dict, key: str):
    """What must match between a run and its resumption, for one top-level key: the augmentation
    as resolved per view (a field set to its recipe's value is no change), data without operational
    keys, a section recorded before a key was added as having that key's "off" value."""
    value = config.get(key)
    if key in ADDED_KEYS and isinstance(value, dict):
        value = ADDED_KEYS[key] | value
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


# What a finished run's results depend on beyond RESUME_FIXED_KEYS: its length, its evaluation
# and whether a collapse stops it. A sweep reuses a finished stage only when these match too.
RESULT_KEYS = (
    *RESUME_FIXED_KEYS,
    "total_steps",
    "total_epochs",
    "eval",
    "knn_k",
    "knn_temperature",
    "best_metric",
    "eval_with_ema",
    "stop_on_collapse",
)


# What a job decides from its data and records (train/inputs.py `record_data`), with the values
# that leave it to the job: a config not yet run (a sweep's plan) takes the recorded decision.
DATA_DECISIONS = {
    ("data", "num_classes"): (None,),
    ("data", "class_ids"): (None,),
    ("best_metric",): ("auto",),
    ("model", "pos_image_size"): (None, 0),
}


def _with_recorded_decisions(current: dict, saved: dict) -> dict:
    """`current` (plain JSON) with the recorded data decisions where it leaves them to the job."""
    current = json.loads(json.dumps(current))
    for path, undecided in DATA_DECISIONS.items():
        *sections, field = path
        mine, theirs = current, saved
        for section in sections:
            mine, theirs = mine.get(section), (theirs or {}).get(section)
            if not isinstance(mine, dict):
                break
        else:
            if mine.get(field) in undecided and isinstance(theirs, dict) and field in theirs:
                mine[field] = theirs[field]
    return current


def config_differences(
    workdir: str, config: ml_collections.ConfigDict, keys: tuple[str, ...], *, undecided: bool = False
) -> list[str]:
    """`key.sub (recorded vs now)` for each of `keys` where `config` differs from the config the run
    in `workdir` recorded (read the way a resume reads it: `_resume_view`); [] when none does or
    nothing was recorded. `undecided`: `config` has not been through a job, so what the job decides
    from the data (`DATA_DECISIONS`) is taken from the record where `config` leaves it open."""
    if not os.path.exists(os.path.join(workdir, CONFIG_FILE)):
        return []
    saved, current = _as_json(load_config(workdir)), _as_json(config)
    if undecided:
        current = _with_recorded_decisions(current, saved)
    differences = []
    for key in keys:
        old, new = _resume_view(saved, key), _resume_view(current, key)
        if old != new:
            differences.append(_first_difference(key, old, new))
    return differences


def check_resumable(workdir: str, config: ml_collections.ConfigDict) -> None:
    """Refuse a config whose run would differ from the one already in `workdir` (reads only)."""
    differences = config_differences(workdir, config, RESUME_FIXED_KEYS)
    if differences:
        raise ValueError(
            f"workdir {workdir!r} holds a run with a different {differences[0]}; "
            "pick a new --workdir to start another run"
        )


def record_config(workdir: str, config: ml_collections.ConfigDict) -> None:
    """Create the workdir and write `config.json`: after the run's state is restored or initialised,
    so a start that fails leaves the recorded config as it was."""
    if is_main_process():
        os.makedirs(workdir, exist_ok=True)
    write_json(os.path.join(workdir, CONFIG_FILE), _as_json(config))


def prepare_workdir(workdir: str, config: ml_collections.ConfigDict) -> None:
    """`check_resumable`, then `record_config`: for jobs with no state to restore (embed)."""
    check_resumable(workdir, config)
    record_config(workdir, config)


class MetricLogger:
    """TensorBoard events (clu), `metrics.jsonl` (one JSON object per logged step), one console
    line per logged step and, with `config.wandb.project` set, the same scalars in W&B
    (`report/tracking.py`), all from the main process only."""

    def __init__(self, workdir: str, job: str, config: ml_collections.ConfigDict | None = None):
        self._main = is_main_process()
        self._writer = None
        self._tracker = None
        if self._main:
            from clu import metric_writers

            self._writer = metric_writers.SummaryWriter(workdir)
            if config is not None and tracking.enabled(config):
                self._tracker = tracking.start(workdir, config, _as_json(config))
        self._jsonl = os.path.join(workdir, METRICS_FILE)
        self._job = job

    def write(self, step: int, metrics: dict[str, float], *, total_steps: int | None = None) -> None:
        """Log `metrics` at `step`; with `total_steps` the console line also shows progress and ETA."""
        if not self._main:
            return
        self._writer.write_scalars(step, metrics)
        if self._tracker is not None:
            self._tracker.log(step, metrics)
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

    def warn(self, message: str) -> None:
        """One warning line on stderr (main process), in the job's console format."""
        if self._main:
            print(f"[{self._job}] warning: {message}", file=sys.stderr, flush=True)

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


def _read_json_or_none(path: str) -> dict | None:
    try:
        with open(path) as f:
            value = json.load(f)
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def finish_run(workdir: str, config: ml_collections.ConfigDict, summary: dict, records: list[dict], plots: list[str]):
    """Training curves (with `config.plots`), `summary.json` and `report.md`: the last thing every
    job does. A run finished at this length before and started again (to read the test split, say)
    trained nothing this time: its recorded `train_seconds` stay."""
    from jax_supcon.report import markdown
    from jax_supcon.report import plots as report_plots

    recorded = _read_json_or_none(os.path.join(workdir, SUMMARY_FILE))
    if recorded and recorded.get("steps") == summary.get("steps") and "train_seconds" in recorded:
        summary = summary | {"train_seconds": recorded["train_seconds"]}

    if is_main_process():
        if config.get("plots", True):  # about 2 s of matplotlib a run, which a sweep can spare
            curves = report_plots.training_curves(
                records, os.path.join(workdir, report_plots.PLOTS_DIR, "curves.png"), title=f"{config.job}: {workdir}"
            )
            plots = ([curves] if curves else []) + plots
        summary = summary | {"report": os.path.join(workdir, markdown.REPORT_FILE)}
        markdown.write_report(workdir, config, summary, plots)
    write_json(os.path.join(workdir, SUMMARY_FILE), summary)
    tracking.finish(summary, plots)
    return summary
