"""Linear evaluation on CIFAR-10/100 as in SupContrast's main_linear.py: the frozen stage-1 encoder,
a linear classifier trained with SGD momentum 0.9, lr 5, no weight decay, batch 512, cosine, 100
epochs, on random crops (0.2, 1) and flips; reports test top-1 (targets: see configs/cifar_supcon.py).

    jax-supcon --config=configs/cifar_linear.py[:cifar10|cifar100][,smoke] --workdir=DIR \
        --config.pretrained_workdir=STAGE1_DIR
"""

from jax_supcon.config import base_config, parse_recipe_arg, sibling, smoke


def get_config(arg: str | None = None):
    dataset, smoke_run = parse_recipe_arg(arg, ("cifar10", "cifar100"))
    config = base_config()
    config.job = "linear_eval"
    config.batch_size = 512
    config.eval_batch_size = 1000
    config.total_epochs = 100.0
    config.log_every_steps = 100
    config.checkpoint_every_steps = 2000
    config.checkpoint = "latest"
    config.linear_augment = True
    datasets = sibling(__file__, "datasets")
    config.augment = datasets.crop_and_flip(crop_scale=(0.2, 1.0))
    datasets.cifar(config, dataset)
    config.optimizer.name = "sgd"
    config.optimizer.learning_rate = 5.0
    config.optimizer.momentum = 0.9
    config.optimizer.weight_decay = 0.0
    config.optimizer.schedule = "cosine"
    config.optimizer.warmup_epochs = 0.0
    return smoke(config) if smoke_run else config
