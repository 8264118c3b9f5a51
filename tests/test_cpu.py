"""CPU runtime settings: when the entry points ask glibc for huge pages, and that the restart keeps argv."""

import os
import subprocess
import sys

import pytest

from jax_supcon import cpu


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
        "from jax_supcon import cpu\n"
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
