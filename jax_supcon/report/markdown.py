"""`report.md` at the end of every job: key metrics, the config in brief, and the pictures."""

from __future__ import annotations

import os

import ml_collections

REPORT_FILE = "report.md"


def _format(value) -> str:
    if value is None:  # a metric the data cannot define (see evaluate.retrieval)
        return "undefined"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1e4 else f"{value:.4g}"
    return str(value)


def config_summary(config: ml_collections.ConfigDict) -> list[tuple[str, str]]:
    """The handful of settings that identify a run."""
    rows = [
        ("job", config.job),
        ("data", f"{config.data.name}, {config.data.image_size}x{config.data.image_size}"),
        (
            "model",
            f"{config.model.name} (width {config.model.width}, {config.model.stem} stem, {config.model.dtype}"
            f"{', zero-init residual' if config.model.get('zero_init_residual', False) else ''}), "
            f"{config.model.head} head -> {config.model.proj_dim}",
        ),
        ("batch", f"{config.batch_size} global"),
        (
            "duration",
            f"{config.total_steps} steps" if config.total_steps is not None else f"{config.total_epochs} epochs",
        ),
        (
            "optimizer",
            f"{config.optimizer.name}, lr {config.optimizer.learning_rate}, {config.optimizer.schedule}, "
            f"weight decay {config.optimizer.weight_decay}",
        ),
    ]
    if config.job == "pretrain":
        rows.insert(3, ("loss", f"{config.loss.name}, T={config.loss.temperature}, {config.loss.num_views} views"))
    if config.pretrained_workdir:
        rows.append(("pretrained_workdir", config.pretrained_workdir))
    return rows


def write_report(workdir: str, config: ml_collections.ConfigDict, summary: dict, plots: list[str]) -> str:
    """Write `workdir/report.md` (pictures linked relative to the workdir); returns its path."""
    lines = [
        f"# {config.job} run: {os.path.basename(os.path.abspath(workdir))}",
        "",
    ]
    if summary.get("collapsed_at_step") is not None:
        lines += [
            f"**This run collapsed**: every projection became one vector from step {summary['collapsed_at_step']} "
            "(`stop_on_collapse=False` let it go on); its figures are not those of a trained encoder.",
            "",
        ]
    lines += [
        "## Results",
        "",
        "| metric | value |",
        "|---|---|",
    ]
    lines += [f"| {key} | {_format(value)} |" for key, value in summary.items() if key != "job"]
    lines += ["", "## Config", "", "| setting | value |", "|---|---|"]
    lines += [f"| {key} | {value} |" for key, value in config_summary(config)]
    lines += ["", "Full config: `config.json`; every logged step: `metrics.jsonl`.", ""]
    if plots:
        lines += ["## Pictures", ""]
        for path in plots:
            relative = os.path.relpath(path, workdir)
            lines += [f"![{os.path.splitext(os.path.basename(path))[0]}]({relative})", ""]
    path = os.path.join(workdir, REPORT_FILE)
    with open(path, "w") as f:
        f.write("\n".join(lines))
    return path
