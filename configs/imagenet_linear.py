"""Linear evaluation on ImageNet as in SimCLR (Chen et al. 2020, Sec. B.5): the frozen stage-1
ResNet-50, a linear classifier trained with SGD Nesterov momentum 0.9, lr 0.1 x batch/256, no
weight decay, batch 4096, 90 epochs, cosine, on random crops and flips; top-1 on the validation
split (targets: see configs/imagenet_supcon.py).

    jax-supcon --config=configs/imagenet_linear.py[:smoke] --workdir=DIR --config.pretrained_workdir=STAGE1_DIR
"""

from jax_supcon.config import base_config, parse_recipe_arg, sibling, smoke


def get_config(arg: str | None = None):
    _, smoke_run = parse_recipe_arg(arg, ("imagenet2012",))
    config = base_config()
    config.job = "linear_eval"
    config.batch_size = 4096
    config.total_epochs = 90.0
    config.log_every_steps = 100
    config.checkpoint_every_steps = 2000
    config.linear_augment = True
    datasets = sibling(__file__, "datasets")
    config.augment = datasets.crop_and_flip(crop_scale=(0.08, 1.0))
    datasets.imagenet(config)
    config.optimizer.name = "sgd"
    config.optimizer.nesterov = True
    config.optimizer.learning_rate = 0.1
    config.optimizer.lr_scaling = "linear"
    config.optimizer.momentum = 0.9
    config.optimizer.weight_decay = 0.0
    config.optimizer.schedule = "cosine"
    config.optimizer.warmup_epochs = 0.0
    return smoke(config) if smoke_run else config
