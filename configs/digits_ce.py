"""The cross-entropy baseline on digits: the demo's encoder trained end to end with a linear
classifier on augmented views, for comparison with SupCon + linear evaluation."""

from jax_supcon.config import sibling


def get_config():
    config = sibling(__file__, "digits_supcon").get_config()
    config.job = "supervised"
    config.eval_every_steps = 0
    config.optimizer.learning_rate = 0.2
    config.label_smoothing = 0.1
    config.augment.jitter_prob = 0.0
    config.augment.grayscale_prob = 0.0
    return config
