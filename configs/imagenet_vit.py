"""Contrastive ViT pretraining on ImageNet without a predictor or momentum encoder: the SimCLR
baseline of MoCo v3 (Chen, Xie and He 2021, "An Empirical Study of Training Self-Supervised
Vision Transformers").

    configs/imagenet_vit.py[:vit_small|vit_base][,supcon][,smoke]

ViT-S/16 (default) or ViT-B/16 at 224 px, class-token pooling, bf16 compute; NT-Xent (SimCLR) on
two views, T=0.2; an MLP head with one 4096-wide hidden layer and a 256-d output (MoCo v3's
projector widths; its projector has three layers); AdamW, lr 1.5e-4 x batch/256 (2.4e-3 at 4096),
weight decay 0.1 on kernels only (not on biases, norms, position embeddings or the class token),
300 epochs with 40 warm-up epochs, cosine, batch 4096, gradients clipped at norm 1; BYOL-style
views (crop (0.08, 1), jitter, grayscale, blur, solarize). These are MoCo v3's ViT settings (its
CONFIG.md: `--optimizer=adamw --lr=1.5e-4 --weight-decay=.1 --epochs=300 --warmup-epochs=40
--moco-t=.2`, batch 4096). Target: SimCLR with ViT-S/16 69.0 and ViT-B/16 73.9 linear-probing
top-1 after 300 epochs (MoCo v3, Table 4; MoCo v3 itself: 73.2 / 76.7). Differences: MoCo v3
freezes a random patch projection (`--stop-grad-conv1`) for stability; here it trains, with the
warm-up and gradient clipping to keep it stable.

`,supcon` trains with SupCon's labels (T=0.1) instead: no published ViT target; compare it with
the ResNet-50 recipe (configs/imagenet_supcon.py, 78.7). Evaluate with configs/imagenet_linear.py
(the encoder's 384- or 768-wide class token). Needs ImageNet prepared for tfds, as the ResNet
recipes do.
"""

from jax_supcon.config import augment_config, base_config, parse_recipe_arg, sibling, smoke, split_recipe_switches


def get_config(arg: str | None = None):
    rest, switches = split_recipe_switches(arg, ("supcon",))
    supcon = "supcon" in switches
    size, smoke_run = parse_recipe_arg(rest, ("vit_small", "vit_base"))
    config = base_config()
    config.job = "pretrain"
    config.log_every_steps = 100
    config.checkpoint_every_steps = 2000
    config.eval_every_steps = 20_000
    config.knn_k = 200
    config.batch_size = 4096
    config.total_epochs = 300.0
    config.model.name = size
    config.model.patch_size = 16
    config.model.pool = "cls"
    config.model.dtype = "bfloat16"
    config.model.head = "mlp"
    config.model.hidden_dim = 4096
    config.model.proj_dim = 256
    config.loss.name = "supcon" if supcon else "simclr"
    config.loss.temperature = 0.1 if supcon else 0.2
    config.augment = augment_config("byol")
    moco_v3_optimizer(config)
    sibling(__file__, "datasets").imagenet(config)
    return smoke(config) if smoke_run else config


def moco_v3_optimizer(config):
    """MoCo v3's ViT optimisation (also the CIFAR ViT recipe's): AdamW 1.5e-4 x batch/256, weight
    decay 0.1 (kernels only), 40 warm-up epochs, cosine, gradients clipped at norm 1."""
    config.optimizer.name = "adamw"
    config.optimizer.learning_rate = 1.5e-4
    config.optimizer.lr_scaling = "linear"
    config.optimizer.weight_decay = 0.1
    config.optimizer.schedule = "cosine"
    config.optimizer.warmup_epochs = 40.0
    config.optimizer.clip_grad_norm = 1.0
    return config
