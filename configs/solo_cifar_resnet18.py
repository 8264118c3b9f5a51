"""solo-learn's ResNet-18 CIFAR-10 settings (da Costa et al. 2022, github.com/vturrisi/solo-learn,
scripts/pretrain/cifar/{supcon,simclr}.yaml): ResNet-18 with the CIFAR stem, MLP head
2048 -> 256, batch 256, LARS (eta 0.02, biases and norms excluded), lr 0.4 x batch/256, weight
decay 1e-5, 10 warm-up epochs then cosine, 1000 epochs; crops (0.08, 1), flip, grayscale 0.2.

    configs/solo_cifar_resnet18.py[:supcon|simclr][,smoke]

Targets (solo-learn's reported online linear top-1 on CIFAR-10): SupCon 93.82 (T=0.1, jitter
(0.4, 0.4, 0.2, 0.1) p=0.8), SimCLR 90.74 (T=0.2, jitter (0.8, 0.8, 0.8, 0.2) p=0.8).
Evaluate with configs/cifar_linear.py.
"""

from jax_supcon.config import augment_config, base_config, parse_recipe_arg, sibling, smoke


def get_config(arg: str | None = None):
    method, smoke_run = parse_recipe_arg(arg, ("supcon", "simclr"))
    config = base_config()
    config.job = "pretrain"
    config.batch_size = 256
    config.eval_batch_size = 1000
    config.total_epochs = 1000.0
    config.log_every_steps = 100
    config.checkpoint_every_steps = 5000
    config.eval_every_steps = 20_000
    config.model.name = "resnet18"
    config.model.stem = "cifar"
    config.model.head = "mlp"
    config.model.hidden_dim = 2048
    config.model.proj_dim = 256
    config.loss.name = method
    config.loss.temperature = 0.1 if method == "supcon" else 0.2
    jitter = (0.4, 0.4, 0.2, 0.1) if method == "supcon" else (0.8, 0.8, 0.8, 0.2)
    config.augment = augment_config(
        "supcon_cifar",
        crop_scale=(0.08, 1.0),
        brightness=jitter[0],
        contrast=jitter[1],
        saturation=jitter[2],
        hue=jitter[3],
    )
    sibling(__file__, "datasets").cifar(config, "cifar10")
    config.optimizer.name = "lars"
    config.optimizer.learning_rate = 0.4
    config.optimizer.lr_scaling = "linear"
    config.optimizer.lars_trust_coefficient = 0.02
    config.optimizer.momentum = 0.9
    config.optimizer.weight_decay = 1e-5
    config.optimizer.schedule = "cosine"
    config.optimizer.warmup_epochs = 10.0
    return smoke(config) if smoke_run else config
