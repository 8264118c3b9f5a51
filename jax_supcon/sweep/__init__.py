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

The package: `plan` (cells, stages, checks, the reuse rule; no process, no file) and `runner`
(processes, signals, GPU slots, the aggregation with the raw-pixel baselines).
"""

from jax_supcon.sweep.plan import Axis, Cell, Options, Stage, make_cells, parse_axis, plan, stages
from jax_supcon.sweep.runner import Runner, run_sweep

__all__ = ["Axis", "Cell", "Options", "Runner", "Stage", "make_cells", "parse_axis", "plan", "run_sweep", "stages"]
