"""SupCon (or SimCLR) with a ViT-S on CIFAR-10/100 at 32 px, on 4 x 4 patches.

    configs/cifar_vit.py[:cifar10|cifar100][,simclr][,smoke]

ViT-S with patch 4 (64 patch tokens and a class token), stochastic depth 0.1, bf16 compute;
SupCon T=0.1 (SimCLR: T=0.5) on the SupCon paper's CIFAR views (crop (0.2, 1), flip, jitter 0.4
p=0.8, grayscale 0.2); batch 1024, AdamW with MoCo v3's ViT settings scaled to the batch (1.5e-4 x
batch/256 = 6e-4, weight decay 0.1 on kernels only), 40 warm-up epochs, cosine, 500 epochs,
gradients clipped at norm 1. No paper reports SupCon with a ViT on CIFAR: compare with the
ResNet-50 recipe (configs/cifar_supcon.py: 96.0 / 76.5 top-1) at the same budget. Evaluate with
configs/cifar_linear.py.
"""

from jax_supcon.config import augment_config, base_config, parse_recipe_arg, sibling, smoke, split_recipe_switches


def get_config(arg: str | None = None):
    rest, switches = split_recipe_switches(arg, ("simclr",))
    simclr = "simclr" in switches
    dataset, smoke_run = parse_recipe_arg(rest, ("cifar10", "cifar100"))
    config = base_config()
    config.job = "pretrain"
    config.batch_size = 1024
    config.total_epochs = 500.0
    config.log_every_steps = 50
    config.checkpoint_every_steps = 1000
    config.eval_every_steps = 5000
    config.model.name = "vit_small"
    config.model.patch_size = 4
    config.model.pool = "cls"
    config.model.drop_path = 0.1
    config.model.dtype = "bfloat16"
    config.model.head = "mlp"
    config.model.proj_dim = 128
    config.loss.name = "simclr" if simclr else "supcon"
    config.loss.temperature = 0.5 if simclr else 0.1
    config.augment = augment_config("supcon_cifar")
    sibling(__file__, "imagenet_vit").moco_v3_optimizer(config)
    sibling(__file__, "datasets").cifar(config, dataset)
    return smoke(config) if smoke_run else config
