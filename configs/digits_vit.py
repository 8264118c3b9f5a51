"""SupCon pretraining of a ViT-Tiny on scikit-learn's digits: the demo's budget (batch 256, 150
steps, the same views) with a Vision Transformer in place of the ResNet-18.

ViT-Tiny (width 192, 12 blocks, 3 heads) on 4 x 4 patches of the 16 px digits (16 patch tokens
and a class token), AdamW (lr 1e-3, weight decay 0.05 on kernels only), 20 warm-up steps, cosine.
Evaluate it like the demo's stage 1: configs/digits_linear.py with
`--config.pretrained_workdir=DIR`. `:simclr` trains without labels (NT-Xent, T=0.5).
"""

from jax_supcon.config import sibling


def get_config(variant: str = "supcon"):
    config = sibling(__file__, "digits_supcon").get_config(variant)
    config.total_steps = 150  # the budget the README's ViT figures were measured at
    config.eval_every_steps = 50
    config.checkpoint_every_steps = 50
    if variant == "supcon":
        config.loss.temperature = 0.1
    config.model.name = "vit_tiny"
    config.model.patch_size = 4
    config.model.pool = "cls"
    config.optimizer.name = "adamw"
    config.optimizer.learning_rate = 1e-3
    config.optimizer.weight_decay = 0.05
    config.optimizer.clip_grad_norm = 1.0
    return config
