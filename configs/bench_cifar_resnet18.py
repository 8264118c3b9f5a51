"""The step the CPU comparison times: SupCon, ResNet-18 (CIFAR stem, width 1), 64 images x 2 views
of 32x32, fp32, SGD with momentum, synthetic data; `benchmarks/torch_supcon_step.py` is the same
step in PyTorch (the SupContrast reference's ResNet-18 and loss).

    python -m jax_supcon.bench step --config=configs/bench_cifar_resnet18.py --steps=20

The augmentation recipe is `none` (normalisation only), because the PyTorch side gets its views
ready-made from its data loader; `--config.augment.recipe=supcon_cifar` adds the on-device recipe.
"""

from jax_supcon.config import augment_config, base_config


def get_config():
    config = base_config()
    config.job = "pretrain"
    config.data.name = "synthetic"
    config.data.image_size = 32
    config.data.num_classes = 10
    config.batch_size = 64
    config.total_steps = 1000
    config.model.name = "resnet18"
    config.model.stem = "cifar"
    config.model.width = 1.0
    config.model.proj_dim = 128
    config.model.dtype = "float32"
    config.loss.name = "supcon"
    config.loss.temperature = 0.1
    config.augment = augment_config("none")
    config.online_probe = False  # the PyTorch reference step has no probe
    config.optimizer.name = "sgd"
    config.optimizer.learning_rate = 0.05
    config.optimizer.momentum = 0.9
    config.optimizer.weight_decay = 1e-4
    config.optimizer.schedule = "constant"
    config.optimizer.warmup_steps = 0
    return config
