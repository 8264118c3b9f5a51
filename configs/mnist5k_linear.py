"""Linear evaluation of an MNIST-5k encoder (`configs/mnist5k_supcon.py`):
`--config.pretrained_workdir=DIR` names stage 1's workdir."""

from jax_supcon.config import sibling


def get_config():
    config = sibling(__file__, "digits_linear").get_config()
    sibling(__file__, "datasets").mnist5k(config)
    config.linear_augment = True  # the classifier on augmented views (crops), features recomputed each step
    config.precompute_features = False
    return config
