"""Linear evaluation of a digits encoder: `--config.pretrained_workdir=DIR` names stage 1's workdir."""

from jax_supcon.config import base_config, sibling


def get_config():
    config = base_config()
    config.job = "linear_eval"
    sibling(__file__, "datasets").digits(config)
    config.batch_size = 256
    config.total_steps = 150
    config.log_every_steps = 25
    config.checkpoint_every_steps = 150
    config.augment.flip_prob = 0.0
    config.augment.crop_scale = (0.5, 1.0)
    # The classifier on the features of the plain training images (the views the test sees),
    # computed once: stage 2 takes about 12 s instead of 27, and scored as well or better.
    config.linear_augment = False
    config.precompute_features = True
    config.augment.jitter_prob = 0.0
    config.augment.grayscale_prob = 0.0
    config.optimizer.learning_rate = 1.0
    config.optimizer.weight_decay = 0.0
    config.optimizer.warmup_steps = 0
    return config
