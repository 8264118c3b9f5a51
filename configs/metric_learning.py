"""Deep metric learning on unseen classes, the standard protocol (Musgrave et al. 2020, "A Metric
Learning Reality Check"): train on some classes, evaluate retrieval on the others (MAP@R,
R-precision, Recall@K; best checkpoint by MAP@R).

- `:cub`  CUB-200-2011 (tfds `caltech_birds2011`): all images of classes 1-100 train, all of
  101-200 test (tfds's own train/test image split is merged, as the protocol asks).
- `:cars` Cars-196 (tfds `cars196`): classes 1-98 train, 99-196 test, likewise.
- `:sop`  Stanford Online Products (folder layout, the official 11,318 / 11,316 class split):
  `PATH/train/<class_id>/*.JPG` from Ebay_train.txt and `PATH/test/<class_id>/*.JPG` from
  Ebay_test.txt, class ids zero-padded to five digits so they sort as numbers (the folder source
  numbers classes by the sorted union of both splits' folders; 00001-11318 are the training ones).
  Set `--config.data.name=folder:PATH`.

ResNet-50 (ImageNet stem) at 224 px, a linear 512-d embedding head, SupCon (T=0.1) on
class-balanced batches of 32 classes x 4 images (SOP: 64 x 2), crops and flips only. Switch the
loss with `--config.loss.name=multi_similarity` (or `triplet` with `loss.mining=semi_hard`).

Published targets start from ImageNet weights: pass a torchvision/timm ResNet-50 state dict
with `--config.model.init_from=FILE` (README, "Starting from pretrained weights"); from random
weights expect far less. Multi-Similarity (Wang et al. 2019, BN-Inception, ImageNet-pretrained, 512-d) reports
Recall@1 65.7 on CUB, 84.1 on Cars and 78.2 on SOP.

Append `,smoke` for a seconds-long run on synthetic data with the same protocol (half the
classes held out, class-balanced batches, open-set validation).
"""

from jax_supcon.config import DATASET_NORMALIZATION, base_config, parse_recipe_arg, sibling, smoke

DATASETS = ("cub", "cars", "sop")


def get_config(arg: str | None = None):
    dataset, smoke_run = parse_recipe_arg(arg, DATASETS)
    config = base_config()
    config.job = "pretrain"
    config.data.name = {"cub": "caltech_birds2011", "cars": "cars196", "sop": "folder:SOP_ROOT"}[dataset]
    config.data.train_split = "train" if dataset == "sop" else "train+test"
    config.data.eval_split = "test" if dataset == "sop" else "train+test"
    config.data.train_classes = "0-11317" if dataset == "sop" else "first_half"
    config.data.image_size = 224
    config.data.samples_per_class = 2 if dataset == "sop" else 4
    config.batch_size = 128
    config.eval_batch_size = 512
    config.total_steps = 20_000 if dataset == "sop" else 6_000
    config.eval_every_steps = 2_000 if dataset == "sop" else 500
    config.checkpoint_every_steps = 500
    config.online_probe = False
    config.eval.recall_at = (1, 10, 100, 1000) if dataset == "sop" else (1, 2, 4, 8)
    config.model.name = "resnet50"
    config.model.stem = "imagenet"
    config.model.head = "linear"
    config.model.proj_dim = 512
    config.model.dtype = "bfloat16"
    config.loss.name = "supcon"
    config.loss.temperature = 0.1
    config.augment = sibling(__file__, "datasets").crop_and_flip(crop_scale=(0.16, 1.0))
    config.augment.mean, config.augment.std = DATASET_NORMALIZATION["imagenet2012"]
    config.optimizer.name = "adamw"
    config.optimizer.learning_rate = 1e-4
    config.optimizer.weight_decay = 1e-4
    config.optimizer.warmup_steps = 200
    if smoke_run:
        smoke(config)
        config.data.num_classes = 10
        config.data.train_classes = "first_half"
        config.data.samples_per_class = 4
        config.eval_every_steps = 2
        config.eval.recall_at = (1, 2, 4, 8)
    return config
