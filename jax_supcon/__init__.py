"""jax_supcon: supervised contrastive learning (SupCon) and SimCLR in JAX/Flax.

Importing the package (or any submodule) changes nothing in the process: the CPU tuning the
command-line tools apply is one call, `jax_supcon.platform.configure()`, made before JAX starts.
"""

__version__ = "0.1.0"
