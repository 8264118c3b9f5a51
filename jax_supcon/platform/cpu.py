"""CPU runtime settings that make the training step fast: XLA's library fusion and huge pages.

Both must be in place before the runtime starts, so this module imports nothing heavy; nothing
here runs on import. `jax_supcon.platform.configure` applies them (the entry points call it first
thing).
"""

from __future__ import annotations

import os
import sys

# XLA's own CPU convolutions run a 3x3, 64-channel convolution on 128 x 32 x 32 at about 100
# GFLOP/s forward and 57 forward + backward on two cores; routed to the YNNPACK library they run at
# 215 / 176: the ResNet-18 training step went from 4.30 to 2.19 s (benchmarks/README.md). The flag only
# touches the CPU backend; JAX_SUPCON_CPU_LIBRARY_FUSION=0 keeps XLA's defaults.
CPU_XLA_FLAGS = (
    "--xla_cpu_experimental_ynn_fusion_type="
    "LIBRARY_FUSION_TYPE_DOT,LIBRARY_FUSION_TYPE_REDUCE,LIBRARY_FUSION_TYPE_ELTWISE"
)

# XLA:CPU allocates its temporary buffer (2.9 GB for the ResNet-18 CIFAR step) afresh for every
# step, and glibc maps an allocation that large anew each time: 419k page faults and 0.7 s of
# system time per step with 4 KiB pages. Asking for transparent huge pages (2 MiB) cuts that to
# 2.8k faults and 0.25 s, and the step by about 9% (README, Performance). glibc reads the tunable only at start-up.
HUGE_PAGE_TUNABLE = "glibc.malloc.hugetlb=1"
THP_MODE_FILE = "/sys/kernel/mm/transparent_hugepage/enabled"


def enable_library_fusion() -> None:
    """Add CPU_XLA_FLAGS to XLA_FLAGS unless the user opted out or set the flag themselves."""
    flags = os.environ.get("XLA_FLAGS", "")
    if os.environ.get("JAX_SUPCON_CPU_LIBRARY_FUSION", "1") != "0" and "ynn_fusion_type" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} {CPU_XLA_FLAGS}".strip()


def huge_pages_requested() -> bool:
    """Whether this process started with glibc asking for huge pages (reported by the benchmarks)."""
    return HUGE_PAGE_TUNABLE in os.environ.get("GLIBC_TUNABLES", "")


def huge_page_tunables(environ: dict[str, str], thp_mode: str | None, glibc_version: str | None) -> str | None:
    """The GLIBC_TUNABLES value that turns huge pages on, or None where that would change nothing.

    `thp_mode` is the bracketed word of THP_MODE_FILE ("always" already gives huge pages, "never"
    forbids them; only "madvise" needs glibc to ask), `glibc_version` as os.confstr reports it
    ("glibc 2.36"; the tunable exists from 2.35). JAX_SUPCON_HUGE_PAGES=0 opts out.
    """
    current = environ.get("GLIBC_TUNABLES", "")
    if environ.get("JAX_SUPCON_HUGE_PAGES", "1") == "0" or "glibc.malloc.hugetlb" in current:
        return None
    if thp_mode != "madvise" or not glibc_version or not glibc_version.startswith("glibc "):
        return None
    major, minor = (int(part) for part in glibc_version.split()[1].split(".")[:2])
    if (major, minor) < (2, 35):
        return None
    return f"{current}:{HUGE_PAGE_TUNABLE}" if current else HUGE_PAGE_TUNABLE


def _thp_mode() -> str | None:
    try:
        with open(THP_MODE_FILE) as file:
            text = file.read()
    except OSError:
        return None
    start, end = text.find("["), text.find("]")
    return text[start + 1 : end] if 0 <= start < end else None


def _glibc_version() -> str | None:
    try:
        return os.confstr("CS_GNU_LIBC_VERSION")
    except (ValueError, OSError, AttributeError):
        return None


def reexec_with_huge_pages() -> None:
    """Restart this process once, same command line, with glibc asking for huge pages.

    A no-op where that changes nothing (see `huge_page_tunables`) and in the restarted process.
    Call it before anything starts threads or opens files that must not be inherited.
    """
    if sys.platform != "linux":
        return
    tunables = huge_page_tunables(dict(os.environ), _thp_mode(), _glibc_version())
    if tunables is None:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], {**os.environ, "GLIBC_TUNABLES": tunables})
