"""The console scripts as a user runs them: installed next to the interpreter, from another
directory than the repository's, with the digits configs and the recipes' smoke variants; and
`--help` of each, which says what the command does."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(ROOT, "configs")
SCRIPTS = ("jax-supcon", "jax-supcon-average", "jax-supcon-preview", "jax-supcon-bench", "jax-supcon-sweep")
ALL_SCRIPTS = (*SCRIPTS, "jax-supcon-search", "jax-supcon-export")
TINY = (
    "--config.model.name=resnet_tiny",
    "--config.model.width=0.125",
    "--config.data.image_size=8",
    "--config.batch_size=16",
    "--config.eval_batch_size=64",
    "--config.total_steps=2",
    "--config.optimizer.warmup_steps=0",
    "--config.eval_every_steps=0",
    "--config.plots=False",
)


def script(name: str) -> str:
    path = os.path.join(os.path.dirname(sys.executable), name)
    if not os.path.exists(path):
        pytest.fail(f"{name} is not installed next to {sys.executable}: `make install` installs the package")
    return path


def run_script(name: str, *args: str, cwd) -> subprocess.CompletedProcess:
    env = dict(os.environ, JAX_NUM_CPU_DEVICES="2")
    return subprocess.run([script(name), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("name", SCRIPTS)
def test_help_says_what_the_command_does_and_lists_its_flags(name, tmp_path):
    result = run_script(name, "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    text = result.stdout
    assert text.startswith(f"{name}: ") and "Usage:" in text and "Flags:" in text, text
    if name == "jax-supcon":
        for word in ("--config", "--workdir", "--coordinator_address", "--num_processes", "--process_id"):
            assert word in text, word
        for job in ("pretrain", "linear_eval", "embed", "supervised", "configs/", ",smoke"):
            assert job in text, job


@pytest.mark.parametrize("name", ALL_SCRIPTS)
def test_helpfull_lists_the_library_flags_too_and_exits_0(name, tmp_path):
    """absl's own --helpfull exits 1, which a script reads as a failed run."""
    result = run_script(name, "--helpfull", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith(f"{name}: ") and "--verbosity" in result.stdout, result.stdout[-2000:]


@pytest.mark.parametrize(
    "config, override, message",
    [
        (
            "digits_linear.py",
            "--config.pretrained_workdir=/nonexistent",
            "pretrained_workdir='/nonexistent' does not exist",
        ),
        ("digits_supcon.py", "--config.loss.temperature=-1", "loss.temperature=-1.0 must be > 0"),
    ],
)
def test_bad_input_exits_2_with_its_line_also_when_verbose(config, override, message, tmp_path):
    """--verbosity adds the traceback (and library logs), never changes the exit code: a script that
    logs verbosely must not read bad input as a diverged run (exit 1)."""
    for verbose in ((), ("--verbosity=0",)):
        args = (f"--config={CONFIGS}/{config}", "--workdir=run", override, *verbose)
        result = run_script("jax-supcon", *args, cwd=tmp_path)
        assert result.returncode == 2, result.stderr[-2000:]
        assert result.stderr.strip().splitlines()[-1] == f"jax-supcon: error: {message}"
        assert ("Traceback" in result.stderr) == bool(verbose)
        assert not (tmp_path / "run").exists()


def test_every_config_loads_from_another_directory_without_the_repository_on_the_path(tmp_path):
    """Recipes that build on another config or the shared data-set blocks find them by path."""
    names = sorted(f[:-3] for f in os.listdir(CONFIGS) if f.endswith(".py") and f not in ("__init__.py", "datasets.py"))
    code = (
        "import importlib.util, json, sys\n"
        "loaded = {}\n"
        "for path in sys.argv[1:]:\n"
        "    spec = importlib.util.spec_from_file_location('config_under_test', path)\n"
        "    module = importlib.util.module_from_spec(spec)\n"
        "    spec.loader.exec_module(module)\n"
        "    loaded[path] = module.get_config().job\n"
        "print(json.dumps(loaded))\n"
    )
    paths = [os.path.join(CONFIGS, f"{name}.py") for name in names]
    result = subprocess.run(
        [sys.executable, "-I", "-c", code, *paths], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert len(json.loads(result.stdout)) == len(names) >= 10


def test_scripts_run_digits_and_recipe_smoke_configs_from_another_directory(tmp_path):
    """jax-supcon with a config that inherits from another one (digits_ce builds on digits_supcon),
    jax-supcon-preview with a recipe's smoke variant (it reads the shared data-set block).
    jax-supcon-average and jax-supcon-bench run the same way in test_average.py and test_bench.py."""
    result = run_script("jax-supcon", f"--config={CONFIGS}/digits_ce.py", "--workdir=ce", *TINY, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert 0 <= json.loads(result.stdout[result.stdout.index("{") :])["test_top1"] <= 1
    preview = [f"--config={CONFIGS}/cifar_supcon.py:cifar10,smoke", "--out=grid.png", "--images=2"]
    result = run_script("jax-supcon-preview", *preview, cwd=tmp_path)
    assert result.returncode == 0 and (tmp_path / "grid.png").stat().st_size > 0, result.stderr[-2000:]


def test_a_bad_preview_argument_is_one_line_and_exit_code_2(tmp_path):
    result = run_script("jax-supcon-preview", f"--config={CONFIGS}/digits_supcon.py", "--images=0", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("jax-supcon-preview: error: --images=0")


def test_configs_do_not_import_the_configs_package():
    """`from configs import x` works only with the repository on sys.path (pytest's pythonpath)."""
    for name in os.listdir(CONFIGS):
        if name.endswith(".py"):
            with open(os.path.join(CONFIGS, name)) as f:
                text = f.read()
            assert "from configs" not in text and "import configs" not in text, name


def test_sibling_names_a_missing_file():
    from jax_supcon.config import sibling

    with pytest.raises(FileNotFoundError, match=r"configs/nope.py not found \(asked for by .*digits_ce.py\)"):
        sibling(os.path.join(CONFIGS, "digits_ce.py"), "nope")
