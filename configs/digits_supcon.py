"""SupCon pretraining on scikit-learn's digits (embedded, 1,437 training images): the demo's stage 1.

`configs/digits_supcon.py:simclr` trains the self-supervised variant (NT-Xent, T=0.5) instead.
"""

from jax_supcon.config import base_config, sibling


def get_config(variant: str = "supcon"):
    config = base_config()
    config.job = "pretrain"
    sibling(__file__, "datasets").digits(config)
    config.batch_size = 256
    config.total_steps = 200
    config.log_every_steps = 25
    config.checkpoint_every_steps = 100
    config.eval_every_steps = 200  # kNN validation once, at the end: each pass costs ~6 s of a 2-core budget
    config.model.name = "resnet18"
    config.model.width = 0.25
    config.model.proj_dim = 64
    config.loss.name = variant
    # The paper's T=0.1. It collapsed seeds 2 and 3 while the residual branches started at zero
    # scale (model.zero_init_residual=True); at scale one seeds 0-9 train (README, Training health)
    config.loss.temperature = 0.1 if variant == "supcon" else 0.5
    config.augment.flip_prob = 0.0  # mirrored digits are other glyphs
    config.augment.crop_scale = (0.5, 1.0)
    config.optimizer.learning_rate = 0.5
    config.optimizer.warmup_steps = 20
    return config
