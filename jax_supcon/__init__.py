"""jax_supcon: supervised contrastive learning (SupCon) and SimCLR in JAX/Flax."""

from jax_supcon import cpu as _cpu

__version__ = "0.1.0"

# Before JAX starts a backend: route CPU convolutions, reductions and elementwise work to YNNPACK.
_cpu.enable_library_fusion()
