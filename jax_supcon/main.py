"""Command line: `jax-supcon --config=configs/NAME.py[:ARG] --workdir=DIR [--config.KEY=VALUE ...]`.

The config names the job (`config.job`); this file only parses flags and calls that job's
`train_and_evaluate(config, workdir)`, the same function tests and notebooks call.
"""

from __future__ import annotations

import json
import os
import sys

# TensorFlow only decodes and crops images on the host here: its oneDNN kernels buy nothing and
# announce themselves on every start. Set before TensorFlow is imported.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging
from ml_collections import config_flags

from jax_supcon import cpu

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (configs/NAME.py[:ARG]).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and plots.")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "Multi-process runs: host:port of process 0 (or $JAX_COORDINATOR_ADDRESS)."
)
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Multi-process runs: how many (or $JAX_NUM_PROCESSES).")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "Multi-process runs: this one's index (or $JAX_PROCESS_ID).")
_AUTO = flags.DEFINE_bool(
    "distributed_auto", False, "Multi-process runs: let JAX detect the cluster (SLURM, Cloud TPU VMs, Open MPI)."
)
flags.mark_flags_as_required(["config", "workdir"])


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    debug = flags.FLAGS["verbosity"].present
    if not debug:
        logging.set_verbosity(logging.WARNING)  # library INFO chatter (orbax saves) only on request
    from jax_supcon import parallel
    from jax_supcon.config import validate_config
    from jax_supcon.train import JOBS
    from jax_supcon.train.common import Preempted, TrainingDiverged

    config = _CONFIG.value
    try:
        validate_config(config)
        parallel.initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value, auto=_AUTO.value)
        logging.info("job %s in %s", config.job, _WORKDIR.value)
        summary = JOBS[config.job](config, _WORKDIR.value)
    except (ValueError, FileNotFoundError) as error:
        if debug:
            raise
        # Bad values and missing inputs are the user's to fix: one line, no traceback, exit code 2.
        print(f"jax-supcon: error: {error}", file=sys.stderr)
        sys.exit(2)
    except TrainingDiverged as error:
        print(f"jax-supcon: stopped: {error}", file=sys.stderr)
        sys.exit(1)
    except Preempted as error:  # pre-emption is not a failure: the scheduler restarts the same command
        print(f"jax-supcon: {error}", file=sys.stderr)
        sys.exit(0)
    import jax

    if jax.process_index() == 0:
        print(json.dumps(summary, indent=2, sort_keys=True))


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, with a bad flag or config override (unknown key, wrong type) reported
    like every other bad input: one line on stderr, exit code 2."""
    try:
        rest = flags.FLAGS(argv)
        _CONFIG.value.get("job")  # a config file that failed to load raises here
        return rest
    except (flags.Error, KeyError, AttributeError, OSError) as error:
        print(f"jax-supcon: error: {_flag_error_line(error)}", file=sys.stderr)
        sys.exit(2)


def _flag_error_line(error: Exception) -> str:
    """One line from absl's and ml_collections' flag errors (some span several lines)."""
    text = str(error.args[0]) if error.args else str(error)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if isinstance(error, (KeyError, AttributeError)):  # an override of a key the config lacks
        key = lines[0].strip("\"'")
        return f"unknown config key {key!r}" + "".join(f"; {line}" for line in lines[1:])
    if isinstance(error, OSError):  # ml_collections' report of a config file: its last line says why
        lines = ["cannot load --config:", *lines[-1:]]
    return " ".join(" ".join(lines).split())


def run() -> None:
    """Console-script entry point."""
    cpu.reexec_with_huge_pages()
    app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
    run()
