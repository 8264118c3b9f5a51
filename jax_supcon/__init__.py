"""jax_supcon: supervised contrastive learning (SupCon) and SimCLR in JAX/Flax.

Importing the package (or any submodule) changes nothing in the process: the CPU tuning the
command-line tools apply is one call, `jax_supcon.platform.configure()`, made before JAX starts.
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    """`jax_supcon.Embedder`, imported on first use so `import jax_supcon` stays light (no JAX,
    TensorFlow or Flax until then)."""
    if name == "Embedder":
        from jax_supcon.embedder import Embedder

        return Embedder
    raise AttributeError(f"module 'jax_supcon' has no attribute {name!r}")
