"""Semi-supervised fine-tuning on ImageNet as in SimCLR (Chen et al. 2020, Sec. B.5 / Table 7):
the stage-1 ResNet-50 (`--config.pretrained_workdir=STAGE1_DIR`, e.g. configs/imagenet_supcon.py:simclr)
fine-tuned with a linear classifier on the published 1% or 10% label subsets (tfds
`imagenet2012_subset/1pct`: 12,811 images, `/10pct`: 128,116; prepared by hand like imagenet2012),
LARS lr 0.05 x batch/256, momentum 0.9, no weight decay, batch 4096, 60 epochs (1%) or 30 (10%),
random crops and flips only; top-1 on ImageNet's validation split.

    jax-supcon --config=configs/imagenet_finetune.py:1pct --workdir=DIR --config.pretrained_workdir=STAGE1_DIR

Targets (SimCLR Table 7, ResNet-50 1x, top-1 / top-5): 1% labels 48.3 / 75.5, 10% labels 65.6 / 87.8;
a supervised ResNet-50 on the same subsets: 25.4 / 48.4 and 56.4 / 80.4. SimCLR fine-tunes from the
first layer of its projection head; this job fine-tunes from the encoder's pooled features.
`configs/imagenet_finetune.py:10pct,smoke` runs two tiny steps on synthetic data.
"""

from jax_supcon.config import base_config, parse_recipe_arg, sibling, smoke

SUBSETS = {"1pct": 60.0, "10pct": 30.0}  # subset -> epochs


def get_config(arg: str | None = None):
    subset, smoke_run = parse_recipe_arg(arg, tuple(SUBSETS))
    config = base_config()
    config.job = "finetune"
    datasets = sibling(__file__, "datasets")
    config.augment = datasets.crop_and_flip(crop_scale=(0.08, 1.0))
    datasets.imagenet(config)
    config.data.name = f"imagenet2012_subset/{subset}"
    config.data.num_classes = 1000
    config.batch_size = 4096
    config.total_epochs = SUBSETS[subset]
    config.log_every_steps = 10
    config.checkpoint_every_steps = 500
    config.checkpoint = "latest"
    config.model.dtype = "bfloat16"
    config.optimizer.name = "lars"
    config.optimizer.learning_rate = 0.05
    config.optimizer.lr_scaling = "linear"
    config.optimizer.momentum = 0.9
    config.optimizer.weight_decay = 0.0
    config.optimizer.encoder_lr_multiplier = 1.0
    config.optimizer.warmup_epochs = 0.0
    if smoke_run:
        smoke(config)
        config.data.num_classes = 10
    return config
