"""The default config every recipe in `configs/` starts from: one section per concern.

Optional values are `placeholder`s, so they can still be set from the command line
(`--config.total_epochs=10`). Each section's owner validates it (see `config/validate.py`).
"""

from __future__ import annotations

import ml_collections
from ml_collections.config_dict import placeholder

from jax_supcon.data.recipes import augment_config
from jax_supcon.report.tracking import wandb_config


def base_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.job = "pretrain"
    config.seed = 0
    config.batch_size = 256  # global, over all devices and processes
    config.eval_batch_size = 256
    config.total_steps = placeholder(int)  # one of total_steps / total_epochs
    config.total_epochs = placeholder(float)
    config.log_every_steps = 50
    config.checkpoint_every_steps = 1000
    config.keep_checkpoints = 2  # the latest N checkpoints kept
    config.keep_best = 1  # pretrain: and the N best by best_metric (jax_supcon.average can average them)
    config.eval_every_steps = 1000  # pretrain: kNN + retrieval validation (and at the end); 0: none
    # pretrain: checkpoint kept as "best"; "" for none; "auto": val/encoder/knn_top1, or with
    # held-out classes (data.train_classes) val/encoder/mean_average_precision_at_r
    config.best_metric = "auto"
    config.knn_k = 200
    config.knn_temperature = 0.1
    config.checkpoint = "latest"  # linear_eval / embed: "latest", "best" or a step of pretrained_workdir
    config.embed_split = "test"  # embed: which split to write
    config.plots = True  # embedding maps of the test split at the end of pretraining
    config.pretrained_workdir = placeholder(str)  # linear_eval, embed, finetune: stage-1 workdir to restore
    config.linear_augment = True  # linear_eval: train the classifier on augmented views
    config.label_smoothing = 0.0  # linear_eval, supervised: cross-entropy label smoothing
    config.ema_decay = 0.0  # > 0 (e.g. 0.999): keep an exponential moving average of the weights
    config.eval_with_ema = False  # evaluate (validation, test accuracy, plots) with the EMA weights
    # pretrain: a run whose projections collapse to one vector stops like a diverged one (exit code
    # 1; rule in train/health.py); False: it warns once, goes on, and its summary says so.
    config.stop_on_collapse = True
    # Read the test split at the end of the run (test_top1, test/...). `jax-supcon-sweep --select`
    # tunes with False, then starts the chosen cell's finished runs again with True: they only
    # evaluate the test split.
    config.evaluate_test = True
    config.online_probe = True  # pretrain: a linear classifier on stop-gradient features, logged as probe_top1
    config.pretrained_ema = False  # linear_eval / embed: restore the stage-1 run's EMA weights of the encoder
    config.precompute_features = False  # linear_eval without linear_augment: features computed once, then reused

    config.data = ml_collections.ConfigDict()
    config.data.name = "digits"  # digits, synthetic, folder:PATH or a tfds name (cifar10, imagenet2012, ...)
    config.data.image_size = 32  # training and evaluation views are image_size x image_size
    config.data.train_split = "train"  # tfds split (or folder sub-directory) to train on
    config.data.eval_split = "test"  # ... and to evaluate on (imagenet2012: "validation")
    config.data.tfds_data_dir = placeholder(str)  # None: tfds's default (~/tensorflow_datasets)
    config.data.num_classes = placeholder(int)  # only where the source does not say (synthetic: 10)
    config.data.num_train_examples = placeholder(int)  # only where the metadata lacks it (synthetic: 4096)
    config.data.num_eval_examples = placeholder(int)  # (synthetic: 512)
    config.data.shuffle_buffer = 50_000  # tfds: records in the shuffle buffer (others shuffle exactly)
    # Classes training may see: "0-4", "0,2,4,6,8", "first_half", "second_half"; "" all. The others
    # are held out: validation and embed then measure retrieval on them (see config.eval).
    config.data.train_classes = ""
    # Semi-supervised protocols: train on this class-balanced, fixed fraction of the training
    # labels (finetune, linear_eval, supervised; 1: all). See sources.label_fraction_subset.
    config.data.label_fraction = 1.0
    # Small-data experiments: every job trains on this class-balanced, fixed fraction of the
    # training images (1: all). See sources.train_fraction_subset.
    config.data.train_fraction = 1.0
    # Label-noise experiments: this fraction of each training class gets a wrong label, drawn per
    # seed (0: clean). Evaluation labels are never touched. See sources.noisy_labels.
    config.data.label_noise = 0.0
    # Validation without the test split: this fixed, class-stratified fraction of the training
    # split (the same images for every seed and job) is kept out of training; validation, the
    # best checkpoint and `jax-supcon-sweep --select` read it, and the test split is read once, at
    # the end of a run. 0: validation reads the test split. See sources.split_off_validation.
    config.data.validation_fraction = 0.0
    config.data.samples_per_class = 0  # > 0: class-balanced batches of this many examples per class
    config.data.eval_crop_fraction = 0.875  # varying-size images: centre crop of image_size / fraction
    config.data.verify_files = True  # folder: decode-check every file once at start
    config.data.skip_corrupt = False  # folder: leave out (and count) unreadable files instead of failing
    config.data.prefetch_to_device = 2  # batches copied to the devices ahead of the step

    config.eval = ml_collections.ConfigDict()
    config.eval.recall_at = (1, 2, 4, 8)  # Recall@K (CMC@K) reported by validation and embed
    # Open-set retrieval (classes held out): None: every held-out evaluation image is a query and
    # the others its gallery (self excluded); f in (0, 1): a fixed per-class fraction f of the
    # images is the gallery and the rest are the queries (Catalyst's query/gallery protocol).
    config.eval.gallery_fraction = placeholder(float)

    config.model = ml_collections.ConfigDict()
    config.model.name = "resnet18"
    config.model.stem = "cifar"
    config.model.width = 1.0
    config.model.head = "mlp"
    config.model.proj_dim = 128
    config.model.hidden_dim = placeholder(int)  # None: the encoder's feature width
    config.model.dtype = "float32"
    # Recompute each residual block in the backward pass instead of keeping its activations: for
    # batches whose activations do not fit, at about one more forward pass of compute.
    config.model.remat = False
    # ResNets: start the last BatchNorm scale of every residual branch at 0 (Goyal et al. 2017; Google's
    # TensorFlow SimCLR/SupCon code) instead of 1 (SupContrast, torchvision). At 0 SupCon at T 0.1
    # collapsed on some digits seeds: see README, Training health.
    config.model.zero_init_residual = False
    # A torchvision/timm ResNet state dict (.safetensors; .pth with torch) the encoder starts
    # from (pretrain, supervised); "" random. See jax_supcon/models/weights.py.
    config.model.init_from = ""
    config.model.momentum = 0.0  # > 0: a momentum encoder (MoCo) computes the keys and the queue's entries
    # Vision Transformers (model.name vit_*): patch size (16 at 224 px; 4 or 2 for 32 px and
    # smaller), pooling (cls: the class token; gap: mean of the patch tokens), stochastic depth of
    # the last block (linear from 0), dropout, head count (0: the architecture's), and nn.scan over
    # the blocks (one compiled block: faster compiles for deep models). pos_image_size: the image
    # size the position embeddings are made for (0: data.image_size, recorded by the run); other
    # sizes interpolate them.
    config.model.patch_size = 16
    config.model.pool = "cls"
    config.model.drop_path = 0.0
    config.model.dropout = 0.0
    config.model.num_heads = 0
    config.model.scan = False
    config.model.pos_image_size = 0

    config.loss = ml_collections.ConfigDict()
    config.loss.name = "supcon"
    config.loss.temperature = 0.1
    config.loss.base_temperature = placeholder(float)
    config.loss.contrast_mode = "all"
    config.loss.num_views = 2
    config.loss.loss_type = "out"  # supcon/simclr: "out" (L_out) or "in" (L_in)
    config.loss.denominator = "all"  # supcon/simclr: "all", "one_positive", "negatives_only"
    config.loss.chunk_size = placeholder(int)  # anchors per row block; None: one block
    config.loss.margin = placeholder(float)  # pair (default 1.0) / triplet (0.2) / multi_similarity mining (0.1)
    config.loss.mining = "batch_hard"  # triplet: "batch_hard", "batch_all" or "semi_hard"
    config.loss.ms_alpha = 2.0  # multi_similarity: positive scale (Wang et al. 2019)
    config.loss.ms_beta = 50.0  # multi_similarity: negative scale
    config.loss.ms_base = 0.5  # multi_similarity: similarity offset lambda
    config.loss.queue_size = 0  # past features contrasted with each batch (0: none); see train/queue.py
    config.loss.queue_views = "all"  # what a step enqueues: "all" views or "one" per example

    config.augment = augment_config()

    config.optimizer = ml_collections.ConfigDict()
    config.optimizer.name = "sgd"
    config.optimizer.learning_rate = 0.5  # base rate; the peak is this times the lr_scaling factor
    config.optimizer.lars_trust_coefficient = 0.001  # LARS eta (SimCLR, SupCon: 0.001; solo-learn: 0.02)
    config.optimizer.lr_scaling = "none"  # "linear": lr x batch/256; "sqrt": lr x sqrt(batch) (SimCLR)
    config.optimizer.momentum = 0.9
    config.optimizer.nesterov = False
    config.optimizer.weight_decay = 1e-4
    config.optimizer.schedule = "cosine"  # "cosine", "step" or "constant", after the warmup
    config.optimizer.decay_boundaries = (0.7, 0.8, 0.9)  # step: fractions of the run (SupContrast: 700,800,900/1000)
    config.optimizer.decay_rate = 0.1  # step: the learning rate is multiplied by this at each boundary
    config.optimizer.encoder_lr_multiplier = 1.0  # finetune: the encoder's learning rate over the classifier's
    # finetune/supervised with a ViT: layer-wise learning-rate decay, block i of d at
    # layer_decay ** (d - i) times the classifier's rate, the embeddings at layer_decay ** (d + 1); 1: off
    config.optimizer.layer_decay = 1.0
    config.optimizer.clip_grad_norm = placeholder(float)  # clip gradients to this global norm; None: no clipping
    config.optimizer.warmup_steps = placeholder(int)  # or warmup_epochs
    config.optimizer.warmup_epochs = 0.0

    # Weights & Biases (optional: pip install 'jax_supcon[wandb]'): empty project = off. See
    # report/tracking.py; may change between restarts.
    config.wandb = wandb_config()
    return config
