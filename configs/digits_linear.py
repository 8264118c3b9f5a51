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
    config.linear_augment = True  # crop + flip only, as the SupCon reference's linear stage
    config.augment.jitter_prob = 0.0
    config.augment.grayscale_prob = 0.0
    config.optimizer.learning_rate = 1.0
    config.optimizer.weight_decay = 0.0
    config.optimizer.warmup_steps = 0
    return config
