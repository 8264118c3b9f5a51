"""`jax-supcon --config=configs/NAME.py[:ARG] --workdir=DIR [--config.KEY=VALUE ...]`.

The config names the job (`config.job`); this module only parses flags and calls that job's
`train_and_evaluate(config, workdir)`, the same function tests and notebooks call.
"""

from __future__ import annotations

import json
import sys

from absl import flags, logging
from ml_collections import config_flags

from jax_supcon import cli

DESCRIPTION = f"""jax-supcon: supervised contrastive learning (SupCon), SimCLR and their baselines in JAX/Flax.

Usage: jax-supcon --config=configs/NAME.py[:ARG] --workdir=DIR [--config.KEY=VALUE ...]

The config names the job (config.job):
  pretrain     stage 1: encoder + projection head trained with SupCon (or SimCLR, pair, triplet)
  linear_eval  stage 2: a linear classifier on the frozen stage-1 encoder
               (--config.pretrained_workdir=STAGE1_DIR)
  embed        embeddings of a split from a stage-1 checkpoint, written to .npz
  supervised   the cross-entropy baseline: encoder and classifier trained end to end
  finetune     a stage-1 (--config.pretrained_workdir) or imported (--config.model.init_from)
               encoder and a classifier trained end to end, optionally on data.label_fraction

{cli.CONFIGS_NOTE}

The run writes checkpoints/, metrics.jsonl, TensorBoard events, summary.json, report.md and
plots/ into --workdir; the same command again resumes from the latest checkpoint. Several
processes (hosts): --coordinator_address, --num_processes, --process_id (or the JAX_* variables,
or --distributed_auto on SLURM and TPU VMs). Exit codes: 0 done (or saved and stopped on
SIGTERM), 1 the training diverged or its projections collapsed, 2 bad input.

Example (the demo's stage 1 and 2):
  jax-supcon --config=configs/digits_supcon.py --workdir=runs/demo/pretrain
  jax-supcon --config=configs/digits_linear.py --workdir=runs/demo/linear \\
      --config.pretrained_workdir=runs/demo/pretrain
"""


def define_flags(values: flags.FlagValues = flags.FLAGS, sys_argv: list[str] | None = None) -> None:
    """The command's flags, defined into `values` (the process's flags for the command itself)."""
    config_flags.DEFINE_config_file(
        "config", None, "Config file (configs/NAME.py[:ARG]).", lock_config=True, flag_values=values, sys_argv=sys_argv
    )
    flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and plots.", flag_values=values)
    flags.DEFINE_string(
        "coordinator_address",
        None,
        "Multi-process runs: host:port of process 0 (or $JAX_COORDINATOR_ADDRESS).",
        flag_values=values,
    )
    flags.DEFINE_integer(
        "num_processes", None, "Multi-process runs: how many (or $JAX_NUM_PROCESSES).", flag_values=values
    )
    flags.DEFINE_integer(
        "process_id", None, "Multi-process runs: this one's index (or $JAX_PROCESS_ID).", flag_values=values
    )
    flags.DEFINE_bool(
        "distributed_auto",
        False,
        "Multi-process runs: let JAX detect the cluster (SLURM, Cloud TPU VMs, Open MPI).",
        flag_values=values,
    )
    flags.mark_flags_as_required(["config", "workdir"], flag_values=values)


def main(argv: list[str]) -> None:
    from absl import app

    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from jax_supcon.train import loop, preemption  # SIGTERM is a stop request already (main_command)

    options = flags.FLAGS
    config = options.config
    try:
        with cli.user_errors("jax-supcon"):
            from jax_supcon import jobs, parallel
            from jax_supcon.config import check_pretrained_workdir, validate_config

            validate_config(config)
            check_pretrained_workdir(config.get("pretrained_workdir"))
            parallel.initialize_distributed(
                options.coordinator_address,
                options.num_processes,
                options.process_id,
                auto=options.distributed_auto,
                before_start=preemption.release,  # processes stop together at JAX's preemption sync point
            )
            logging.info("job %s in %s", config.job, options.workdir)
            summary = jobs.train_and_evaluate(config, options.workdir)
    except loop.TrainingDiverged as error:
        print(f"jax-supcon: stopped: {error}", file=sys.stderr)
        sys.exit(1)
    except preemption.Preempted as error:  # not a failure: the scheduler restarts the same command
        print(f"jax-supcon: {error}", file=sys.stderr)
        sys.exit(0)
    if parallel.is_main_process():
        print(json.dumps(summary, indent=2, sort_keys=True))


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, with a bad flag or config override (unknown key, wrong type) reported
    like every other bad input: one line on stderr, exit code 2."""
    try:
        rest = flags.FLAGS(argv)
        flags.FLAGS.config.get("job")  # a config file that failed to load raises here
        return rest
    except (flags.Error, KeyError, AttributeError, OSError) as error:
        print(f"jax-supcon: error: {cli.flag_error_line(error)}", file=sys.stderr)
        sys.exit(2)


def run() -> None:
    """Console-script entry point (`jax-supcon`)."""
    define_flags()
    cli.start(main, description=DESCRIPTION, module_name=__name__, flags_parser=parse_flags)


if __name__ == "__main__":
    run()
