"""`jax-supcon-sweep`: flags in, `jax_supcon.sweep` called (the plan, the runs, the table); the
stages' `--config.KEY=VALUE` and `--then.KEY=VALUE` overrides are read from the arguments."""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Sequence

from absl import app, flags

from jax_supcon import cli, sweep
from jax_supcon.sweep.plan import Options


def define_flags(values: flags.FlagValues = flags.FLAGS, sys_argv: list[str] | None = None) -> None:
    """The command's flags, defined into `values` (`sys_argv`: unused; every command takes it)."""
    flags.DEFINE_string("config", None, "The config file (FILE[:ARG]) every cell starts from.", flag_values=values)
    flags.DEFINE_string(
        "workdir", None, "Directory of the sweep: one sub-directory per cell, and the results.", flag_values=values
    )
    flags.DEFINE_multi_string(
        "grid", [], "KEY=V1,V2,... (or KEY=[JSON list]); the key `config` varies the file.", flag_values=values
    )
    flags.DEFINE_integer("seeds", 1, "Run every cell with seeds 0..N-1.", flag_values=values)
    flags.DEFINE_string(
        "then", None, "A second stage (FILE[:ARG]) run on each pretrain cell's workdir.", flag_values=values
    )
    flags.DEFINE_list(
        "metrics",
        [],
        "Summary keys to aggregate (default: test_top1, else the validation metrics).",
        flag_values=values,
    )
    flags.DEFINE_string(
        "select",
        "",
        "A validation metric (val_top1, val/...): choose the best cell on it, then read its test split.",
        flag_values=values,
    )
    flags.DEFINE_integer("parallel", 1, "Runs at a time.", flag_values=values)
    flags.DEFINE_integer(
        "gpus_per_cell", 0, "With --parallel: GPUs each run sees (CUDA_VISIBLE_DEVICES); 0: all.", flag_values=values
    )
    flags.DEFINE_string("name", None, "The sweep's name (W&B group); default: the workdir's name.", flag_values=values)
    flags.DEFINE_bool(
        "baselines", True, "Add the raw-pixel 3-NN baselines of each data setting (in-memory data).", flag_values=values
    )
    flags.mark_flags_as_required(["config", "workdir"], flag_values=values)


PASSED_ON_PREFIXES = ("config", "then")  # --config.KEY=V goes to every stage-1 run, --then.KEY=V to stage 2


def split_passed_on(argv: Sequence[str]) -> tuple[list[str], dict[str, list[str]]]:
    """`argv` without the overrides meant for the stages, and those overrides by prefix, each
    rewritten as the `--config.KEY=VALUE` the stage's `jax-supcon` takes."""
    kept, passed_on = [], {prefix: [] for prefix in PASSED_ON_PREFIXES}
    for arg in argv:
        prefix = next((p for p in PASSED_ON_PREFIXES if arg.startswith(f"--{p}.")), None)
        if prefix is None:
            kept.append(arg)
        else:
            passed_on[prefix].append("--config." + arg.removeprefix(f"--{prefix}."))
    return kept, passed_on


def parse_flags(argv: list[str]) -> list[str]:
    """absl's parsing for the sweep's own flags; `--config.KEY=VALUE` and `--then.KEY=VALUE` are
    left to the stages (checked when the stages' configs are loaded)."""
    try:
        return flags.FLAGS(split_passed_on(argv)[0])
    except flags.Error as error:
        print(f"jax-supcon-sweep: error: {cli.flag_error_line(error)}", file=sys.stderr)
        sys.exit(2)


def options_from_flags(argv: Sequence[str], values: flags.FlagValues = flags.FLAGS) -> Options:
    """The sweep's options from its parsed flags (`values`) and its arguments (`argv`, without the
    program name), where the stages' overrides are read."""
    passed_on = split_passed_on(argv)[1]
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
        overrides=passed_on["config"],
        then_overrides=passed_on["then"],
        command=shlex.join(["jax-supcon-sweep", *argv]),
        select=values.select,
    )


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    with cli.user_errors("jax-supcon-sweep"):
        options = options_from_flags(sys.argv[1:])
        record, paths = sweep.run_sweep(options)
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

{sweep.__doc__.split(chr(10), 2)[2].split("The package:")[0].strip()}
"""


def run() -> None:
    """Console-script entry point (`jax-supcon-sweep`)."""
    define_flags()
    cli.start(main, description=DESCRIPTION, module_name=__name__, flags_parser=parse_flags)
