"""Eight fake CPU devices for every test, and the platform setup the entry points apply (both
before JAX initialises its backend). A 1-device run in the same process uses a mesh over
`jax.devices()[:1]`.
"""

import os

os.environ.setdefault("JAX_NUM_CPU_DEVICES", "8")

import json  # noqa: E402

import pytest  # noqa: E402

from jax_supcon import platform  # noqa: E402

platform.configure()  # XLA:CPU flags and CPU convolutions, as the console scripts (no huge-page restart)


def tiny(config):
    """Shrink a recipe to a seconds-long run: 8x8 images, an 8-channel two-stage ResNet."""
    config.data.image_size = 8
    config.model.name = "resnet_tiny"
    config.model.width = 0.125
    config.model.proj_dim = 8
    config.batch_size = 16
    config.eval_batch_size = 64
    config.total_steps = 3
    config.log_every_steps = 1
    config.checkpoint_every_steps = 2
    config.optimizer.warmup_steps = 0
    config.eval_every_steps = 0  # validation and plots only in the tests about them
    config.plots = False
    config.knn_k = 20
    return config


# The command-line twin of `tiny` (a seconds-long digits pretraining run), for subprocess tests.
TINY_CLI = (
    "--config=configs/digits_supcon.py",
    "--config.model.name=resnet_tiny",
    "--config.model.width=0.125",
    "--config.model.proj_dim=8",
    "--config.data.image_size=8",
    "--config.batch_size=16",
    "--config.eval_batch_size=64",
    "--config.optimizer.warmup_steps=0",
    "--config.eval_every_steps=0",
    "--config.plots=False",
)


@pytest.fixture
def pretrain_config():
    from configs import digits_supcon

    return tiny(digits_supcon.get_config())


@pytest.fixture
def linear_config():
    from configs import digits_linear

    return tiny(digits_linear.get_config())


def read_metrics(workdir):
    with open(f"{workdir}/metrics.jsonl") as f:
        return [json.loads(line) for line in f]
