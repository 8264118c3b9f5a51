"""Fine-tuning on digits: the demo's stage-1 encoder (`--config.pretrained_workdir=DIR`) and a
linear classifier trained end to end, the encoder at a tenth of the classifier's learning rate,
on 10% of the training labels (`data.label_fraction`; 1.0 for all).

    jax-supcon --config=configs/digits_finetune.py --workdir=/tmp/ft --config.pretrained_workdir=/tmp/pre

`--config.model.init_from=FILE.safetensors` starts from imported weights instead.
"""

from jax_supcon.config import sibling


def get_config():
    config = sibling(__file__, "digits_linear").get_config()
    config.job = "finetune"
    config.linear_augment = True  # (linear_eval keys: not used by finetune, kept at their defaults)
    config.precompute_features = False
    config.data.label_fraction = 0.1
    config.batch_size = 64
    config.total_steps = 150
    config.checkpoint = "latest"
    config.optimizer.learning_rate = 0.2
    config.optimizer.encoder_lr_multiplier = 0.1
    config.optimizer.weight_decay = 1e-4
    config.optimizer.warmup_steps = 10
    config.label_smoothing = 0.1
    return config
