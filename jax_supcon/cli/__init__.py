"""The command-line tools: `jax-supcon` (`main`), `jax-supcon-average`, `jax-supcon-preview`,
`jax-supcon-bench`, `jax-supcon-search`, `jax-supcon-export` and `jax-supcon-sweep`, each also
`python -m jax_supcon.NAME`; each module defines its flags with `define_flags(values, sys_argv)`.
What they share lives here: the platform setup every entry point applies
first, `--help` that says what the tool does, and the one path from a user's mistake to a
one-line error and exit code 2."""

from __future__ import annotations

import contextlib
import sys
import traceback
from collections.abc import Callable, Iterator

HELP_FLAGS = ("-h", "--help", "-?", "--helpshort")
CONFIGS_NOTE = (
    "Configs are Python files with get_config(): configs/ in the jax_supcon repository holds the\n"
    "digits demo (digits_supcon.py, digits_linear.py, digits_ce.py, digits_embed.py,\n"
    "digits_finetune.py, digits_vit.py), MNIST-5k (mnist5k_supcon.py, mnist5k_linear.py), the\n"
    "open-set ones (digits_openset.py, mnist5k_openset.py)\n"
    "and the paper recipes (cifar_supcon.py, cifar_linear.py, cifar_ce.py, cifar_vit.py,\n"
    "solo_cifar_resnet18.py, imagenet_supcon.py, imagenet_linear.py, imagenet_finetune.py,\n"
    "imagenet_vit.py, metric_learning.py), each with a ',smoke' variant (configs/x.py:ARG,smoke).\n"
    "Any value can be overridden: --config.batch_size=4096 --config.optimizer.learning_rate=0.3."
)


@contextlib.contextmanager
def user_errors(command: str) -> Iterator[None]:
    """The body of a command, after its flags are parsed. Bad values and missing inputs are the
    user's to fix: one line on stderr, exit code 2. The libraries log warnings only, unless absl's
    `--verbosity` is given: then their INFO logs (orbax saves, ...) and, before the line, the
    traceback; the exit code stays 2 either way, so a script never reads bad input as a failed run."""
    from absl import flags, logging

    debug = flags.FLAGS["verbosity"].present
    if not debug:
        logging.set_verbosity(logging.WARNING)
    try:
        yield
    except (ValueError, FileNotFoundError) as error:
        if debug:
            traceback.print_exc()
        print(f"{command}: error: {error}", file=sys.stderr)
        sys.exit(2)


def flag_error_line(error: Exception) -> str:
    """One line from absl's and ml_collections' flag errors (`config.files.flag_error_line`,
    imported only when there is an error: the CLI starts before JAX is imported)."""
    from jax_supcon.config.files import flag_error_line as line

    return line(error)


def print_help(description: str, module_name: str) -> None:
    """`description`, then the flags the command's module defines (absl's own text for them)."""
    from absl import flags

    print(description.rstrip() + "\n")
    listing = flags.FLAGS.module_help(module_name)
    if listing:
        print(listing.strip("\n").replace(f"{module_name}:\n", "Flags:\n", 1))
    print("\n--helpfull lists every flag, those of the libraries included.")


def print_full_help(description: str) -> None:
    """`description`, then every flag the process defines (the command's and the libraries')."""
    from absl import flags

    print(description.rstrip() + "\n")
    print(flags.FLAGS.get_help().strip("\n"))


def start(main: Callable[[list[str]], None], *, description: str, module_name: str, flags_parser=None) -> None:
    """Run a command's `main` under absl the way every entry point does: platform setup first
    (XLA:CPU flags, the huge-page restart), `--help` answered with `description` and the flags."""
    from absl import app

    from jax_supcon import platform

    platform.configure(huge_pages=True)
    if any(arg in HELP_FLAGS for arg in sys.argv[1:]):
        print_help(description, module_name)
        sys.exit(0)
    if "--helpfull" in sys.argv[1:]:  # absl's own handler exits 1, which reads as a failed run
        print_full_help(description)
        sys.exit(0)
    if flags_parser is None:
        app.run(main)
    else:
        app.run(main, flags_parser=flags_parser)


def main_command() -> None:
    """Entry point of `jax-supcon` (and `python -m jax_supcon.main`). SIGTERM becomes a request to
    stop before anything else loads, so a run pre-empted even while Python imports JAX exits 0
    (see `jax_supcon.train.preemption`); then `jax_supcon.cli.main.run`."""
    from jax_supcon.train import preemption

    with preemption.sigterm_requests_stop():
        from jax_supcon.cli import main

        main.run()
