"""Platform setup: nothing changes on import, the entry points' CPU settings (huge pages, XLA
flags, CPU convolutions) apply only when asked, and the core runs without the host-side packages."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from jax_supcon.platform import cpu

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize(
    "environ, thp_mode, glibc, expected",
    [
        ({}, "madvise", "glibc 2.36", "glibc.malloc.hugetlb=1"),
        (
            {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"},
            "madvise",
            "glibc 2.39",
            "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1",
        ),
        ({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}, "madvise", "glibc 2.36", None),  # the user's choice stands
        ({"JAX_SUPCON_HUGE_PAGES": "0"}, "madvise", "glibc 2.36", None),
        ({}, "always", "glibc 2.36", None),  # the kernel already gives huge pages
        ({}, "never", "glibc 2.36", None),
        ({}, None, "glibc 2.36", None),  # no THP at all
        ({}, "madvise", "glibc 2.31", None),  # the tunable arrived in 2.35
        ({}, "madvise", None, None),  # musl or another libc
    ],
)
def test_huge_page_tunables(environ, thp_mode, glibc, expected):
    assert cpu.huge_page_tunables(environ, thp_mode, glibc) == expected


def test_reexec_restarts_once_with_the_tunable_and_the_same_arguments():
    code = (
        "import os, sys\n"
        "from jax_supcon.platform import cpu\n"
        "cpu._thp_mode = lambda: 'madvise'\n"
        "cpu._glibc_version = lambda: 'glibc 2.36'\n"
        "print('start', flush=True)\n"
        "cpu.reexec_with_huge_pages()\n"
        "print(os.environ['GLIBC_TUNABLES'], sys.argv[1:])\n"
    )
    env = {key: value for key, value in os.environ.items() if key not in ("GLIBC_TUNABLES", "JAX_SUPCON_HUGE_PAGES")}
    result = subprocess.run(
        [sys.executable, "-c", code, "--flag=1", "two"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    # 'start' twice (the first process and its restart), the rest of the program once
    assert result.stdout.splitlines() == ["start", "start", "glibc.malloc.hugetlb=1 ['--flag=1', 'two']"]


def test_library_fusion_flag_is_set_once_and_respects_opt_out(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "--xla_dump_to=/tmp/x")
    cpu.enable_library_fusion()
    cpu.enable_library_fusion()
    assert os.environ["XLA_FLAGS"] == f"--xla_dump_to=/tmp/x {cpu.CPU_XLA_FLAGS}"
    monkeypatch.setenv("XLA_FLAGS", "")
    monkeypatch.setenv("JAX_SUPCON_CPU_LIBRARY_FUSION", "0")
    cpu.enable_library_fusion()
    assert os.environ["XLA_FLAGS"] == ""


def run_python(code: str, *args: str, cwd: str = ROOT, devices: int = 1) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "GLIBC_TUNABLES")}
    env |= {"JAX_NUM_CPU_DEVICES": str(devices)}
    return subprocess.run(
        [sys.executable, "-c", code, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


# What jax_supcon's modules import at their top; some of these set variables of their own
# (jax: TPU_SKIP_MDS_QUERY, scikit-learn: KMP_*), so they are imported before the snapshot.
THIRD_PARTY = ("numpy", "jax", "flax.linen", "optax", "orbax.checkpoint", "ml_collections", "dm_pix", "absl.flags")
PLOTTING = ("matplotlib", "sklearn.manifold")


def test_importing_every_module_leaves_the_environment_untouched():
    code = (
        "import importlib, json, os, pkgutil, sys\n"
        f"for name in {THIRD_PARTY + PLOTTING!r}:\n"
        "    importlib.import_module(name)\n"
        "before = dict(os.environ)\n"
        "import jax_supcon\n"
        "names = [m.name for m in pkgutil.walk_packages(jax_supcon.__path__, 'jax_supcon.')]\n"
        "for name in names:\n"
        "    importlib.import_module(name)\n"
        "changed = sorted(k for k in set(before) | set(os.environ) if before.get(k) != os.environ.get(k))\n"
        "print(json.dumps({'modules': len(names), 'changed': changed}))\n"
    )
    result = run_python(code)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["modules"] > 30 and report["changed"] == [], report


# Blocked in the child below: a GPU host often has jax[cuda], flax, optax and orbax but none of these.
HOST_ONLY = ("tensorflow", "tensorflow_datasets", "clu", "sklearn")


def test_the_core_imports_and_runs_a_bench_step_without_tensorflow_clu_or_scikit_learn():
    code = (
        "import json, sys\n"
        f"for name in {HOST_ONLY!r}:\n"
        "    sys.modules[name] = None  # `import name` now raises ImportError\n"
        "from jax_supcon import checkpoint, losses, models, optim, parallel\n"
        "from jax_supcon.data import augment\n"
        "from jax_supcon.train import loop, pretrained, state\n"
        "from jax_supcon.cli import bench\n"
        "sys.argv = ['jax-supcon-bench', *sys.argv[1:]]\n"
        "bench.run()\n"
    )
    args = [
        "step",
        "--config=configs/bench_cifar_resnet18.py",
        "--config.model.name=resnet_tiny",
        "--config.model.width=0.125",
        "--config.data.image_size=8",
        "--config.batch_size=8",
        "--config.augment.recipe=simclr",  # the on-device augmentation too
        "--steps=1",
    ]
    result = run_python(code, *args)
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads(result.stdout.strip().splitlines()[-1])
    assert record["bench"] == "step" and record["steps_timed"] == 1 and np.isfinite(record["loss_value"])


def test_configure_sets_the_cpu_flags_and_convolutions_only_when_called():
    code = (
        "import os\n"
        "from jax_supcon import models, platform\n"
        "from jax_supcon.config import base_config\n"
        "before = (os.environ.get('XLA_FLAGS'), platform.cpu_convolutions())\n"
        "platform.configure()\n"
        "encoder = models.create_encoder(base_config().model)\n"
        "print(before, platform.CPU_FLAG_SET(), encoder.cpu_convolutions)\n"
    ).replace("platform.CPU_FLAG_SET()", "'ynn_fusion_type' in os.environ['XLA_FLAGS']")
    result = run_python(code)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["(None,", "False)", "True", "True"]
