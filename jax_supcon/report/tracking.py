"""Optional Weights & Biases logging (`config.wandb`): the scalars the metric log writes, the
config, the summary and the run's PNGs, sent through W&B's official client
(`pip install 'jax_supcon[wandb]'`). Off while `config.wandb.project` is empty; only the main
process logs. A resumed run continues the same W&B run (its id is kept in the workdir), and the
section may change between restarts (project, mode, tags: nothing about training depends on it).
"""

from __future__ import annotations

import importlib.util
import os
import secrets
import sys

import ml_collections

RUN_ID_FILE = "wandb_run_id.txt"
MODES = ("", "online", "offline", "disabled")


def wandb_config() -> ml_collections.ConfigDict:
    """The base config's `wandb` section: project (empty: off), entity, name (default: the
    workdir's name), group, tags, mode ("": W&B's default or $WANDB_MODE; "offline": files only)."""
    section = ml_collections.ConfigDict()
    section.project = ""
    section.entity = ""
    section.name = ""
    section.group = ""
    section.tags = ()
    section.mode = ""
    return section


def validate_wandb_config(section: ml_collections.ConfigDict | None) -> None:
    """One-line errors for a bad `config.wandb`, or a project set without the client installed."""
    if section is None:
        return
    for key in ("project", "entity", "name", "group", "mode"):
        if not isinstance(section.get(key, ""), str):
            raise ValueError(f"wandb.{key}={section.get(key)!r} must be a string")
    if section.get("mode", "") not in MODES:
        raise ValueError(f"wandb.mode={section.mode!r}; allowed: {MODES}")
    tags = section.get("tags", ())
    if isinstance(tags, str) or not all(isinstance(tag, str) for tag in tags):
        raise ValueError(f'wandb.tags={tags!r} must be a list of strings, e.g. --config.wandb.tags=\'("a", "b")\'')
    if section.get("project") and importlib.util.find_spec("wandb") is None:
        raise ValueError(
            f"wandb.project={section.project!r} needs the W&B client: pip install 'jax_supcon[wandb]' "
            "(or leave wandb.project empty)"
        )


def enabled(config: ml_collections.ConfigDict) -> bool:
    return bool(config.get("wandb") and config.wandb.get("project"))


class Tracker:
    """One W&B run for a job's workdir (or nothing, when `config.wandb.project` is empty)."""

    def __init__(self, workdir: str, config: ml_collections.ConfigDict, plain_config: dict):
        import wandb

        section = config.wandb
        id_file = os.path.join(workdir, RUN_ID_FILE)
        run_id = secrets.token_hex(4)  # W&B ids: lowercase letters and digits
        if os.path.exists(id_file):
            with open(id_file) as f:
                run_id = f.read().strip()
        self.workdir = workdir
        try:
            self._run = self._init(wandb, workdir, section, run_id, plain_config, config.job)
        except Exception as error:  # noqa: BLE001 (no API key, no network: the user's to fix)
            raise ValueError(
                f"wandb.init failed ({type(error).__name__}: {' '.join(str(error).split())[:300]}); "
                "check wandb.* or W&B's login"
            ) from None
        with open(id_file, "w") as f:
            f.write(run_id + "\n")

    @staticmethod
    def _init(wandb, workdir, section, run_id, plain_config, job):
        return wandb.init(
            project=section.project,
            entity=section.entity or None,
            name=section.name or os.path.basename(os.path.normpath(workdir)),
            group=section.group or None,
            tags=list(section.tags) or None,
            mode=section.mode or None,
            dir=workdir,
            id=run_id,
            resume="allow",
            config=plain_config,
            job_type=job,
            settings=wandb.Settings(quiet=True),
        )

    def log(self, step: int, metrics: dict[str, float]) -> None:
        self._run.log(dict(metrics), step=step)

    def finish(self, summary: dict, plots: list[str]) -> None:
        """The summary's numbers as the W&B run summary, the PNGs as images; then the run ends."""
        import wandb

        self._run.summary.update({k: v for k, v in summary.items() if isinstance(v, (int, float))})
        images = {
            f"plots/{os.path.splitext(os.path.basename(p))[0]}": wandb.Image(p) for p in plots if os.path.exists(p)
        }
        if images:
            self._run.log(images)
        self._run.finish()


_ACTIVE: Tracker | None = None


def start(workdir: str, config: ml_collections.ConfigDict, plain_config: dict) -> Tracker | None:
    """The job's tracker (main process only; None when W&B is off). A job has one: a second
    start returns the first (stage code may open the metric log more than once)."""
    global _ACTIVE
    from jax_supcon.parallel import is_main_process

    if not enabled(config) or not is_main_process():
        return None
    if _ACTIVE is not None and _ACTIVE.workdir != workdir:
        abandon(exit_code=1)  # a job in this process that never finished its run
    if _ACTIVE is None:
        _ACTIVE = Tracker(workdir, config, plain_config)
    return _ACTIVE


def finish(summary: dict, plots: list[str]) -> None:
    """End the active W&B run (if any) with the summary and plots."""
    global _ACTIVE
    if _ACTIVE is not None:
        tracker, _ACTIVE = _ACTIVE, None
        tracker.finish(summary, plots)


def abandon(exit_code: int) -> None:
    """End the active W&B run without a summary: a job that failed (exit code 1) or stopped to be
    resumed (0). The next job in this process then starts its own."""
    global _ACTIVE
    if _ACTIVE is not None and "wandb" in sys.modules:
        tracker, _ACTIVE = _ACTIVE, None
        tracker._run.finish(exit_code=exit_code)
