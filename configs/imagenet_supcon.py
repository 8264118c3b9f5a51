"""SupCon (or SimCLR) on ImageNet with ResNet-50.

    configs/imagenet_supcon.py[:supcon|simclr|moco_v2|supcon_queue][,smoke]

supcon, as in the SupCon paper (Khosla et al. 2020, Sec. 4 and Appendix): batch 6144, LARS,
T=0.1, 350 epochs, cosine after 10 warm-up epochs, MLP head 2048 -> 128, RandAugment (N=2, M=9)
in place of AutoAugment, plus flips. The paper reports 78.7 top-1 for ResNet-50 (AutoAugment);
that is the target. Learning rate: LARS with 0.3 x batch/256 (7.2 at 6144), weight decay 1e-6;
the paper tunes it, so check it before a full run.

simclr, as in SimCLR (Chen et al. 2020, Sec. B.1 and Fig. 9): batch 4096, LARS with lr 0.075 x
sqrt(batch) (4.8), weight decay 1e-6, T=0.1, 100 epochs, 10 warm-up epochs, MLP head 2048 -> 128,
SimCLR augmentation (crop (0.08, 1), jitter strength 1.0 p=0.8, grayscale 0.2, blur 0.5).
Target: about 64.5 top-1 (Fig. 9, 100 epochs at batch 4096).

moco_v2, as MoCo v2 (Chen, Fan, Girshick and He 2020, "Improved Baselines with Momentum
Contrastive Learning", Sec. 3 and Table 1): batch 256, SGD lr 0.03, momentum 0.9, weight decay
1e-4, cosine, 200 epochs, no warm-up, T=0.2, a queue of 65,536 keys from a momentum encoder
(m=0.999), MLP head 2048 -> 128, crop (0.2, 1), jitter (0.4, 0.4, 0.4, 0.1) p=0.8, grayscale 0.2,
blur 0.5. Target: 67.5 top-1 (linear evaluation, 200 epochs). Differences from the paper: the
first view's queries are contrasted with both views' keys of the whole batch as well as with the
queue (MoCo uses the queue alone as negatives), weight decay skips biases and BatchNorm, and
BatchNorm statistics are those of the global batch (MoCo shuffles BN across GPUs instead).

supcon_queue: the same, with SupCon's positives (every key and queue entry of the anchor's
class). No paper reports this exact combination; it is what the queue and momentum encoder are
for: SupCon's many positives and negatives at batch 256 on one 8-GPU host.

Needs ImageNet prepared for tfds (`tfds build imagenet2012 --data_dir=DIR`, then
`--config.data.tfds_data_dir=DIR`); JPEGs are decoded and cropped per view on the host. Evaluate
with configs/imagenet_linear.py.
"""

from jax_supcon.config import augment_config, base_config, parse_recipe_arg, sibling, smoke


def get_config(arg: str | None = None):
    method, smoke_run = parse_recipe_arg(arg, ("supcon", "simclr", "moco_v2", "supcon_queue"))
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
    # supcon and simclr follow Google's TensorFlow code, whose ResNet starts each residual branch's
    # last BatchNorm scale at zero; moco_v2 follows torchvision's default (one). The run stops if
    # its projections collapse (README, Training health).
    config.model.zero_init_residual = method in ("supcon", "simclr")
    config.loss.name = "simclr" if method in ("simclr", "moco_v2") else "supcon"
    config.loss.temperature = 0.1
    config.optimizer.name = "lars"
    config.optimizer.momentum = 0.9
    config.optimizer.weight_decay = 1e-6
    config.optimizer.schedule = "cosine"
    config.optimizer.warmup_epochs = 10.0
    if method in ("moco_v2", "supcon_queue"):
        config.batch_size = 256
        config.total_epochs = 200.0
        config.loss.temperature = 0.2
        config.loss.contrast_mode = "one"  # one view's queries against both views' keys
        config.loss.queue_size = 65536
        config.loss.queue_views = "one"  # one key per example, as MoCo enqueues its keys
        config.model.momentum = 0.999
        config.augment = augment_config(
            "simclr", crop_scale=(0.2, 1.0), brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1
        )
        config.optimizer.name = "sgd"
        config.optimizer.learning_rate = 0.03
        config.optimizer.weight_decay = 1e-4
        config.optimizer.warmup_epochs = 0.0
    elif method == "supcon":
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
