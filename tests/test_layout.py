"""The house rules the layout depends on, checked on the source: no module grows past about 400
lines, and no lower layer imports a job or the command line (imports run down the house only)."""

import ast
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "jax_supcon"
MAX_LINES = 420  # "about 400": a module that outgrows it is split by concern
UPPER = ("jax_supcon.jobs", "jax_supcon.cli")  # what only entry points may import
ENTRY_POINTS = ("cli", "bench", "sweep", "jobs")  # packages that sit at the top (bench step runs the job's step)
SHIMS = ("main.py", "average.py", "preview.py", "search.py", "export.py")  # `python -m jax_supcon.NAME`


def modules():
    return sorted(PACKAGE.rglob("*.py"))


def test_no_module_is_over_about_400_lines():
    long = {str(p.relative_to(PACKAGE)): n for p in modules() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"split these by concern: {long}"


def imported_modules(path: pathlib.Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names |= {node.module, *(f"{node.module}.{alias.name}" for alias in node.names)}
        elif isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
    return names


def test_no_lower_layer_imports_a_job_or_the_command_line():
    upward = {}
    for path in modules():
        relative = path.relative_to(PACKAGE)
        if relative.parts[0] in ENTRY_POINTS or str(relative) in SHIMS:
            continue
        bad = sorted(n for n in imported_modules(path) if n.startswith(UPPER))
        if bad:
            upward[str(relative)] = bad
    assert not upward, f"imports that run back up the house: {upward}"


def test_the_checks_see_what_they_check():
    assert len(modules()) > 60 and "jax_supcon.jobs.pretrain" in imported_modules(PACKAGE / "bench" / "step.py")
