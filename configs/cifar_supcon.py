"""SupCon (or SimCLR) on CIFAR-10/100 as in the PyTorch reference, SupContrast (Khosla et al. 2020,
github.com/HobbitLong/SupContrast): ResNet-50 with the CIFAR stem, MLP head to 128, batch 1024,
SGD momentum 0.9, lr 0.5, weight decay 1e-4, 10 warm-up epochs then cosine, 1000 epochs, its
augmentation (crop (0.2, 1), flip, jitter (0.4, 0.4, 0.4, 0.1) p=0.8, grayscale 0.2).

    configs/cifar_supcon.py[:cifar10|cifar100][,simclr][,smoke]

Targets (linear evaluation with configs/cifar_linear.py, top-1): SupCon 96.0 (CIFAR-10) and 76.5
(CIFAR-100); `simclr` (T=0.5, no labels) 93.6 and 70.7. `smoke` shrinks it to two steps on
synthetic data (see `jax_supcon.config.smoke`).
"""

from jax_supcon.config import augment_config, base_config, sibling, smoke


def get_config(arg: str | None = None):
    parts = [part for part in (arg or "").split(",") if part]
    allowed = {"cifar10", "cifar100", "simclr", "smoke"}
    if set(parts) - allowed or {"cifar10", "cifar100"} <= set(parts):
        raise ValueError(f"config argument {arg!r}; allowed: cifar10 or cifar100, then optionally simclr and smoke")
    dataset = "cifar100" if "cifar100" in parts else "cifar10"
    method = "simclr" if "simclr" in parts else "supcon"
    config = base_config()
    config.job = "pretrain"
    config.batch_size = 1024
    config.eval_batch_size = 1024
    config.total_epochs = 1000.0
    config.log_every_steps = 100
    config.checkpoint_every_steps = 2000
    config.eval_every_steps = 10_000
    config.model.name = "resnet50"
    config.model.stem = "cifar"
    config.model.head = "mlp"
    config.model.proj_dim = 128
    config.loss.name = method
    config.loss.temperature = 0.1 if method == "supcon" else 0.5
    config.augment = augment_config("supcon_cifar")
    sibling(__file__, "datasets").cifar(config, dataset)
    config.optimizer.name = "sgd"
    config.optimizer.learning_rate = 0.5
    config.optimizer.momentum = 0.9
    config.optimizer.weight_decay = 1e-4
    config.optimizer.schedule = "cosine"
    config.optimizer.warmup_epochs = 10.0
    return smoke(config) if "smoke" in parts else config
