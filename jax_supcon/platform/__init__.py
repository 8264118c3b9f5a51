"""Platform tuning, decided by the entry points and never done on import.

The console scripts and `python -m jax_supcon.main|bench|average|preview` call
`configure(huge_pages=True)` first thing. A library user who wants the same speed on the CPU
makes one call before JAX starts a backend (before the first computation or `jax.devices()`):

    import jax_supcon.platform
    jax_supcon.platform.configure()

It sets XLA:CPU's YNNPACK library fusion in `XLA_FLAGS` (`JAX_SUPCON_CPU_LIBRARY_FUSION=0` opts
out), quiets TensorFlow's start-up messages, and lets ResNets built afterwards take the
CPU-friendly strided convolutions of `models/conv.py` when JAX runs on the CPU. Huge pages need
glibc's tunable at process start: `huge_pages=True` restarts the process once with it (an entry
point's choice; `JAX_SUPCON_HUGE_PAGES=0` opts out), or start Python with
`GLIBC_TUNABLES=glibc.malloc.hugetlb=1` yourself.
"""

from __future__ import annotations

import os

from jax_supcon.platform import cpu

_configured = False


def configure(*, huge_pages: bool = False) -> None:
    """Apply the platform settings to this process (see the module doc); call before JAX starts a backend."""
    global _configured
    if huge_pages:
        cpu.reexec_with_huge_pages()  # returns only where the restart would change nothing
    # TensorFlow only decodes and crops images on the host here: its oneDNN kernels buy nothing
    # and announce themselves on every start.
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    cpu.enable_library_fusion()
    _configured = True


def cpu_convolutions() -> bool:
    """Whether ResNets built now use `models/conv.py`'s strided convolutions: `configure()` was
    called in this process and JAX computes on the CPU."""
    if not _configured:
        return False
    import jax

    return jax.default_backend() == "cpu"
