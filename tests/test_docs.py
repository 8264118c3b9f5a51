"""Every `jax-supcon...` command line in README.md and docs/ parses: its config file loads with its
overrides, its flags exist, and a sweep's grid plans. A renamed key or flag breaks this test, not
the user who copies the line."""

import pathlib
import re
import shlex

import pytest
from absl import flags

ROOT = pathlib.Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# Usage synopses (optional parts in brackets, alternatives, placeholders) document the syntax; they
# are not lines to run. A command's optional flags in brackets are checked as if given.
SYNOPSIS = re.compile(r"\.\.\.|\\\||configs/NAME|=FILE\b|\(--")


def command_lines(text: str) -> list[tuple[int, str]]:
    """(line number, command) of every `jax-supcon...` command with at least one flag: the lines of
    fenced code blocks (continuations joined, a trailing `# comment` dropped) and inline code."""
    found, fence, pending = [], False, ""
    for number, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("```"):
            fence, pending = not fence, ""
            continue
        if fence:
            pending += line.strip()
            if pending.endswith("\\"):
                pending = pending[:-1] + " "
                continue
            # a line that runs the command: environment assignments, a path or a launcher
            # (`launch/local.sh 2 jax-supcon ...`) may precede it
            launcher = r"(?:launch/local\.sh\s+\d+\s+)?"
            runs = rf"^(?:\$\s+)?(?:\w+=\S*\s+)*{launcher}(?:\S*/)?(jax-supcon[\w-]*\s.*)$"
            match = re.match(runs, pending.split(" #")[0])
            pending = ""
            if match:
                found.append((number, match.group(1)))
        else:
            found += [(number, m.group(1)) for m in re.finditer(r"`(jax-supcon[\w-]*\s[^`]*)`", line)]
    return [
        (number, " ".join(command.replace("[", "").replace("]", "").split()))
        for number, command in found
        if " --" in command and not SYNOPSIS.search(command)
    ]


def check_command(command: str, workdir: pathlib.Path) -> None:
    """Parse `command` as its program would (flags of that program only; `--config` loaded with its
    overrides); a sweep is also planned (its configs, grid keys and stages checked). Raises on any
    error. Workdirs are redirected under `workdir`, so nothing on this machine is read."""
    from jax_supcon.cli import average, bench, export, preview, search, sweep
    from jax_supcon.cli import main as main_cli
    from jax_supcon.sweep import plan

    argv = shlex.split(command)
    argv = [re.sub(r"^--workdir=.*", f"--workdir={workdir}", arg) for arg in argv]
    program, values = argv[0], flags.FlagValues()
    if program == "jax-supcon-bench":
        bench.define_flags(argv[1], values, sys_argv=[program, *argv[2:]])
        argv = [program, *argv[2:]]
    elif program == "jax-supcon-sweep":
        kept, _ = sweep.split_passed_on(argv)
        sweep.define_flags(values)
        values(kept)
        plan(sweep.options_from_flags(argv[1:], values))
        return
    else:
        tools = {
            "jax-supcon": main_cli,
            "jax-supcon-preview": preview,
            "jax-supcon-average": average,
            "jax-supcon-search": search,
            "jax-supcon-export": export,
        }
        tools[program].define_flags(values, sys_argv=argv)
    rest = values(argv)
    assert rest == [program], f"unexpected arguments {rest[1:]}"
    if "config" in values and values["config"].value is not None:
        values["config"].value.get("job")  # a config file that failed to load raises here


def documented_commands() -> list[tuple[str, str]]:
    return [
        (f"{page.relative_to(ROOT)}:{number}", command)
        for page in PAGES
        for number, command in command_lines(page.read_text())
    ]


def test_docs_hold_the_commands_users_copy():
    commands = DOCUMENTED
    programs = {shlex.split(command)[0] for _, command in commands}
    assert len(commands) >= 30 and {"jax-supcon", "jax-supcon-sweep", "jax-supcon-bench"} <= programs


DOCUMENTED = documented_commands()


@pytest.mark.parametrize("where,command", DOCUMENTED, ids=[where for where, _ in DOCUMENTED])
def test_every_documented_command_parses(where, command, tmp_path):
    try:
        check_command(command, tmp_path)
    except BaseException as error:  # absl's flag errors, a config's KeyError, a sweep's ValueError, SystemExit
        pytest.fail(f"{where}: {command}\n  {type(error).__name__}: {error}")


@pytest.mark.parametrize(
    "command",
    [
        "jax-supcon --config=configs/digits_supcon.py --workdir=w --config.loss.temprature=0.1",  # a renamed key
        "jax-supcon --config=configs/digits_supcon.py --workdir=w --config.loss.temperature=hot",  # a wrong type
        "jax-supcon --config=configs/digits_supcon_v2.py --workdir=w",  # a renamed config file
        "jax-supcon --config=configs/digits_supcon.py --work_dir=w",  # a renamed flag
        "jax-supcon-bench step --config=configs/bench_cifar_resnet18.py --step=3",
        "jax-supcon-sweep --config=configs/digits_supcon.py --workdir=w --grid=loss.temprature=0.1,0.2",
        "jax-supcon-search --workdir=w --gallery=g --queries=q --top_k=5",
    ],
)
def test_a_renamed_key_or_flag_fails_the_check(command, tmp_path):
    with pytest.raises((flags.Error, KeyError, AttributeError, OSError, ValueError)):
        check_command(command, tmp_path)


def test_extraction_joins_continuations_and_skips_synopses():
    text = "\n".join(
        [
            "Run `jax-supcon --config=configs/digits_ce.py --workdir=a` or see `jax-supcon-sweep`.",
            "`jax-supcon --config=configs/NAME.py[:ARG] --workdir=DIR [--config.KEY=VALUE ...]`",
            "```sh",
            "jax-supcon --config=configs/digits_supcon.py --workdir=b \\",
            "    --config.seed=1   # a comment",
            "x=1 .venv/bin/jax-supcon-bench step --config=configs/bench_cifar_resnet18.py [--pipeline]",
            "  runner.py   Runner (one jax-supcon process per stage, --select's test read)",
            "```",
        ]
    )
    assert command_lines(text) == [
        (1, "jax-supcon --config=configs/digits_ce.py --workdir=a"),
        (5, "jax-supcon --config=configs/digits_supcon.py --workdir=b --config.seed=1"),
        (6, "jax-supcon-bench step --config=configs/bench_cifar_resnet18.py --pipeline"),
    ]
