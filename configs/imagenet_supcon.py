"""SupCon (or SimCLR) on ImageNet with ResNet-50.

    configs/imagenet_supcon.py[:supcon|simclr][,smoke]

supcon, as in the SupCon paper (Khosla et al. 2020, Sec. 4 and Appendix): batch 6144, LARS,
T=0.1, 350 epochs, cosine after 10 warm-up epochs, MLP head 2048 -> 128, RandAugment (N=2, M=9)
in place of AutoAugment, plus flips. The paper reports 78.7 top-1 for ResNet-50 (AutoAugment);
that is the target. Learning rate: LARS with 0.3 x batch/256 (7.2 at 6144), weight decay 1e-6;
the paper tunes it, so check it before a full run.

simclr, as in SimCLR (Chen et al. 2020, Sec. B.1 and Fig. 9): batch 4096, LARS with lr 0.075 x
sqrt(batch) (4.8), weight decay 1e-6, T=0.1, 100 epochs, 10 warm-up epochs, MLP head 2048 -> 128,
SimCLR augmentation (crop (0.08, 1), jitter strength 1.0 p=0.8, grayscale 0.2, blur 0.5).
Target: about 64.5 top-1 (Fig. 9, 100 epochs at batch 4096).

Needs ImageNet prepared for tfds (`tfds build imagenet2012 --data_dir=DIR`, then
`--config.data.tfds_data_dir=DIR`); JPEGs are decoded and cropped per view on the host. Evaluate
with configs/imagenet_linear.py.
"""

from jax_supcon.config import augment_config, base_config, parse_recipe_arg, sibling, smoke


def get_config(arg: str | None = None):
    method, smoke_run = parse_recipe_arg(arg, ("supcon", "simclr"))
    config = base_config()
    config.job = "pretrain"
    config.log_every_steps = 100
    config.checkpoint_every_steps = 2000
    config.eval_every_steps = 20_000
    config.knn_k = 200
    config.model.name = "resnet50"
    config.model.stem = "imagenet"
    config.model.head = "mlp"
    config.model.proj_dim = 128
    config.model.dtype = "bfloat16"
    config.loss.name = method
    config.loss.temperature = 0.1
    config.optimizer.name = "lars"
    config.optimizer.momentum = 0.9
    config.optimizer.weight_decay = 1e-6
    config.optimizer.schedule = "cosine"
    config.optimizer.warmup_epochs = 10.0
    if method == "supcon":
        config.batch_size = 6144
        config.total_epochs = 350.0
        config.augment = augment_config("randaugment", crop_scale=(0.08, 1.0))
        config.optimizer.learning_rate = 0.3
        config.optimizer.lr_scaling = "linear"
    else:
        config.batch_size = 4096
        config.total_epochs = 100.0
        config.augment = augment_config("simclr")
        config.optimizer.learning_rate = 0.075
        config.optimizer.lr_scaling = "sqrt"
    sibling(__file__, "datasets").imagenet(config)
    return smoke(config) if smoke_run else config
