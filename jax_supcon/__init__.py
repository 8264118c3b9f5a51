"""jax_supcon: supervised contrastive learning (SupCon) and SimCLR in JAX/Flax."""

__version__ = "0.1.0"
