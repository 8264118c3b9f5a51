"""A sweep's results (see `jax_supcon.sweep`): per cell the per-seed value of each metric,
their mean and sample standard deviation, written as `sweep.json`, `sweep.md` (mean ± std, one
row per cell, the best marked, the raw-pixel baselines as rows of their own) and `sweep.png`
(bars with error bars, one panel per metric)."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Sequence

import numpy as np

OPEN_SET_METRICS = ("mean_average_precision_at_r", "r_precision", "precision_at_1")
SHORT_NAMES = {
    "test_top1": "test top-1",
    "val_top1": "validation top-1",
    "mean_average_precision_at_r": "MAP@R",
    "r_precision": "R-precision",
    "precision_at_1": "Recall@1",
    "knn_top1": "kNN top-1",
}


def metric_value(summary: dict | None, name: str) -> float | None:
    """`name` from a run's summary, or `val/encoder/name` (the validation metrics by short name)."""
    for key in (name, f"val/encoder/{name}"):
        value = (summary or {}).get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value) if math.isfinite(value) else None  # a diverged metric is no value
    return None


def default_metrics(summaries: Iterable[dict]) -> tuple[str, ...]:
    """What every finished run reports, in this order of preference: `test_top1` (a classifier's
    test accuracy), the open-set retrieval metrics (classes held out), the kNN top-1 of validation."""
    summaries = [s for s in summaries if s]
    for names in (("test_top1",), OPEN_SET_METRICS, ("knn_top1",)):
        if summaries and all(metric_value(s, n) is not None for s in summaries for n in names):
            return names
    return ("test_top1",)


def mean_and_std(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (ddof 1) of the values that exist; std None below two."""
    present = np.array([v for v in values if v is not None], np.float64)
    if present.size == 0:
        return None, None
    return float(present.mean()), float(present.std(ddof=1)) if present.size > 1 else None


def lower_is_better(metric: str) -> bool:
    return "loss" in metric or "error" in metric


def aggregate(rows: list[dict], metrics: Sequence[str]) -> list[dict]:
    """`rows`, each with `summaries` (one per seed, None where that run failed), extended with
    `values` (metric -> per-seed list), `mean` and `std` (metric -> number or None)."""
    out = []
    for row in rows:
        values = {m: [metric_value(s, m) for s in row["summaries"]] for m in metrics}
        stats = {m: mean_and_std(v) for m, v in values.items()}
        out.append(
            {k: v for k, v in row.items() if k != "summaries"}
            | {
                "values": values,
                "mean": {m: s[0] for m, s in stats.items()},
                "std": {m: s[1] for m, s in stats.items()},
            }
        )
    return out


def best_cells(cells: list[dict], metrics: Sequence[str]) -> dict[str, str | None]:
    """Per metric, the name of the cell with the best mean (ties: the first)."""
    best = {}
    for metric in metrics:
        scored = [(c["mean"][metric], c["name"]) for c in cells if c["mean"][metric] is not None]
        if not scored:
            best[metric] = None
            continue
        pick = min if lower_is_better(metric) else max
        best[metric] = pick(scored, key=lambda pair: pair[0])[1]
    return best


def _format(mean: float | None, std: float | None) -> str:
    if mean is None:
        return "—"
    return f"{mean:.4f}" + (f" ± {std:.4f}" if std is not None else "")


def _short(metric: str) -> str:
    """A column name: short names as they are, `val_`/`val/encoder/` and `test_`/`test/encoder/`
    keys as "validation ..." and "test ..." (a `--select` table shows both)."""
    if metric in SHORT_NAMES:
        return SHORT_NAMES[metric]
    for prefix, side in (("val/encoder/", "validation"), ("test/encoder/", "test"), ("val_", "validation")):
        if metric.startswith(prefix):
            name = metric.removeprefix(prefix)
            return f"{side} {SHORT_NAMES.get(name, name)}" if prefix.endswith("/") else f"{side} {name}"
    return metric


def markdown_table(record: dict) -> str:
    """`sweep.md`: the command, then one row per cell (best mean per metric in bold) and per
    baseline, and the runs that failed."""
    metrics, cells, baselines = record["metrics"], record["cells"], record["baselines"]
    best = best_cells(cells, metrics)
    lines = [
        f"# Sweep {record['name']}",
        "",
        f"`{record['command']}`",
        "",
        f"Mean ± sample standard deviation over seeds; **bold**: the best cell per metric. {record['note']} "
        "Raw pixels: test top-1 of a 3-nearest-neighbour classifier on the training split's pixels; "
        "retrieval metrics of held-out classes by cosine similarity of their pixels.",
        "",
        f"| cell | {' | '.join(_short(m) for m in metrics)} | seeds | training minutes per seed |",
        f"|---|{'---|' * len(metrics)}---|---|",
    ]
    for cell in cells:
        shown = []
        for metric in metrics:
            text = _format(cell["mean"][metric], cell["std"][metric])
            shown.append(f"**{text}**" if best[metric] == cell["name"] else text)
        finished = sum(s is not None for s in cell["seconds"])
        minutes = [s / 60 for s in cell["seconds"] if s is not None]
        time = f"{np.mean(minutes):.1f}" if minutes else "—"
        lines.append(f"| {cell['name']} | {' | '.join(shown)} | {finished}/{len(cell['seeds'])} | {time} |")
    for baseline in baselines:
        shown = [_format(baseline["mean"].get(m), baseline["std"].get(m)) for m in metrics]
        lines.append(f"| *{baseline['name']}* | {' | '.join(shown)} | {len(baseline['seeds'])} | |")
    failures = [(cell["name"], f) for cell in cells for f in cell["failures"]]
    if failures:
        lines += ["", "Runs that did not finish:", ""]
        lines += [f"- {name} seed {f['seed']} {f['stage']}: {f['error']} (log: `{f['log']}`)" for name, f in failures]
    return "\n".join(lines) + "\n"


def plot(record: dict, path: str) -> str:
    """`sweep.png`: per metric a panel of horizontal bars (cells, then baselines in grey) with
    the sample standard deviation as error bars, the axis zoomed to the values."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    metrics = record["metrics"]
    rows = [(c["name"], c["mean"], c["std"], "tab:blue") for c in record["cells"]]
    rows += [(b["name"], b["mean"], b["std"], "0.6") for b in record["baselines"]]
    figure = Figure(figsize=(5.5 * len(metrics), 0.9 + 0.45 * len(rows)), layout="constrained")
    axes = figure.subplots(1, len(metrics), squeeze=False)[0]
    best = best_cells(record["cells"], metrics)
    for axis, metric in zip(axes, metrics, strict=True):
        means = np.array([r[1].get(metric) if r[1].get(metric) is not None else np.nan for r in rows])
        stds = np.array([r[2].get(metric) if r[2].get(metric) is not None else 0.0 for r in rows])
        shown = ~np.isnan(means)
        if shown.any():
            low, high = np.min((means - stds)[shown]), np.max((means + stds)[shown])
            margin = max(0.1 * (high - low), 0.005)
            left = max(low - margin, 0.0) if low >= 0 else low - margin
            positions = np.arange(len(rows))[::-1]
            colors = [("tab:orange" if r[0] == best[metric] else r[3]) for r in rows]
            axis.barh(
                positions[shown],
                (means - left)[shown],
                left=left,
                xerr=stds[shown],
                color=[c for c, s in zip(colors, shown, strict=True) if s],
                capsize=3,
            )
            axis.set_xlim(left, high + margin)
            axis.set_yticks(positions, [r[0] for r in rows], fontsize=8)
        axis.set_title(_short(metric))
        axis.grid(axis="x", alpha=0.3)
    figure.suptitle(f"sweep {record['name']}: mean ± std over seeds (orange: best cell; grey: raw pixels)", fontsize=10)
    figure.savefig(path, dpi=110)
    return path


def write_outputs(workdir: str, record: dict) -> list[str]:
    """`sweep.json`, `sweep.md` and `sweep.png` in `workdir`, each replaced whole."""
    paths = []
    for name, write in (
        ("sweep.json", lambda p: _write_text(p, json.dumps(_finite(record), indent=1, sort_keys=False) + "\n")),
        ("sweep.md", lambda p: _write_text(p, markdown_table(record))),
        ("sweep.png", lambda p: plot(record, p)),
    ):
        path = os.path.join(workdir, name)
        tmp = os.path.join(workdir, f".{name}.tmp{os.path.splitext(name)[1]}")
        write(tmp)
        os.replace(tmp, path)
        paths.append(path)
    return paths


def _write_text(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def _finite(value):
    """JSON without NaN: a NaN (a diverged metric) becomes null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value
