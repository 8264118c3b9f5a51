"""`jax-supcon-bench BENCHMARK [--flags]` (or `python -m jax_supcon.bench ...`): figures of this
machine, one JSON line per measurement. The benchmarks live in `jax_supcon.bench`, one module
each; this command defines only the flags of the one it runs."""

from __future__ import annotations

import sys

from absl import app, flags

from jax_supcon import bench, cli

PROGRAM = "jax-supcon-bench"


def description() -> str:
    """What the command does, its usage per benchmark, and every benchmark's flags."""
    listings = []
    for command in bench.COMMANDS:
        values, module = flags.FlagValues(), bench.benchmark(command)
        try:
            module.define_flags(values)
        except ImportError as error:  # step's --config needs ml-collections
            listings.append(f"{command}: (needs {error.name})")
            continue
        listing = values.module_help(module.__name__).strip("\n").replace(f"{module.__name__}:", f"{command}:", 1)
        listings.append(listing)
    return (
        f"{PROGRAM}: figures of this machine (one JSON line per measurement), never pass/fail.\n\n"
        f"{bench.usage(PROGRAM)}\n\nFlags:\n" + "\n".join(listings)
    )


def define_flags(command: str, values: flags.FlagValues = flags.FLAGS, sys_argv: list[str] | None = None) -> None:
    """The flags of benchmark `command` (a ValueError for an unknown one)."""
    bench.benchmark(command).define_flags(values, sys_argv)


def main(argv: list[str]) -> None:
    command = argv[1]
    if len(argv) > 2:
        raise app.UsageError(f"unexpected arguments: {argv[2:]}")
    with cli.user_errors(PROGRAM):
        bench.benchmark(command).run(flags.FLAGS)


def run() -> None:
    """Console-script entry point (`jax-supcon-bench`)."""
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    if command == "--helpfull":  # absl's own handler exits 1, which reads as a failed run
        cli.print_full_help(description())
        sys.exit(0)
    if command in cli.HELP_FLAGS or not command:
        print(description(), file=sys.stdout if command else sys.stderr)
        sys.exit(0 if command else 2)
    if command not in bench.COMMANDS:
        print(f"usage: {PROGRAM} {{{'|'.join(bench.COMMANDS)}}} [--flags]; got {command!r}", file=sys.stderr)
        sys.exit(2)
    try:
        define_flags(command)
    except ImportError as error:  # step's --config needs ml-collections, which an accelerator host may lack
        print(f"{PROGRAM}: error: {command} needs {error.name}: install it or bring its wheel", file=sys.stderr)
        sys.exit(2)
    module = bench.benchmark(command)
    cli.start(main, description=f"{PROGRAM} {command} {module.USAGE}\n\n{module.__doc__}", module_name=module.__name__)


if __name__ == "__main__":
    run()
