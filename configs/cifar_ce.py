"""The cross-entropy baseline on CIFAR-10/100 as in SupContrast's main_ce.py: ResNet-50 (CIFAR
stem) and a linear classifier trained end to end, batch 1024, SGD momentum 0.9, lr 0.8, weight
decay 1e-4, 10 warm-up epochs then cosine, 500 epochs, random crops (0.2, 1) and flips.

    configs/cifar_ce.py[:cifar10|cifar100][,smoke]

Targets (test top-1, SupContrast's README): 95.0 (CIFAR-10) and 75.3 (CIFAR-100).
"""

from jax_supcon.config import base_config, parse_recipe_arg, sibling, smoke


def get_config(arg: str | None = None):
    dataset, smoke_run = parse_recipe_arg(arg, ("cifar10", "cifar100"))
    config = base_config()
    config.job = "supervised"
    config.batch_size = 1024
    config.eval_batch_size = 1000
    config.total_epochs = 500.0
    config.log_every_steps = 100
    config.checkpoint_every_steps = 2000
    config.model.name = "resnet50"
    config.model.stem = "cifar"
    config.label_smoothing = 0.0
    datasets = sibling(__file__, "datasets")
    config.augment = datasets.crop_and_flip(crop_scale=(0.2, 1.0))
    datasets.cifar(config, dataset)
    config.optimizer.name = "sgd"
    config.optimizer.learning_rate = 0.8
    config.optimizer.momentum = 0.9
    config.optimizer.weight_decay = 1e-4
    config.optimizer.schedule = "cosine"
    config.optimizer.warmup_epochs = 10.0
    return smoke(config) if smoke_run else config
